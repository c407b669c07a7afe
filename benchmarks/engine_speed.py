"""Side-by-side speed of the `conv` engine (the authors' formulation) and the `fast` engine.

Both engines run in this one process, on identical inputs and config, under the same torch thread
setting. For each case the script prints N, C, H, W, P, scales, topk, seconds per query-timestep
for each engine, their ratio (wall clock and process CPU time), the max relative score difference
max|fast − conv| / max|conv| on the query-timestep both computed, and the peak RSS growth of each
engine's call (resident set size sampled every 10 ms from /proc/self/statm, minus the RSS before
the call; inside one long process this understates later cases, since the allocator keeps pages
freed by earlier ones, so a last table measures the fast engine's peak RSS per N in a fresh
process each).

Timing protocol. The conv engine costs the same for every query and timestep (tens of seconds per
query-timestep at N = 5000), so it is timed on 1 query × 1 timestep (t = 300, plus the down
scale at t = 300 for two-scale cases). The fast engine shares work across timesteps (one GEMM
per query) and across queries (one GEMM per timestep), and its cost depends on t (low noise skips
most top-k selections), so it is timed on `--fast-queries` queries × all default timesteps
(100…500) and the figure reported is total time / (queries × timesteps). Scales of a two-scale
case count as one timestep (as the attribution does: τ_t = γ τ_single + (1−γ) τ_down).

Data: Fashion-MNIST training images (the Debian `dataset-fashion-mnist` IDX files), upsampled to
32×32 and tinted with a random foreground/background colour per image (real structure, not
white noise); the 16×16 case is the FMNIST-2 benchmark data shipped in `nda/data/fmnist2`.

    python benchmarks/engine_speed.py            # full tables (about an hour on 2 cores)
    python benchmarks/engine_speed.py --quick    # reduced, under a minute
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nda.config import NDAConfig
from nda.engines import Scale, Step, make_engine
from nda.noise import query_noise

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
FMNIST2 = Path(__file__).resolve().parents[1] / "src" / "nda" / "data" / "fmnist2" / "data.npz"


def fmnist_rgb(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """n Fashion-MNIST images, bilinearly upsampled to size×size, tinted, in [-1, 1], float64."""
    with gzip.open(FMNIST) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(raw), size=n, replace=False)
    x = torch.from_numpy(raw[idx].astype(np.float32) / 255.0)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    fg = torch.from_numpy(rng.uniform(0.2, 1.0, size=(n, 3, 1, 1)).astype(np.float32))
    bg = torch.from_numpy(rng.uniform(0.0, 0.3, size=(n, 3, 1, 1)).astype(np.float32))
    return ((bg + (fg - bg) * x) * 2 - 1).double()


def fmnist2(n_train: int, n_query: int) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(FMNIST2, allow_pickle=False) as d:
        train, val = d["train"][:n_train], d["val"][:n_query]
    f = lambda a: torch.from_numpy(a.astype(np.float64) / 127.5 - 1.0)  # noqa: E731
    return f(val), f(train)


class PeakRSS:
    """Peak resident-set growth during a `with` block, sampled every 10 ms from /proc/self/statm."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        except OSError:  # not Linux: fall back to ru_maxrss (never decreases)
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self) -> "PeakRSS":
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def steps_for(cfg: NDAConfig, shape, timesteps) -> list[Step]:
    abar = cfg.alpha_bar()
    out = []
    for t in timesteps:
        eps = query_noise(shape, t, cfg.noise_seed)
        g = cfg.gamma_at(t)
        if g > 0:
            out.append(Step(t, float(abar[t]), eps, Scale(cfg.patch_at(t), 1)))
        if g < 1:
            out.append(Step(t, float(abar[t]), eps, Scale(cfg.down_at(t), 2)))
    return out


def combine(cfg: NDAConfig, steps, parts) -> dict[int, torch.Tensor]:
    """γ-combined τ_t per timestep, (Q, N) each."""
    out: dict[int, torch.Tensor] = {}
    for st, p in zip(steps, parts):
        g = cfg.gamma_at(st.t)
        w = g if st.scale.block == 1 else 1.0 - g
        out[st.t] = out.get(st.t, 0) + w * p
    return out


def timed(fn):
    with PeakRSS() as mem:
        w0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return res, wall, cpu, mem.growth_mb


def run_case(name, queries, train, cfg: NDAConfig, fast_queries: int, with_conv: bool, budget_mb: int,
             conv_t: int = 300) -> dict:
    Q, (N, C, H, W) = fast_queries, train.shape
    shape = (C, H, W)
    row = {"case": name, "N": N, "C": C, "H": H, "W": W, "P": cfg.patch_at(conv_t),
           "scales": "1" if cfg.down_at(conv_t) is None else f"1 + down {cfg.down_at(conv_t)}",
           "topk": cfg.topk}
    fast = make_engine("fast", torch.float32, torch.device("cpu"), budget_mb)
    steps = steps_for(cfg, shape, cfg.timesteps)
    parts, wall, cpu, mem = timed(lambda: fast.score_steps(queries[:Q], train, steps, cfg.topk, cfg.border))
    n_qt = Q * len(cfg.timesteps)
    row.update(fast_s=wall / n_qt, fast_cpu=cpu / n_qt, fast_mb=mem, fast_qt=f"{Q}×{len(cfg.timesteps)}")
    if with_conv:
        conv = make_engine("conv", torch.float32, torch.device("cpu"), budget_mb)
        csteps = steps_for(cfg, shape, (conv_t,))
        cparts, cwall, ccpu, cmem = timed(lambda: conv.score_steps(queries[:1], train, csteps, cfg.topk, cfg.border))
        row.update(conv_s=cwall, conv_cpu=ccpu, conv_mb=cmem)
        want = combine(cfg, csteps, cparts)[conv_t][0]
        got = combine(cfg, steps, parts)[conv_t][0]
        row["rel_diff"] = float((got - want).abs().max() / want.abs().max())
    return row


def fmt_table(rows, conv: bool) -> str:
    if conv:
        head = ("| N | C | H | W | P | scales | topk | conv s/(q·t) | fast s/(q·t) | ratio (wall) | ratio (CPU) "
                "| max rel. diff | conv peak RSS MB | fast peak RSS MB | fast timed on |")
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            lines.append(
                f"| {r['N']} | {r['C']} | {r['H']} | {r['W']} | {r['P']} | {r['scales']} | {r['topk']} "
                f"| {r['conv_s']:.2f} | {r['fast_s']:.3f} | {r['conv_s'] / r['fast_s']:.1f}× "
                f"| {r['conv_cpu'] / r['fast_cpu']:.1f}× | {r['rel_diff']:.1e} | {r['conv_mb']:.0f} "
                f"| {r['fast_mb']:.0f} | {r['fast_qt']} q×t |")
    else:
        head = "| N | C | H | W | P | scales | topk | fast s/(q·t) | µs/(q·t·image) | fast peak RSS MB | timed on |"
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            lines.append(
                f"| {r['N']} | {r['C']} | {r['H']} | {r['W']} | {r['P']} | {r['scales']} | {r['topk']} "
                f"| {r['fast_s']:.3f} | {1e6 * r['fast_s'] / r['N']:.0f} | {r['fast_mb']:.0f} | {r['fast_qt']} q×t |")
    return "\n".join(lines)


def rss_probe(N: int, budget_mb: int, queries: int) -> None:
    """Child process: peak RSS (ru_maxrss) growth of one fast-engine call, printed as MB."""
    import resource

    big = fmnist_rgb(N + queries, seed=0)
    cfg = NDAConfig(patch_size=7)
    steps = steps_for(cfg, (3, 32, 32), (500,))
    eng = make_engine("fast", torch.float32, torch.device("cpu"), budget_mb)
    eng.score_steps(big[:1], big[queries:queries + 8], steps, cfg.topk, cfg.border)  # warm-up (libraries)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    eng.score_steps(big[:queries], big[queries:], steps, cfg.topk, cfg.border)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{(after - before) / 1024:.0f} {after / 1024:.0f}")


def memory_table(sizes, budget_mb: int, queries: int) -> str:
    """Peak RSS of the fast engine per N, each in a fresh process (an allocator keeps freed pages,
    so growth measured inside one long process understates later cases)."""
    import subprocess

    lines = ["| N | fast peak RSS growth MB | process peak RSS MB |", "|---|---|---|"]
    for N in sizes:
        res = subprocess.run([sys.executable, __file__, "--rss-probe", str(N), "--budget-mb", str(budget_mb),
                              "--fast-queries", str(queries)], capture_output=True, text=True, check=True)
        growth, peak = res.stdout.split()[-2:]
        lines.append(f"| {N} | {growth} | {peak} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes, under a minute")
    ap.add_argument("--fast-queries", type=int, default=None, help="queries the fast engine is timed on")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--budget-mb", type=int, default=1024, help="memory budget of both engines")
    ap.add_argument("--only", default=None, help="comma-separated case names to run")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) to this file")
    ap.add_argument("--rss-probe", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--memory-only", action="store_true", help="only the per-N peak-RSS table")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_probe:
        rss_probe(args.rss_probe, args.budget_mb, args.fast_queries or 4)
        return
    quick = args.quick
    fq = args.fast_queries or (2 if quick else 8)
    sizes = (100,) if quick else (1000, 5000)
    scaling = (100, 200, 400) if quick else (1000, 2000, 4000, 8000)
    only = set(args.only.split(",")) if args.only else None
    want = lambda name: only is None or name in only  # noqa: E731

    header = [f"# engine_speed ({'quick' if quick else 'full'})", "",
              f"command: `python {' '.join(['benchmarks/engine_speed.py', *sys.argv[1:]])}`",
              f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
              f"{torch.__version__}, {torch.get_num_threads()} torch threads, budget {args.budget_mb} MB, float32", ""]
    print("\n".join(header), flush=True)
    out = list(header)
    big = fmnist_rgb(max(*sizes, *scaling) + 16, seed=0)
    queries, train_all = big[:16], big[16:]
    single = NDAConfig(patch_size=7)
    two = NDAConfig(patch_size=7, down_patch_size=14)

    rows = []
    if args.memory_only:
        only = set()
    for N in sizes:
        for nm, cfg in (("p7", single), ("p7down14", two)):
            name = f"{nm}-{N}"
            if not want(name):
                continue
            rows.append(run_case(name, queries, train_all[:N], cfg, fq, True, args.budget_mb))
            print(fmt_table(rows[-1:], True).splitlines()[-1], flush=True)
    if want("fmnist2"):
        q16, t16 = fmnist2(200 if quick else 1000, 16)
        rows.append(run_case("fmnist2", q16, t16, NDAConfig(), fq, True, args.budget_mb))
        print(fmt_table(rows[-1:], True).splitlines()[-1], flush=True)
    if rows:
        text = "## conv vs fast, side by side\n\n" + fmt_table(rows, True)
        print("\n" + text + "\n", flush=True)
        out += [text, ""]

    srows = []
    for N in scaling:
        if not want(f"scale-{N}"):
            continue
        srows.append(run_case(f"scale-{N}", queries, train_all[:N], single, 4 if not quick else 1, False,
                              args.budget_mb))
        print(fmt_table(srows[-1:], False).splitlines()[-1], flush=True)
    if srows:
        text = "## fast engine scaling in N (P = 7, one scale)\n\n" + fmt_table(srows, False)
        print("\n" + text + "\n", flush=True)
        out += [text, ""]
    msizes = (200, 400, 800) if quick else (1000, 2000, 4000, 8000)
    text = ("## fast engine peak RSS in N (fresh process per N; 4 queries × t = 500, P = 7; "
            "ru_maxrss growth over a warm-up call)\n\n" + memory_table(msizes, args.budget_mb, 4 if not quick else 2))
    print("\n" + text + "\n", flush=True)
    out += [text, ""]
    if args.out:
        Path(args.out).write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
