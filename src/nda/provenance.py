"""Patch-level provenance: *where* each training image explains a query (SPEC §1, per position).

NDA's score is a sum over query positions ℓ of per-position top-k weight sums. This module keeps
the positions apart instead of summing them:

    prov = explain(train, query, NDAConfig(patch_size=5))   # one query, every timestep
    prov.scores()                      # (N,) τ(x, n), the same numbers `NDAIndex.attribute` gives
    prov.query_heat(n)                 # (H, W): how much of each query pixel image n explains
    prov.train_heat(n)                 # (H, W): where in image n the matched patches lie
    prov.matches(y, x)                 # the training patches that explain query pixel (y, x)
    prov.steps[0].sparse_entries(ℓ)    # exact top-m (n, ℓ′, w) of query position ℓ at one step

How it is computed (memory bounded, by the engine the config selects):

1. For every (timestep, scale) step of the config, the engine's `position_step` gives the (L, N)
   per-position top-k weight sums and the (L,) softmax normaliser lse — the *same* numbers whose
   column sums are the scores (Σ_ℓ sums[ℓ, n] = τ_t(x, n)).
2. For a few training images only (the selected proponents, plus candidates for the sparse
   structure), the individual weights are recomputed as exp(logit − lse[ℓ]) in the engine's dtype,
   in chunks of (images × query positions) sized by the config's memory budget, and reduced on
   the fly: the top-k kept weights per (ℓ, n), their positions ℓ′, and their sum at each ℓ′.

The exact sparse structure (top-m kept weights per ℓ over *all* training images) needs no pass
over all images: an image's largest weight at ℓ is at most its top-k sum there, so once the m-th
best weight found at ℓ is ≥ every unvisited image's sum at ℓ, the list is exact. One extra round
over the images that fail that test is always enough (see `_sparse_candidates`).

Coordinates: positions are row-major, ℓ = i·W_out + j, on the (H_out, W_out) grid of the step's
patch size. The patch at position (i, j) covers pixels i − pad … i − pad + P − 1 (pad = ⌊(P−1)/2⌋),
so odd P centres it on pixel (i, j) and even P on the corner between (i, j) and (i+1, j+1). Heat
maps aggregated over steps are put on the (H, W) pixel grid: an even-P position spreads its value
equally over the 4 pixels around its centre, so every map still sums to the score.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .attribution import NDAIndex
from .config import NDAConfig
from .engines import Engine, Scale, Step, make_engine
from .errors import NDAError
from .images import ImageSet, check_compatible, load_images
from .patches import block_means, comparable, output_size, padding, unfold

__all__ = ["Match", "StepProvenance", "Provenance", "explain", "to_pixels", "position_of_pixel"]


# ----------------------------------------------------------------------------- geometry helpers
def to_pixels(grid_map: np.ndarray, H: int, W: int) -> np.ndarray:
    """Put a map over patch positions (..., H_out, W_out) on the pixel grid (..., H, W).

    Odd P: the grids coincide. Even P ((H−1)×(W−1) positions): each position's value is split
    equally over the 4 pixels around its centre. The total is preserved either way.
    """
    grid_map = np.asarray(grid_map, dtype=np.float64)
    ho, wo = grid_map.shape[-2:]
    if (ho, wo) == (H, W):
        return grid_map.copy()
    if (ho, wo) != (H - 1, W - 1):
        raise NDAError(f"a map over {ho}×{wo} positions does not belong to {H}×{W} images")
    out = np.zeros(grid_map.shape[:-2] + (H, W))
    q = grid_map / 4.0
    out[..., :-1, :-1] += q
    out[..., 1:, :-1] += q
    out[..., :-1, 1:] += q
    out[..., 1:, 1:] += q
    return out


def position_of_pixel(y: int, x: int, grid: tuple[int, int]) -> int:
    """The query position whose patch is centred on (odd P) or just below-right of (even P) pixel (y, x)."""
    ho, wo = grid
    return min(int(y), ho - 1) * wo + min(int(x), wo - 1)


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Match:
    """One matched training patch: query position → (training image n, training position).

    Attributes:
        n: training image index.
        t: timestep; patch, block: the step's scale (block 2 = the 2×2-block scale).
        query_pos, train_pos: (i, j) positions on the step's grid; the patch at (i, j) covers
            pixels (i − pad, j − pad) to (i − pad + patch − 1, j − pad + patch − 1).
        weight: the softmax weight w(ℓ → n, ℓ′) times the step's share of the final score
            (γ_t/T or (1−γ_t)/T when aggregated; γ_t or 1−γ_t at a single timestep).
    """

    n: int
    t: int
    patch: int
    block: int
    query_pos: tuple[int, int]
    train_pos: tuple[int, int]
    weight: float

    @property
    def train_box(self) -> tuple[int, int, int]:
        """(top, left, side) of the matched patch in training-image pixels (may hang over the border)."""
        pad = padding(self.patch)
        return self.train_pos[0] - pad, self.train_pos[1] - pad, self.patch


@dataclass
class StepProvenance:
    """Per-position detail of one query at one (timestep, scale) step.

    Attributes:
        t, scale, alpha_bar: the step.
        coef: the step's weight in the final score, γ_t/T (single scale) or (1−γ_t)/T (2×2 blocks):
            τ(x, n) = Σ_steps coef · sums[:, n].sum().
        grid: (H_out, W_out) positions.
        sums: (L, N) float64 from the engine: top-k weight sum of image n at query position ℓ.
        lse: (L,) float64 from the engine: the softmax normaliser at ℓ.
        selected: (S,) training indices with training-side detail.
        train_maps: (S, H_out, W_out) Σ_ℓ of the kept weights of each selected image at each ℓ′.
        match_pos, match_w: (S, L, r) the r largest kept weights of each selected image per ℓ and
            their training positions ℓ′ (−1 / 0 where fewer exist), largest first.
        sparse_n, sparse_pos, sparse_w: (L, m) the m largest kept weights per ℓ over all training
            images (image, position ℓ′, weight), largest first; −1 / 0 padded. None when m = 0.
        images_visited: how many training images had their weights recomputed.
    """

    t: int
    scale: Scale
    alpha_bar: float
    coef: float
    grid: tuple[int, int]
    sums: np.ndarray
    lse: np.ndarray
    selected: np.ndarray
    train_maps: np.ndarray
    match_pos: np.ndarray
    match_w: np.ndarray
    sparse_n: np.ndarray | None = None
    sparse_pos: np.ndarray | None = None
    sparse_w: np.ndarray | None = None
    images_visited: int = 0

    @property
    def pad(self) -> int:
        return padding(self.scale.patch)

    def tau(self) -> np.ndarray:
        """(N,) τ_t at this scale (not weighted by coef): Σ_ℓ sums[ℓ, n]."""
        return self.sums.sum(axis=0)

    def query_heat(self, n: int) -> np.ndarray:
        """(H_out, W_out): the top-k weight sum of image n at each query position; sums to τ_t(x, n)."""
        return self.sums[:, n].reshape(self.grid)

    def _sel(self, n: int) -> int:
        hits = np.flatnonzero(self.selected == n)
        if not hits.size:
            raise NDAError(
                f"training image {n} has no training-side detail; pass it in `images=` to explain()"
            )
        return int(hits[0])

    def train_heat(self, n: int) -> np.ndarray:
        """(H_out, W_out) over the training image: Σ_ℓ of the kept weights landing at each ℓ′."""
        return self.train_maps[self._sel(n)]

    def sparse_entries(self, pos: int) -> list[tuple[int, int, float]]:
        """The exact top-m (n, ℓ′, w) of query position ℓ = `pos` (kept weights only), largest first."""
        if self.sparse_n is None:
            raise NDAError("no sparse provenance was computed; call explain(..., m=8)")
        keep = self.sparse_n[pos] >= 0
        return [(int(n), int(p), float(w)) for n, p, w in
                zip(self.sparse_n[pos][keep], self.sparse_pos[pos][keep], self.sparse_w[pos][keep])]


@dataclass
class Provenance:
    """Patch-level provenance of one query against a training set (see the module docstring).

    Attributes:
        query: (C, H, W) float64 clean query.
        config: the `NDAConfig`; engine: the engine's name.
        steps: one `StepProvenance` per (timestep, scale), in `NDAIndex.steps` order.
        selected: training indices with training-side detail (heat maps, matches).
    """

    query: np.ndarray
    config: NDAConfig
    engine: str
    steps: list[StepProvenance]
    selected: np.ndarray
    names: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def timesteps(self) -> tuple[int, ...]:
        return tuple(self.config.timesteps)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.query.shape[1]), int(self.query.shape[2])

    def _steps(self, t: int | None) -> list[tuple[StepProvenance, float]]:
        """(step, factor): the steps of timestep t (None: all) and their weight in that view."""
        if t is None:
            return [(s, s.coef) for s in self.steps]
        if t not in self.timesteps:
            raise NDAError(f"timestep {t} is not one of the config's timesteps {list(self.timesteps)}")
        T = len(self.timesteps)
        return [(s, s.coef * T) for s in self.steps if s.t == t]

    def scores(self, t: int | None = None) -> np.ndarray:
        """(N,) τ(x, n) (t=None: γ-weighted mean over timesteps) or τ_t(x, n), γ-combined."""
        return sum(f * s.tau() for s, f in self._steps(t))

    def query_heat(self, n: int, t: int | None = None) -> np.ndarray:
        """(H, W): how much of each query pixel training image n explains; sums to `scores(t)[n]`."""
        H, W = self.image_size
        return sum(f * to_pixels(s.query_heat(n), H, W) for s, f in self._steps(t))

    def query_heat_all(self, t: int | None = None) -> np.ndarray:
        """(N, H, W): `query_heat` of every training image at once."""
        H, W = self.image_size
        return sum(f * to_pixels(s.sums.T.reshape(-1, *s.grid), H, W) for s, f in self._steps(t))

    def train_heat(self, n: int, t: int | None = None) -> np.ndarray:
        """(H, W) over training image n: where its matched (kept) patches lie, weighted; sums to
        `scores(t)[n]`. Only for the selected images."""
        H, W = self.image_size
        return sum(f * to_pixels(s.train_heat(n), H, W) for s, f in self._steps(t))

    def matches(self, y: int, x: int, t: int | None = None, *, images: Sequence[int] | None = None,
                m: int = 8) -> list[Match]:
        """The training patches that explain query pixel (y, x), largest weight first.

        Each step contributes the patches matched by its query position at (y, x) (see
        `position_of_pixel`). Uses the exact sparse structure (all images) when `images` is None,
        otherwise the selected images' top matches restricted to `images`.
        """
        H, W = self.image_size
        if not (0 <= y < H and 0 <= x < W):
            raise NDAError(f"pixel ({y}, {x}) is outside the {H}×{W} query")
        out: list[Match] = []
        for s, f in self._steps(t):
            pos = position_of_pixel(y, x, s.grid)
            qpos = divmod(pos, s.grid[1])
            if images is None:
                entries = s.sparse_entries(pos)
            else:
                entries = []
                for n in images:
                    j = s._sel(int(n))
                    for p, w in zip(s.match_pos[j, pos], s.match_w[j, pos]):
                        if p >= 0 and w > 0:
                            entries.append((int(n), int(p), float(w)))
            for n, p, w in entries:
                out.append(Match(n, s.t, s.scale.patch, s.scale.block, qpos, divmod(p, s.grid[1]), f * w))
        out.sort(key=lambda mt: (-mt.weight, mt.n, mt.t))
        return out[:m]


# ----------------------------------------------------------------------------- computation
def explain(train: Any, query: Any, config: NDAConfig | None = None, *, images: Sequence[int] | None = None,
            k: int = 8, m: int = 8, r: int = 4, exact_sparse: bool = True, **overrides: Any) -> Provenance:
    """Patch-level provenance of one query.

    Args:
        train: an `NDAIndex` (its config is used) or anything `load_images` accepts.
        query: one image: (C, H, W) or (1, C, H, W) array/tensor, a 1-image `ImageSet`, or a path.
        config: `NDAConfig` when `train` is not an index (keyword overrides replace fields).
        images: training indices that get training-side detail (heat maps, per-position matches);
            default: the top-`k` proponents by score.
        m: entries per query position in the exact sparse structure (0: skip it).
        r: matches kept per (query position, selected image).
        exact_sparse: certify the sparse top-m over all images (one extra round over the images
            that could still contribute); False keeps only the first round's candidates
            (the top-m images by weight sum at each position), which is exact in most positions.
    Returns:
        a `Provenance`.
    """
    index = train if isinstance(train, NDAIndex) else NDAIndex.build(train, config, **overrides)
    cfg = index.config
    qset = _one_query(query, index.train.shape)
    check_compatible(index.train, qset)
    if k < 1 or r < 1 or m < 0:
        raise NDAError(f"need k ≥ 1, r ≥ 1 and m ≥ 0; got k={k}, r={r}, m={m}")
    engine = make_engine(cfg.engine, cfg.torch_dtype(), cfg.resolved_device(), cfg.memory_budget_mb)
    q = qset.tensor(torch.float64)[0]
    train_t = index.train.tensor(torch.float64)
    N = train_t.shape[0]
    T = len(cfg.timesteps)
    steps = index.steps(tuple(q.shape))

    # 1. the engine's per-position sums and normalisers, step by step.
    raw = []
    for step in steps:
        x_t, z = _noised(q, train_t, step)
        try:
            sums, lse = engine.position_step(x_t, z, 1.0 - step.alpha_bar, step.scale, cfg.topk, cfg.border)
        except NotImplementedError:
            if engine.name == "conv":
                raise
            warnings.warn(f"engine {engine.name!r} gives no per-position detail; using the conv engine "
                          "(same definition, same dtype) for the provenance", RuntimeWarning, stacklevel=2)
            engine = make_engine("conv", cfg.torch_dtype(), cfg.resolved_device(), cfg.memory_budget_mb)
            sums, lse = engine.position_step(x_t, z, 1.0 - step.alpha_bar, step.scale, cfg.topk, cfg.border)
        g = cfg.gamma_at(step.t)
        coef = (g if step.scale.block == 1 else 1.0 - g) / T
        raw.append((step, coef, sums.to(torch.float64).cpu().numpy(), lse.to(torch.float64).cpu().numpy()))

    # 2. which images get training-side detail.
    if images is None:
        total = sum(c * s.sum(axis=0) for _, c, s, _ in raw)
        order = np.lexsort((np.arange(N), -total))
        selected = order[: min(k, N)]
    else:
        selected = np.asarray([int(i) for i in images], dtype=np.int64)
        bad = [int(i) for i in selected if not 0 <= i < N]
        if bad:
            raise NDAError(f"images {bad} are not training indices (0 … {N - 1})")
        if len(set(selected.tolist())) != len(selected):
            raise NDAError("images has duplicates")
    selected = np.asarray(selected, dtype=np.int64)

    # 3. recompute the kept weights of the selected (and candidate) images only.
    out_steps = []
    for step, coef, sums, lse in raw:
        H, W = q.shape[1:]
        grid = output_size(H, W, step.scale.patch)
        x_t, z = _noised(q, train_t, step)
        rec = _Recomputer(engine, x_t, z, step, cfg.topk, cfg.border, lse, selected, m, r)
        first = selected if m == 0 else np.union1d(selected, _top_images(sums, m))
        rec.visit(first)
        if m > 0 and exact_sparse:
            rec.visit(_sparse_candidates(sums, rec.visited, rec.sparse_w[:, -1].numpy()))
        sp = rec.sparse_result() if m > 0 else (None, None, None)
        out_steps.append(StepProvenance(
            t=step.t, scale=step.scale, alpha_bar=step.alpha_bar, coef=coef, grid=grid, sums=sums, lse=lse,
            selected=selected, train_maps=rec.train_maps.reshape(len(selected), *grid),
            match_pos=rec.match_pos, match_w=rec.match_w,
            sparse_n=sp[0], sparse_pos=sp[1], sparse_w=sp[2], images_visited=int(rec.visited.sum()),
        ))
    return Provenance(
        query=qset.images[0], config=cfg, engine=engine.name, steps=out_steps, selected=selected,
        names=index.train.names,
        meta={"train_fingerprint": index.train.fingerprint(), "query_fingerprint": qset.fingerprint(),
              "score_fingerprint": cfg.score_fingerprint(), "query_name": (qset.names or [None])[0]},
    )


def _one_query(query: Any, shape: tuple[int, int, int]) -> ImageSet:
    """One query image; a bare (C, H, W) (or (H, W) when C = 1) array is one image, not a batch."""
    if isinstance(query, ImageSet):
        qset = query
    elif isinstance(query, (np.ndarray, torch.Tensor)) and (
            tuple(query.shape) == tuple(shape) or (query.ndim == 2 and shape[0] == 1)):
        qset = load_images(query[None], what="query")
    else:
        qset = load_images(query, what="query")
    if len(qset) != 1:
        raise NDAError(f"explain() takes one query, got {len(qset)}; loop over them (or use write_report)")
    return qset


def _noised(q: torch.Tensor, train: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t and √ᾱ_t·z exactly as `Engine.score_steps` forms them (float64)."""
    a = torch.tensor(step.alpha_bar, dtype=torch.float64)
    sa, sv = a.sqrt().item(), (1 - a).sqrt().item()
    return q * sa + step.noise.to(q.dtype) * sv, train * sa


def _top_images(sums: np.ndarray, m: int) -> np.ndarray:
    """Union over positions of the m images with the largest weight sums there."""
    m = min(m, sums.shape[1])
    part = np.argpartition(-sums, m - 1, axis=1)[:, :m]
    return np.unique(part)


def _sparse_candidates(sums: np.ndarray, visited: np.ndarray, mth_best: np.ndarray) -> np.ndarray:
    """Unvisited images that could still hold one of the top-m weights at some position.

    An image's largest kept weight at ℓ is ≤ its top-k sum there, so an image whose sum is at most
    the m-th best weight found at every ℓ cannot enter any list. After visiting the images this
    returns, the m-th best weights only grow, so the lists are final (exact up to rounding).
    """
    slack = 1e-6 * np.abs(mth_best)  # the engine's sums and our recomputed weights differ by rounding
    could = (sums > (mth_best + slack)[:, None]).any(axis=0)
    return np.flatnonzero(could & ~visited)


class _Recomputer:
    """Recomputes exp(logit − lse[ℓ]) for chosen training images, in chunks, and reduces on the fly."""

    def __init__(self, engine: Engine, x_t: torch.Tensor, z: torch.Tensor, step: Step, topk: int | None,
                 border: str, lse: np.ndarray, selected: np.ndarray, m: int, r: int) -> None:
        dev, dt = engine.device, engine.dtype
        self.dev, self.dt = dev, dt
        C, H, W = x_t.shape
        P, b = step.scale.patch, step.scale.block
        self.variance = 1.0 - step.alpha_bar
        qp = unfold(x_t.to(device=dev, dtype=dt)[None], P)[0]  # (L, D)
        if b > 1:  # ‖projection difference‖² = ‖b·(block means difference)‖²
            qp = b * block_means(qp, C, P, b)
        self.qp, self.q_norm = qp, qp.pow(2).sum(-1)
        self.z, self.C, self.P, self.b = z, C, P, b
        self.L = qp.shape[0]
        self.ok = comparable(H, W, P, border, dev)  # (L, L′)
        self.Lp = self.ok.shape[1]
        self.k = self.Lp if topk is None else min(topk, self.Lp)
        self.lse = torch.as_tensor(lse, device=dev, dtype=dt)
        self.budget = engine.memory_budget
        N = z.shape[0]
        self.visited = np.zeros(N, dtype=bool)
        self.sel_slot = {int(n): j for j, n in enumerate(selected)}
        S = len(selected)
        self.r = min(r, self.k)
        self.train_maps = np.zeros((S, self.Lp))
        self.match_pos = np.full((S, self.L, self.r), -1, dtype=np.int64)
        self.match_w = np.zeros((S, self.L, self.r))
        self.m = min(m, N * self.Lp)
        self.sparse_w = torch.zeros(self.L, max(self.m, 1), dtype=torch.float64)
        self.sparse_key = torch.full((self.L, max(self.m, 1)), -1, dtype=torch.int64)  # n·L′ + ℓ′

    def visit(self, images: np.ndarray) -> None:
        images = np.asarray([int(n) for n in images if not self.visited[int(n)]], dtype=np.int64)
        if not images.size:
            return
        elt = torch.finfo(self.dt).bits // 8
        # (B images × Lc query positions × L′) logits plus top-k scratch must fit the budget.
        per_row = self.Lp * elt * 3 + self.k * (elt + 8) * 2
        rows = max(1, self.budget // max(1, per_row))
        B = max(1, min(len(images), rows // self.L)) if rows >= self.L else 1
        Lc = self.L if rows >= self.L else rows
        for s in range(0, len(images), B):
            batch = images[s: s + B]
            zp = unfold(self.z[torch.as_tensor(batch)].to(device=self.dev, dtype=self.dt), self.P)  # (B, L′, D)
            if self.b > 1:
                zp = self.b * block_means(zp, self.C, self.P, self.b)
            z_norm = zp.pow(2).sum(-1)  # (B, L′)
            for l0 in range(0, self.L, Lc):
                l1 = min(l0 + Lc, self.L)
                self._chunk(batch, zp, z_norm, l0, l1)
        self.visited[images] = True

    def _chunk(self, batch: np.ndarray, zp: torch.Tensor, z_norm: torch.Tensor, l0: int, l1: int) -> None:
        qp, qn = self.qp[l0:l1], self.q_norm[l0:l1]
        cross = torch.einsum("ld,bpd->blp", qp, zp)  # (B, Lc, L′)
        d = (qn[None, :, None] + z_norm[:, None, :] - 2.0 * cross).clamp_(min=0.0)
        logits = (d * (-1.0 / (2.0 * self.variance))).masked_fill_(~self.ok[None, l0:l1], float("-inf"))
        vals, idx = torch.topk(logits, self.k, dim=-1)  # kept positions, largest first
        w = torch.exp(vals - self.lse[None, l0:l1, None]).to(torch.float64).cpu()  # (B, Lc, k)
        idx = idx.cpu()
        for bi, n in enumerate(batch.tolist()):
            j = self.sel_slot.get(n)
            if j is None:
                continue
            self.train_maps[j] += np.bincount(idx[bi].reshape(-1).numpy(), weights=w[bi].reshape(-1).numpy(),
                                              minlength=self.Lp)
            wr, pr = w[bi, :, : self.r].numpy(), idx[bi, :, : self.r].numpy()
            self.match_w[j, l0:l1] = wr
            self.match_pos[j, l0:l1] = np.where(wr > 0, pr, -1)
        if self.m > 0:
            mm = min(self.m, self.k)
            cand_w = w[:, :, :mm].permute(1, 0, 2).reshape(l1 - l0, -1)  # (Lc, B·mm)
            n_t = torch.as_tensor(batch, dtype=torch.int64)[:, None, None]
            keys = (n_t * self.Lp + idx[:, :, :mm]).permute(1, 0, 2).reshape(l1 - l0, -1)
            all_w = torch.cat([self.sparse_w[l0:l1], cand_w], dim=1)
            all_k = torch.cat([self.sparse_key[l0:l1], keys], dim=1)
            top_w, where = torch.topk(all_w, self.sparse_w.shape[1], dim=1)
            self.sparse_w[l0:l1] = top_w
            self.sparse_key[l0:l1] = torch.gather(all_k, 1, where)

    def sparse_result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = self.sparse_w.numpy().copy()
        key = self.sparse_key.numpy().copy()
        empty = (key < 0) | (w <= 0)
        n = np.where(empty, -1, key // self.Lp)
        pos = np.where(empty, -1, key % self.Lp)
        return n, pos, np.where(empty, 0.0, w)
