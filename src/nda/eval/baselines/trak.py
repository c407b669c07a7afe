"""TRAK and D-TRAK for diffusion models, written with ``torch.func`` (no TRAK library).

For a trained diffusion model θ and an image x, the gradient feature is

    g(x) = (1/|T|) Σ_{t∈T} ∇_θ f(θ; x, t, ε_t)

with the output function ``f`` either the denoising loss, ``"loss"`` (TRAK):
mean over (C, H, W) of (ε_θ(x_t, t) − ε_t)², or the D-TRAK output ``"dtrak"``: mean(ε_θ(x_t, t)²);
x_t = √ᾱ_t x + √(1−ᾱ_t) ε_t, with ONE noise tensor per t shared by every image,
ε_t = randn((C, H, W), generator=Generator('cpu').manual_seed(1000 · noise_seed + t)) (float32),
the project's convention (SPEC §1, §3). (Using the mean instead of the sum over pixels scales every
feature by the same constant; with λ given relative to the mean eigenvalue the scores are unchanged.)

T: 10 or 100 uniform timesteps — T100 = {5, 15, …, 995} (10 i + 5) and T10 = {55, 155, …, 955}
(every 10th of T100, so one gradient pass yields both).

Features are projected, Φ = g R / √k, with a Gaussian R (d × k) that is never materialised: it is
generated block by block (``row_chunk`` parameters × ``col_block`` columns), each block from its own
seeded generator, so any prefix of the columns is itself a valid projection (k is chosen on
``calib`` from prefixes of one k_max run). Scores:

    τ(x_q, n) = Φ_q (ΦᵀΦ + λ I)⁻¹ Φᵀ_train,   λ = λ_rel · tr(ΦᵀΦ) / k

computed exactly through the thin SVD of Φ_train (works for k < N and k ≥ N alike).
Per-sample gradients: ``vmap(jacrev(f))`` over the images of a batch with ``functional_call``
(falls back to a loop of single-sample backward passes if vmap fails on a model).
"""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import cache_dir, check_pair, load_cached, save_cached, sha

OUTPUTS = ("loss", "dtrak")
T100 = tuple(10 * i + 5 for i in range(100))
T10 = T100[5::10]
TIMESTEP_SETS = {10: T10, 100: T100}
K_MAX = 2048
K_GRID = (256, 512, 1024, 2048)
LAM_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
DEFAULT_K = 2048
DEFAULT_LAM = 1e-2


# ------------------------------------------------------------------------------- projection
class ChunkedProjector:
    """Gaussian random projection of d-vectors to k dims without materialising the d × k matrix.

    R[i, j] ~ N(0, 1), generated in blocks of ``row_chunk`` rows × ``col_block`` columns; block
    (c, b) comes from ``torch.Generator().manual_seed(s)`` with s derived from (seed, c, b) by
    ``numpy.random.SeedSequence``. ``project(G)`` returns G R / √k. Peak extra memory: one block
    (row_chunk · col_block floats) plus the (B, k) output. The unscaled G R of a larger k starts
    with the columns of a smaller k (same seed, row_chunk, col_block).
    """

    def __init__(self, dim: int, k: int, seed: int = 0, row_chunk: int = 8192, col_block: int = 512):
        if dim < 1 or k < 1:
            raise ValueError(f"projector needs dim ≥ 1 and k ≥ 1, got dim={dim}, k={k}")
        self.dim, self.k, self.seed = int(dim), int(k), int(seed)
        self.row_chunk, self.col_block = int(row_chunk), int(col_block)

    def _block(self, c: int, b: int):
        import torch

        r0, r1 = c * self.row_chunk, min((c + 1) * self.row_chunk, self.dim)
        s = int(np.random.SeedSequence([self.seed, c, b]).generate_state(1, dtype=np.uint64)[0] >> 1)
        blk = torch.randn((r1 - r0, self.col_block), generator=torch.Generator("cpu").manual_seed(s))
        return blk[:, : min(self.col_block, self.k - b * self.col_block)]

    def project(self, g, scale: bool = True):
        """(B, d) tensor -> (B, k) float32 tensor."""
        import torch

        g = torch.as_tensor(g, dtype=torch.float32)
        if g.ndim != 2 or g.shape[1] != self.dim:
            raise ValueError(f"expected (B, {self.dim}) vectors, got {tuple(g.shape)}")
        out = torch.zeros((g.shape[0], self.k), dtype=torch.float32)
        n_rows = math.ceil(self.dim / self.row_chunk)
        n_cols = math.ceil(self.k / self.col_block)
        for c in range(n_rows):
            gc = g[:, c * self.row_chunk : (c + 1) * self.row_chunk]
            for b in range(n_cols):
                out[:, b * self.col_block : (b + 1) * self.col_block] += gc @ self._block(c, b)
        return out / math.sqrt(self.k) if scale else out

    def matrix(self):
        """The explicit (d, k) matrix R / √k — for tests on small d only."""
        import torch

        if self.dim * self.k > 50_000_000:
            raise ValueError("matrix() is for small cases only")
        rows = []
        for c in range(math.ceil(self.dim / self.row_chunk)):
            rows.append(torch.cat([self._block(c, b) for b in range(math.ceil(self.k / self.col_block))], 1))
        return torch.cat(rows, 0) / math.sqrt(self.k)


# ------------------------------------------------------------------------ per-sample gradients
def _output(name: str, pred, eps):
    if name == "loss":
        return ((pred - eps) ** 2).mean()
    if name == "dtrak":
        return (pred**2).mean()
    raise ValueError(f"unknown output {name!r}; use one of {OUTPUTS}")


def noise_for(t: int, shape, noise_seed: int = 0):
    import torch

    return torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(1000 * int(noise_seed) + int(t)))


def per_sample_grads(model, images, t: int, eps, outputs: Sequence[str] = OUTPUTS, mode: str = "vmap"):
    """(B, len(outputs), d) per-sample gradients of the output functions at timestep t, noise eps.

    d = all parameters of ``model`` flattened in ``named_parameters`` order. ``mode``: "vmap"
    (``vmap(jacrev)``), "loop" (one backward pass per image and output).
    """
    import torch
    from torch.func import functional_call, jacrev, vmap

    from ..diffusion import alphas_cumprod

    x = torch.as_tensor(images, dtype=torch.float32)
    eps = torch.as_tensor(eps, dtype=torch.float32)
    a = float(alphas_cumprod()[int(t)])
    sa, sb = math.sqrt(a), math.sqrt(1 - a)
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    tt = torch.tensor([int(t)])
    outputs = tuple(outputs)

    if mode == "vmap":

        def f(p, xi):
            pred = functional_call(model, (p, buffers), (sa * xi[None] + sb * eps[None], tt)).sample[0]
            return torch.stack([_output(o, pred, eps) for o in outputs])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no batching rule" perf warnings (attention)
            jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
        return torch.cat([jac[n].reshape(len(x), len(outputs), -1) for n in names], 2)
    if mode == "loop":
        ps = [p for _, p in model.named_parameters()]
        req = [p.requires_grad for p in ps]
        for p in ps:
            p.requires_grad_(True)
        try:
            out = torch.empty((len(x), len(outputs), sum(p.numel() for p in ps)))
            for i in range(len(x)):
                pred = model(sa * x[i : i + 1] + sb * eps[None], tt).sample[0]
                for j, o in enumerate(outputs):
                    gs = torch.autograd.grad(_output(o, pred, eps), ps, retain_graph=j + 1 < len(outputs))
                    out[i, j] = torch.cat([g.reshape(-1) for g in gs])
        finally:
            for p, r in zip(ps, req):
                p.requires_grad_(r)
        return out
    raise ValueError(f"unknown mode {mode!r}")


def featurize(
    model,
    images,
    timestep_sets: dict,
    outputs: Sequence[str] = OUTPUTS,
    k: int = K_MAX,
    proj_seed: int = 0,
    noise_seed: int = 0,
    batch_size: int = 32,
    proj_batch: int = 512,
    mode: str = "auto",
    progress=None,
) -> dict:
    """Projected, timestep-averaged gradient features, UNSCALED (G R, not G R / √k).

    Returns ``{(set_name, output): (N, k) float32}`` for every named timestep set and output; one
    gradient pass over the union of the timesteps serves every set. Memory: the accumulators
    (sets · outputs · batch_size · d floats) plus at most ``proj_batch`` pending d-vectors.
    """
    import torch

    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    n = len(x)
    d = sum(p.numel() for p in model.parameters())
    proj = ChunkedProjector(d, k, seed=proj_seed)
    union = sorted({int(t) for ts in timestep_sets.values() for t in ts})
    keys = [(s, o) for s in timestep_sets for o in outputs]
    feats = {key: np.zeros((n, k), dtype=np.float32) for key in keys}
    pending: list = []  # (key, row indices, (b, d) tensor)

    def flush():
        if not pending:
            return
        allg = torch.cat([p[2] for p in pending])
        z = proj.project(allg, scale=False).numpy()
        s = 0
        for key, rows, g in pending:
            feats[key][rows] = z[s : s + len(g)]
            s += len(g)
        pending.clear()

    mode_used = mode if mode != "auto" else "vmap"
    eps_by_t = {t: noise_for(t, x.shape[1:], noise_seed) for t in union}
    t0 = time.perf_counter()
    for s0 in range(0, n, batch_size):
        xb = x[s0 : s0 + batch_size]
        acc = {sname: torch.zeros((len(xb), len(outputs), d)) for sname in timestep_sets}
        for t in union:
            try:
                g = per_sample_grads(model, xb, t, eps_by_t[t], outputs, mode=mode_used)
            except Exception:
                if mode != "auto" or mode_used == "loop":
                    raise
                mode_used = "loop"
                g = per_sample_grads(model, xb, t, eps_by_t[t], outputs, mode="loop")
            for sname, ts in timestep_sets.items():
                if t in ts:
                    acc[sname] += g
        rows = np.arange(s0, s0 + len(xb))
        for sname, ts in timestep_sets.items():
            acc[sname] /= len(ts)
            for j, o in enumerate(outputs):
                pending.append(((sname, o), rows, acc[sname][:, j].contiguous()))
        del acc
        if sum(len(p[2]) for p in pending) >= proj_batch:
            flush()
        if progress is not None:
            progress(min(s0 + batch_size, n), n, time.perf_counter() - t0)
    flush()
    return feats


# ------------------------------------------------------------------------------------ scores
def trak_scores_from_features(phi_train, phi_query, lam: float = DEFAULT_LAM, relative: bool = True, _svd=None) -> np.ndarray:
    """τ = Φ_q (ΦᵀΦ + λI)⁻¹ Φᵀ_train (float64, (Q, N)); λ = lam · tr(ΦᵀΦ)/k when ``relative``."""
    a = np.asarray(phi_train, dtype=np.float64)
    q = np.asarray(phi_query, dtype=np.float64)
    if a.ndim != 2 or q.ndim != 2 or a.shape[1] != q.shape[1]:
        raise ValueError(f"features must be (N, k) and (Q, k), got {a.shape} and {q.shape}")
    u, s, vt = _svd if _svd is not None else np.linalg.svd(a, full_matrices=False)
    lam_abs = float(lam) * float((s**2).sum() / a.shape[1]) if relative else float(lam)
    if lam_abs <= 0 and (s <= 0).any():
        raise ValueError("λ must be > 0 when ΦᵀΦ is singular")
    w = s / (s**2 + lam_abs)
    return ((q @ vt.T) * w) @ u.T


def tune_on_calib(phi_train, phi_calib, subsets, outputs_calib, ks=K_GRID, lams=LAM_GRID) -> dict:
    """Grid search of (k, λ_rel) maximising the calib LDS (no bootstrap). Returns the choice and the grid."""
    from ..lds import lds

    grid = []
    for k in ks:
        if k > phi_train.shape[1]:
            continue
        a, q = phi_train[:, :k] / math.sqrt(k), phi_calib[:, :k] / math.sqrt(k)
        svd = np.linalg.svd(np.asarray(a, dtype=np.float64), full_matrices=False)
        for lam in lams:
            sc = trak_scores_from_features(a, q, lam, _svd=svd)
            grid.append({"k": int(k), "lam": float(lam), "calib_lds": float(lds(sc, subsets, outputs_calib, n_boot=0).mean)})
    best = max(grid, key=lambda r: r["calib_lds"])
    return {"k": best["k"], "lam": best["lam"], "calib_lds": best["calib_lds"], "grid": grid}


# ------------------------------------------------------------------------- benchmark methods
FEATURE_VERSION = 1
FEATURE_LOG: list = []  # one entry per bench_features call in this process: images sha, cached?, cost


def _protocol(n_t: int, noise_seed: int, proj_seed: int, k_max: int) -> dict:
    sets = {"T100": list(T100), "T10": list(T10)} if n_t == 100 else {"T10": list(T10)}
    return {
        "v": FEATURE_VERSION,
        "sets": sets,
        "outputs": list(OUTPUTS),
        "noise_seed": int(noise_seed),
        "proj_seed": int(proj_seed),
        "k_max": int(k_max),
        "row_chunk": 8192,
        "col_block": 512,
    }


def bench_features(bench, images, n_t: int, output: str, config: dict | None = None, log=None) -> tuple[np.ndarray, dict]:
    """(N, k_max) unscaled features of ``images`` for the full model of ``bench``, cached under runs/.

    One gradient pass computes both outputs (and T10 along with T100); the cache file holds them
    all, so trak-10/100 and dtrak-10/100 share it. Returns (features, cache meta).
    """
    from .common import full_model

    config = config or {}
    images = np.asarray(images, dtype=np.float32)
    model, msha = full_model(bench)
    noise_seed = int(config.get("noise_seed", 0))
    proj_seed = int(config.get("proj_seed", 0))
    k_max = int(config.get("k_max", K_MAX))
    root = cache_dir(config)
    isha = sha(images)
    want_set = f"T{n_t}"
    # a T100 pass also holds T10 (looked at after a T10 pass, whose cost is the one to report)
    for n_pass in ((10, 100) if n_t == 10 else (100,)):
        proto = _protocol(n_pass, noise_seed, proj_seed, k_max)
        path = None if root is None else root / bench.name / f"trak_{msha}_{isha}_{sha(np.zeros(0), extra=proto)}.npz"
        hit = load_cached(path)
        if hit is not None and f"{want_set}__{output}" in hit:
            FEATURE_LOG.append({"images_sha": isha, "cached": True, "file": path.name, **{k: hit["meta"].get(k) for k in ("seconds", "cpu_seconds", "peak_rss_mb", "threads")}})
            return hit[f"{want_set}__{output}"], hit["meta"]
    proto = _protocol(n_t, noise_seed, proj_seed, k_max)
    path = None if root is None else root / bench.name / f"trak_{msha}_{isha}_{sha(np.zeros(0), extra=proto)}.npz"
    import resource
    import torch

    # Resumable: images go through in parts of `part` images, each part cached on its own (a
    # killed 100-timestep pass over the training set loses at most one part). An image's features
    # do not depend on which part it is in (the noise is per timestep, the projector is seeded).
    part = int(config.get("part_images", 128))
    n = len(images)
    chunks, seconds, cpu_seconds, peak = [], 0.0, 0.0, 0.0
    for i, s0 in enumerate(range(0, n, part)):
        ppath = None if path is None else path.with_name(f"{path.stem}.part{i:03d}-{min(n, s0 + part)}.npz")
        hit = load_cached(ppath)
        if hit is None:
            t0, c0 = time.perf_counter(), time.process_time()

            def prog(done, total, el, s0=s0, t0=t0):
                if log is not None:
                    el_all = seconds + time.perf_counter() - t0
                    d_all = s0 + done
                    log(f"  trak features {d_all}/{n} images, {el_all:.0f}s (ETA {el_all / d_all * (n - d_all):.0f}s)")

            f = featurize(model, images[s0 : s0 + part], proto["sets"], OUTPUTS, k=k_max, proj_seed=proj_seed,
                          noise_seed=noise_seed, batch_size=int(config.get("batch_size", 32)), progress=prog)
            hit = {f"{s}__{o}": v for (s, o), v in f.items()}
            # wall and process CPU time: the CPU figure stays meaningful on a shared machine
            hit["meta"] = {"seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2),
                           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
            save_cached(ppath, hit["meta"], **{k: v for k, v in hit.items() if k != "meta"})
        seconds += float(hit["meta"].get("seconds", 0.0))
        cpu_seconds += float(hit["meta"].get("cpu_seconds", float("nan")))  # NaN: a part from before CPU time was kept
        peak = max(peak, float(hit["meta"].get("peak_rss_mb", 0.0)))
        chunks.append(hit)
    feats = {(s, o): np.concatenate([c[f"{s}__{o}"] for c in chunks]) for s in proto["sets"] for o in OUTPUTS}
    meta = {
        "protocol": proto,
        "model_sha": msha,
        "images_sha": isha,
        "n_images": int(n),
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "seconds": round(seconds, 2),  # summed over parts, possibly computed in earlier runs
        "cpu_seconds": None if math.isnan(cpu_seconds) else round(cpu_seconds, 2),
        "threads": torch.get_num_threads(),
        "peak_rss_mb": peak,
    }
    save_cached(path, meta, **{f"{s}__{o}": v for (s, o), v in feats.items()})
    if path is not None:
        for ppath in path.parent.glob(f"{path.stem}.part*.npz"):
            ppath.unlink(missing_ok=True)
    FEATURE_LOG.append({"images_sha": isha, "cached": False, "file": None if path is None else path.name,
                        **{k: meta[k] for k in ("seconds", "cpu_seconds", "peak_rss_mb", "threads")}})
    return feats[(want_set, output)], meta


def _choice_path(bench, config) -> Path | None:
    root = cache_dir(config)
    return None if root is None else root / bench.name / "trak_choices.json"


def bench_method(bench, queries, config, output: str, n_t: int, log=None) -> np.ndarray:
    """``trak-{10,100}`` / ``dtrak-{10,100}`` on a benchmark: scores (Q, N).

    config: ``proj_dim`` and ``lam`` (relative λ) fix the hyperparameters; otherwise they are
    chosen on the benchmark's ``calib`` split (grid ``K_GRID`` × ``LAM_GRID``, max calib LDS) and
    the choice is recorded in runs/baselines/<bench>/trak_choices.json. Also ``noise_seed``,
    ``proj_seed``, ``k_max``, ``cache_dir``.
    """
    config = dict(config or {})
    train, queries = check_pair(bench.train, queries)
    name = f"{'trak' if output == 'loss' else 'dtrak'}-{n_t}"
    ft, _ = bench_features(bench, train, n_t, output, config, log)
    fq, _ = bench_features(bench, queries, n_t, output, config, log)
    k, lam = config.get("proj_dim"), config.get("lam")
    choice = {"k": int(k) if k else None, "lam": float(lam) if lam is not None else None, "source": "config"}
    if k is None or lam is None:
        if "calib" in bench.queries and bench.n_models >= 3:
            fc, _ = bench_features(bench, bench.queries["calib"], n_t, output, config, log)
            ks = [int(k)] if k else sorted({min(kk, ft.shape[1]) for kk in K_GRID})
            lams = [float(lam)] if lam is not None else list(LAM_GRID)
            tuned = tune_on_calib(ft, fc, bench.subsets, bench.outputs["calib"], ks, lams)
            choice = {"k": tuned["k"], "lam": tuned["lam"], "source": f"calib ({bench.n_models} subset models)",
                      "calib_lds": tuned["calib_lds"], "grid": tuned["grid"]}
        else:
            choice = {"k": int(k or min(DEFAULT_K, ft.shape[1])), "lam": float(lam if lam is not None else DEFAULT_LAM),
                      "source": "default (no calib models)"}
    cp = _choice_path(bench, config)
    if cp is not None:
        cp.parent.mkdir(parents=True, exist_ok=True)
        allc = json.loads(cp.read_text()) if cp.exists() else {}
        allc[name] = {kk: v for kk, v in choice.items()}
        cp.write_text(json.dumps(allc, indent=1) + "\n")
    kk = choice["k"]
    return trak_scores_from_features(ft[:, :kk] / math.sqrt(kk), fq[:, :kk] / math.sqrt(kk), choice["lam"])
