"""`fast`: the exact SPEC §1 score with cache-blocked GEMMs, shared work across timesteps and
queries, a streaming log-sum-exp over training chunks, and top-k only where it can matter.

Design note (what is computed, and why every shortcut is exact)
================================================================

Notation: one scale (patch P, block b), positions ℓ (query) and ℓ′ (training), σ² = 1 − ᾱ_t.

1. **Features.** f(img) = b · unfold(avgpool_b(zero-pad(img)), P/b, dilation b): for b = 1 the plain
   zero-padded P×P patches; for b > 1 the b×b block means of every P×P patch (a dilated (P/b)²
   window of the b×b-average-pooled image), times b, so that ‖f(a) − f(c)‖² = b²·‖means(a − c)‖²
   is exactly the SPEC distance of the projections (b² fewer features than P×P kernels).
   f is linear, so f(x_t) = √ᾱ f(x) + σ f(ε_t).

2. **Border rule by classes, not masks.** "match" compares only positions with identical
   out-of-image masks (`patches.border_classes`); zero-padded entries are 0 in both patches, so
   within a class the distance over in-image entries is the full ‖f(a) − f(c)‖². Each class is
   scored separately (classes of equal size are batched with `bmm`); incomparable pairs are never
   formed (weight exactly 0, as SPEC requires). For P = 7 on 32×32 this is 44 % of the L·L′ pairs,
   for P = 14 only 15 %. "zero" is the single class of all positions.

3. **Centring.** Distances are translation invariant, so training and query features of class c
   are centred on μ_c = the class-mean training feature (computed from the mean training image:
   f is linear). This shrinks ‖u‖², ‖v‖² and the float32 cancellation in the expansion below.

4. **One GEMM per query, one per timestep (work shared across timesteps and queries).** With
   u = f(x) − μ, v = f(z) − μ (clean), ε = f(ε_t):
       −d/(2σ²) = a_t·G1 + b_t·G2 + r_ℓ,   G1 = −½‖u − v‖² = ⟨[u, 1, −½‖u‖²], [v, −½‖v‖², 1]⟩,
       a_t = ᾱ/σ², b_t = √ᾱ/σ, G2 = ⟨ε_ℓ, v⟩, r_ℓ = −b_t⟨ε_ℓ, u_ℓ⟩ − ½‖ε_ℓ‖² (constant per ℓ).
   G1 does not depend on t (one GEMM per query and scale, shared by all its timesteps); G2 does not
   depend on the query (one GEMM per timestep and training chunk, shared by a batch of queries,
   since ε_t is the same for every query, SPEC §1.1). A per-ℓ constant cancels in the softmax over
   (n, ℓ′) and in the top-k order, so the engine works with s = a_t·G1 + b_t·G2 and adds r_ℓ back
   only where an absolute log-normaliser is returned (`position_step`, generic form: r_ℓ = 0).
   `score_step` (already-noised queries) is the special case a = 1/σ², no G2.

5. **Streaming log-sum-exp, memory bounded by the budget, not by N.** Training images are
   processed in chunks; each (query position ℓ, training image n) row of a chunk yields its
   full log-sum LR(ℓ, n) = log Σ_ℓ′ e^s and top-k log-sum LT(ℓ, n). A running normaliser
   Z_ℓ = logsumexp_n LR is updated per block. The final τ(n) = Σ_ℓ exp(LT(ℓ, n) − Z_ℓ) needs the
   final Z_ℓ: when an (L, N) float32 table of LT per (query, step) fits half the budget, it is
   kept (one pass, values stored relative to a per-ℓ reference for float32 resolution);
   otherwise the engine makes two passes (pass 1: Z_ℓ only; pass 2: recompute and accumulate).
   Row blocks are sized to stay in L2 cache; GEMM outputs are sized by the budget.

6. **Top-k only where it can matter (exact up to a stated bound).** Let η be the target
   relative error (1e-9 in float32, 1e-14 in float64, both far below the dtype's rounding of the
   score) and δ = ln(N) + 2 ln(m_max) + ln(1/η), m_max the largest class. Every Z_run ≤ Z_final
   (a running log-sum-exp only grows), so a weight with s < Z_run − δ is below e^−δ. For a row:
     (a) if LR ≤ Z_run − δ + ln k, at most k of its weights exceed e^−δ (each contributes
         ≥ e^(Z_run − δ) to e^LR), and
     (b) otherwise, if a count shows ≤ k weights above e^(Z_run − δ),
   then all weights outside the top k are below e^−δ, so the full row sum replaces the top-k sum
   with error ≤ m·e^−δ per row. Summed over ℓ that is ≤ L·m·e^−δ per score, while
   max_n τ(n) ≥ L·min(k, m)/(N·m) (each ℓ spreads mass 1 over N images and the top-k keeps at
   least k/m of each row); the relative error is therefore ≤ N·m²·e^−δ/k ≤ η.
   Rows that need a true top-k (most rows at t ≥ 200) get an exact selection: `np.partition`
   (introselect, ~5× faster than `torch.topk` on CPU; it works in place on a zero-copy view of the
   scratch buffer, so ties are handled exactly) on CPU and `torch.topk` on other devices.
   The count (b) is skipped adaptively once most counted rows turn out to need the top-k anyway
   (a speed decision only; the result is exact either way).

7. **No subnormals.** Before exp, s − max_row is clamped at −80 (float32; −700 in float64), so
   exp never yields a subnormal (100× slower on x86). A weight raised this way changes by less
   than e^−80 of its row maximum ≤ e^−80 (normalised), i.e. ≤ L·m·e^−80 per score — far below η.

8. **Threads.** GEMMs use torch's intra-op threads. Row blocks are L2-sized, where intra-op
   threads only add barrier waits (37× slower on a busy 2-core machine, measured), so the block
   phase runs single-threaded per job, and with T > 1 threads independent (query, step) jobs run
   in T parallel lanes (Python threads; torch ops and `np.partition` release the GIL).

Measured (benchmarks/RESULTS-engine.md, 1 thread, busy 2-core Xeon): N = 5000, 32×32×3, P = 7,
top-100: conv 186 s, fast 15 s per query-timestep (12.4×), max relative difference 2e-6, peak
RSS growth 0.5 GB (conv 1.7 GB). Time splits roughly: exact top-k selection 30 %, GEMMs 25 %
(bounded by the query batch the budget allows for the LT tables), combining G1/G2 15 %, the rest
elementwise work and Python overhead.

Not done (measured or reasoned not to win here): exact pruning with projected-distance lower
bounds — at the default timesteps t ≥ 200 more than 50 % of all (ℓ, n, ℓ′) weights are above
e^−δ (the softmax is flat), so a bound cannot remove GEMM work where the time goes.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..patches import border_classes, output_size, padding
from .base import Engine, Progress, Scale, Step, _no_progress

#: Target relative error of the skipped top-k selections and negligible rows, per dtype.
ETA = {torch.float32: 1e-9, torch.float64: 1e-14}
#: log-weights below FLOOR (relative to the row max) are raised to it before exp: e^FLOOR is a
#: normal float, far below η (design note 7).
FLOOR = {torch.float32: -80.0, torch.float64: -700.0}
#: Elements per row block (S scratch), sized for a 2 MiB L2 cache.
BLOCK_ELEMS = 1 << 19

#: Elements per row block on GPUs (no cache to fit; fewer, larger kernels).
GPU_BLOCK_ELEMS = 1 << 24
#: Most queries batched together (their G2 = ⟨ε_t, v⟩ GEMMs are shared).
MAX_QUERY_BATCH = 16
#: Most training images per chunk.
MAX_CHUNK = 256

#: Most parallel lanes of (query, step) jobs in the block phase (each holds one scratch block).
MAX_LANES = 8

_POOL: ThreadPoolExecutor | None = None
_JOB_POOL: ThreadPoolExecutor | None = None


def features(images: torch.Tensor, P: int, b: int) -> torch.Tensor:
    """(n, C, H, W) → (n, L, C·(P/b)²): b × the b×b block means of every zero-padded P×P patch.

    ‖features(a) − features(c)‖² is the SPEC distance (block b = 1: plain patches).
    """
    p = padding(P)
    if b == 1:
        return F.unfold(images, P, padding=p).transpose(1, 2)
    x = F.avg_pool2d(F.pad(images, (p, p, p, p)), b, stride=1)
    return F.unfold(x, P // b, dilation=b).transpose(1, 2) * b


@dataclass
class _Group:
    """Border classes of equal size m, batched: pos (G, m) global positions, mu (G, D) centres."""

    m: int
    pos: torch.Tensor
    mu: torch.Tensor | None = None


def _groups(H: int, W: int, P: int, border: str) -> tuple[int, list[_Group]]:
    Ho, Wo = output_size(H, W, P)
    L = Ho * Wo
    if border == "zero":
        return L, [_Group(L, torch.arange(L)[None])]
    cls = border_classes(H, W, P)
    order = torch.argsort(cls * L + torch.arange(L))  # positions sorted by class, then position
    _, counts = torch.unique_consecutive(cls[order], return_counts=True)
    by_size: dict[int, list[torch.Tensor]] = {}
    for chunk in torch.split(order, counts.tolist()):
        by_size.setdefault(len(chunk), []).append(chunk)
    return L, [_Group(m, torch.stack(v)) for m, v in sorted(by_size.items(), reverse=True)]


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="nda-topk")
    return _POOL


def _job_pool(n: int) -> ThreadPoolExecutor:
    global _JOB_POOL
    if _JOB_POOL is None or _JOB_POOL._max_workers < n:
        _JOB_POOL = ThreadPoolExecutor(n, thread_name_prefix="nda-jobs")
    return _JOB_POOL


def topk_sums(E: torch.Tensor, k: int, threads: int | None = None) -> torch.Tensor:
    """Σ of the k largest entries of each row of E (R, m), k < m. E is scratch: may be reordered.

    CPU: `np.partition` in place on a zero-copy view (exact introselect; the GIL is released, so
    large blocks are split over threads). Other devices: `torch.topk`.
    """
    R, m = E.shape
    if E.device.type != "cpu" or not E.is_contiguous():
        return torch.topk(E, k, dim=1, sorted=False).values.sum(1)
    a = E.numpy()

    def part(lo: int, hi: int) -> np.ndarray:
        blk = a[lo:hi]
        blk.partition(m - k, axis=1)
        return blk[:, m - k:].sum(1, dtype=np.float64)

    nt = torch.get_num_threads() if threads is None else threads
    if nt > 1 and R * m >= 1 << 16:
        cuts = np.linspace(0, R, nt + 1).astype(int)
        parts = list(_pool().map(lambda i: part(cuts[i], cuts[i + 1]), range(nt)))
        out = np.concatenate(parts)
    else:
        out = part(0, R)
    return torch.from_numpy(out).to(E.dtype)


@dataclass(frozen=True)
class Plan:
    """How `_run` batches: two passes or one, queries and steps per batch, images per chunk."""

    two_pass: bool
    queries: int
    steps: int
    chunk: int
    working_bytes: int  # tables + chunk buffers (the row-block scratch is extra, ~2 MiB)


@dataclass
class _Job:
    """One (query, step) pair inside a batch: its running normaliser and its LT table."""

    a: float
    lse: torch.Tensor  # (L,) float64 running (then final) log-normaliser of s
    ref: torch.Tensor  # (L,) float64 reference for the stored LT
    table: torch.Tensor | None  # (L, N) float32/64: LT − ref (one-pass mode)
    score: torch.Tensor  # (N,) float64 (two-pass mode accumulator)
    count: bool = True  # adaptive: count non-negligible weights before selecting


class FastEngine(Engine):
    """Exact SPEC §1 engine; see the module docstring for the algorithm and its exactness."""

    name = "fast"

    # ------------------------------------------------------------------ public API
    def score_step(self, x_t: torch.Tensor, z: torch.Tensor, variance: float, scale: Scale,
                   topk: int | None, border: str, progress: Progress = _no_progress) -> torch.Tensor:
        out = self._run(x_t, z, scale, [(1.0 / variance, 0.0, None)], topk, border, progress)
        return out[0]

    def score_steps(self, queries: torch.Tensor, train: torch.Tensor, steps: Sequence[Step],
                    topk: int | None, border: str, progress: Progress = _no_progress) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(steps)
        by_scale: dict[Scale, list[int]] = {}
        for i, st in enumerate(steps):
            by_scale.setdefault(st.scale, []).append(i)
        for scale, idx in by_scale.items():
            specs = []
            for i in idx:
                ab = float(steps[i].alpha_bar)
                var = 1.0 - ab
                specs.append((ab / var, math.sqrt(ab) / math.sqrt(var), steps[i].noise))
            res = self._run(queries, train, scale, specs, topk, border, progress)
            for i, r in zip(idx, res):
                out[i] = r
        return out  # type: ignore[return-value]

    def position_step(self, x_t: torch.Tensor, z: torch.Tensor, variance: float, scale: Scale,
                      topk: int | None, border: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(x_t[None], z, scale, [(1.0 / variance, 0.0, None)], topk, border,
                         _no_progress, positions=True)

    # ------------------------------------------------------------------ planning
    def plan(self, Q: int, N: int, L: int, D: int, J: int, pairs: int, n_noise: int, esz: int,
             positions: bool = False) -> "Plan":
        """Batch and chunk sizes from the memory budget (bytes), independent of N where it matters.

        One pass keeps an (L, N) table of top-k log-sums per (query, step) in at most half the
        budget; if even one does not fit, two passes (no table). The GEMM outputs of a training
        chunk ((queries + noise steps) × `pairs` values per image) and its features use at most
        half of what is left.
        """
        budget = max(1, int(self.memory_budget))
        table = L * N * esz
        fit = int((budget // 2) // max(1, table))
        if positions:
            two_pass, Qb, Jb = False, 1, J
        elif fit >= J:
            two_pass, Jb, Qb = False, J, max(1, min(Q, fit // J, MAX_QUERY_BATCH))
        elif fit >= 1:
            two_pass, Jb, Qb = False, fit, 1
        else:
            two_pass, Jb, Qb = True, J, max(1, min(Q, MAX_QUERY_BATCH // 2))
        block = BLOCK_ELEMS if self.device.type == "cpu" else GPU_BLOCK_ELEMS
        lanes = min(MAX_LANES, torch.get_num_threads()) if self.device.type == "cpu" else 1
        rest = budget - (0 if two_pass else Qb * Jb * table) - 2 * lanes * block * esz
        per_image = (Qb + min(Jb, n_noise)) * pairs * esz + L * (D + 2) * (esz + 24)
        n_c = int(max(1, min(N, rest // 2 // max(1, per_image), MAX_CHUNK)))
        return Plan(two_pass, Qb, Jb, n_c, (0 if two_pass else Qb * Jb * table) + n_c * per_image)

    # ------------------------------------------------------------------ core
    def _run(self, queries: torch.Tensor, train: torch.Tensor, scale: Scale, specs, topk, border,
             progress: Progress, positions: bool = False):
        """Scores for `specs` = [(a_j, b_j, ε_j image or None)]: s = a_j·G1 + b_j·⟨ε_j, v⟩.

        Returns one (Q, N) float64 CPU tensor per spec, or (sums, lse) when `positions`.
        """
        dev, dt = self.device, self.dtype
        P, blk = scale.patch, scale.block
        Q, C, H, W = queries.shape
        N = train.shape[0]
        L, groups = _groups(H, W, P, border)
        f64 = torch.float64
        train = train.to(device=dev, dtype=f64)
        queries = queries.to(device=dev, dtype=f64)
        for g in groups:
            g.pos = g.pos.to(dev)
        mu_all = features(train.mean(0, keepdim=True), P, blk)[0]  # (L, D): f is linear
        D = mu_all.shape[1]
        for g in groups:
            g.mu = mu_all[g.pos].mean(1)  # (G, D)
        m_max = max(g.m for g in groups)
        delta = math.log(N) + 2 * math.log(m_max) + math.log(1.0 / ETA.get(dt, 1e-9))
        k = topk if topk is not None and topk < m_max else None
        J = len(specs)
        noise = []  # per spec: per group (G, m, D+2) rows [b·ε, 0, 0] or None
        for a_j, b_j, eps in specs:
            if eps is None or b_j == 0.0:
                noise.append(None)
                continue
            ef = features(eps.to(device=dev, dtype=f64)[None], P, blk)[0] * b_j  # (L, D)
            rows = []
            for g in groups:
                e = ef[g.pos]  # (G, m, D)
                rows.append(torch.cat([e, e.new_zeros(*e.shape[:2], 2)], -1).to(dt))
            noise.append(rows)

        pairs = sum(g.pos.shape[0] * g.m * g.m for g in groups)  # GEMM outputs per image per job
        n_noise = sum(x is not None for x in noise)
        esz = torch.tensor([], dtype=dt).element_size()
        plan = self.plan(Q, N, L, D, J, pairs, n_noise, esz, positions)
        two_pass, Qb, Jb, n_c = plan.two_pass, plan.queries, plan.steps, plan.chunk

        results = [torch.zeros(Q, N, dtype=f64) for _ in range(J)]
        nt = torch.get_num_threads()
        pos_out = None
        block = BLOCK_ELEMS if dev.type == "cpu" else GPU_BLOCK_ELEMS
        lanes = nt if dev.type == "cpu" else 1
        scratch = [torch.empty(max(block, n_c * m_max) + m_max, dtype=dt, device=dev)  # ≥ one ℓ-row
                   for _ in range(max(1, min(lanes, MAX_LANES)))]
        for q0 in range(0, Q, Qb):
            q1 = min(Q, q0 + Qb)
            # query rows [u, 1, −½‖u‖²] per group, (q, G, m, D+2)
            uf = features(queries[q0:q1], P, blk)  # (q, L, D)
            qrows = []
            for g in groups:
                u = uf[:, g.pos] - g.mu[None, :, None, :]  # (q, G, m, D)
                qrows.append(torch.cat([u, torch.ones_like(u[..., :1]), -0.5 * u.pow(2).sum(-1, keepdim=True)],
                                       -1).to(dt))
            del uf
            for j0 in range(0, J, Jb):
                j1 = min(J, j0 + Jb)
                jobs = {}
                for qi in range(q1 - q0):
                    for j in range(j0, j1):
                        jobs[qi, j] = _Job(
                            a=specs[j][0],
                            lse=torch.full((L,), -math.inf, dtype=f64, device=dev),
                            ref=torch.zeros(L, dtype=f64, device=dev),
                            table=None if two_pass else torch.empty(L, N, dtype=dt, device=dev),
                            score=torch.zeros(N, dtype=f64, device=dev),
                        )
                for phase in (("lse", "acc") if two_pass else ("one",)):
                    for c0 in range(0, N, n_c):
                        c1 = min(N, c0 + n_c)
                        n = c1 - c0
                        tf = features(train[c0:c1], P, blk)  # (n, L, D) float64
                        for gi, g in enumerate(groups):
                            G, m = g.pos.shape
                            v = tf[:, g.pos.reshape(-1)].reshape(n, G, m, D).permute(1, 0, 2, 3)
                            v = v.reshape(G, n * m, D) - g.mu[:, None, :]
                            Bt = torch.cat([v, -0.5 * v.pow(2).sum(-1, keepdim=True), torch.ones_like(v[..., :1])],
                                           -1).to(dt).transpose(1, 2)  # (G, D+2, n·m)
                            G1 = [torch.bmm(qrows[gi][qi], Bt) for qi in range(q1 - q0)]  # (G, m, n·m)
                            G2 = {j: torch.bmm(noise[j][gi], Bt) for j in range(j0, j1) if noise[j] is not None}
                            posflat = g.pos.reshape(-1)
                            # Row blocks are L2-sized: intra-op threads only add barrier waits
                            # (ruinous on a busy machine), so they run single-threaded; the
                            # top-k selection uses its own thread pool (`topk_sums`).
                            # With several threads, independent (query, step) jobs run in
                            # parallel Python threads instead (torch and numpy release the GIL).
                            work = [(job, G1[qi].view(G * m * n, m), G2.get(j)) for (qi, j), job in jobs.items()]
                            workers = min(nt, len(work), len(scratch))
                            torch.set_num_threads(1)
                            try:
                                if workers <= 1:
                                    for job, g1, g2 in work:
                                        self._blocks(job, g1, g2, posflat, n, m, c0, phase, k, delta, scratch[0],
                                                     nt)
                                else:
                                    def lane(w: int) -> None:
                                        torch.set_num_threads(1)  # per-thread setting under OpenMP
                                        for job, g1, g2 in work[w::workers]:
                                            self._blocks(job, g1, g2, posflat, n, m, c0, phase, k, delta,
                                                         scratch[w], 1)

                                    list(_job_pool(workers).map(lane, range(workers)))
                            finally:
                                torch.set_num_threads(nt)
                            del G1, G2
                        del tf
                    if phase == "lse":
                        for job in jobs.values():
                            job.count = True
                # ---- finish: τ(n) = Σ_ℓ exp(LT(ℓ, n) − Z_ℓ)
                for (qi, j), job in jobs.items():
                    if two_pass:
                        results[j][q0 + qi] = job.score.cpu()
                        continue
                    shift = (job.ref - job.lse).to(dt)  # ≤ 0, small
                    if positions:
                        w = (job.table.to(f64) + (job.ref - job.lse)[:, None]).exp()
                        pos_out = (w.cpu(), job.lse.cpu())
                    col = max(1, (4 << 20) // max(1, L))
                    for s0 in range(0, N, col):
                        s1 = min(N, s0 + col)
                        w = (job.table[:, s0:s1] + shift[:, None]).exp_()
                        results[j][q0 + qi, s0:s1] = w.sum(0, dtype=f64).cpu()
                jobs.clear()
            progress((q1 - q0) * J)
        if positions:
            return pos_out
        return results

    def _blocks(self, job: _Job, G1: torch.Tensor, G2: torch.Tensor | None, posflat: torch.Tensor, n: int,
                m: int, c0: int, phase: str, k: int | None, delta: float, scratch: torch.Tensor,
                threads: int = 1) -> None:
        """Process the rows (ℓ, n) of one (query, step) and one class group of a training chunk.

        G1, G2: (G·m·n, m) rows in (class, ℓ, n) order; posflat: (G·m,) positions of the ℓ rows.
        """
        f64 = torch.float64
        nl_total = posflat.shape[0]
        rl = max(1, (scratch.numel() - m) // (n * m))  # ℓ-rows per block
        G2v = G2.view(-1, m) if G2 is not None else None
        for i0 in range(0, nl_total, rl):
            i1 = min(nl_total, i0 + rl)
            R = (i1 - i0) * n
            S = scratch[: R * m].view(R, m)
            if G2v is not None:
                torch.add(G2v[i0 * n: i1 * n], G1[i0 * n: i1 * n], alpha=job.a, out=S)
            else:
                torch.mul(G1[i0 * n: i1 * n], job.a, out=S)
            M = S.amax(1)
            # Clamp at FLOOR so that exp never produces (slow) subnormals; see design note 7.
            S.sub_(M[:, None]).clamp_(min=FLOOR[S.dtype]).exp_()
            rs = S.sum(1)
            pos = posflat[i0:i1]
            LR = M.to(f64) + rs.to(f64).log()  # (R,)
            if phase != "acc":
                part = LR.view(i1 - i0, n).logsumexp(1)
                job.lse[pos] = torch.logaddexp(job.lse[pos], part)
                if phase == "lse":
                    continue
                if c0 == 0:
                    job.ref[pos] = job.lse[pos]
            T = rs
            if k is not None and k < m:
                thr = job.lse[pos].repeat_interleave(n) - delta  # (R,) float64, ≤ log of e^−δ·Z
                cand = (LR > thr + math.log(k)).nonzero().squeeze(1)
                if cand.numel():
                    need = cand
                    if job.count:
                        Ec = S.index_select(0, cand)
                        lim = (thr.index_select(0, cand) - M.index_select(0, cand).to(f64)).exp().to(S.dtype)
                        cnt = (Ec > lim[:, None]).sum(1, dtype=torch.int32)
                        sel = cnt > k
                        need = cand[sel]
                        if need.numel() > cand.numel() // 2:
                            job.count = False  # most rows need the top-k: stop counting first
                        if need.numel():
                            T = rs.clone()
                            T[need] = topk_sums(Ec[sel], k, threads)
                    elif need.numel() > R // 2:
                        T = torch.where(torch.zeros(R, dtype=torch.bool, device=S.device).index_fill_(0, need, True),
                                        topk_sums(S, k, threads), rs)
                    else:
                        T = rs.clone()
                        T[need] = topk_sums(S.index_select(0, need), k, threads)
            LT = M.to(f64) + T.to(f64).log()
            if phase == "one":
                ref = job.ref[pos].repeat_interleave(n)
                job.table[pos, c0: c0 + n] = (LT - ref).to(job.table.dtype).view(i1 - i0, n)
            else:  # "acc": final normaliser known
                lse = job.lse[pos].repeat_interleave(n)
                job.score[c0: c0 + n] += (LT - lse).exp().view(i1 - i0, n).sum(0)
