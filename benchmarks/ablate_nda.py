#!/usr/bin/env python
"""Patch-size / timestep / scale ablation of NDA on an LDS benchmark: the evidence behind the defaults.

    python benchmarks/ablate_nda.py --benchmark fmnist2 --threads 1            # grid on calib, choose
    python benchmarks/ablate_nda.py --benchmark fmnist2 --splits calib,val,gen  # + candidates on val/gen
    python benchmarks/ablate_nda.py --benchmark micro --root runs/micro_bench --quick

Because τ = mean over t of τ_t, and τ_t = γ_t·τ_t^single(P_t) + (1−γ_t)·τ_t^down(P′_t) is linear in
the two per-scale scores, one engine pass per (scale, size) over a grid of timesteps gives the
score of *every* schedule on that grid: a schedule's scores are a mean of cached per-timestep
slices (equal to running ``nda.score`` with that schedule, up to float rounding — checked at the
end of the run). So the script

1. scores each split once per (scale, size) over the timestep grid (cached under ``--cache``);
2. prints the LDS of each (t, P) alone, single scale and 2×2-block scale — on calib (and with
   ``--full-grid`` on the other splits too, for transparency; choices never look at them);
3. chooses on calib: the best constant P on the default timesteps; the best constant two-scale
   setting (P, P′, γ); the best non-decreasing schedule P_t (exhaustive); and, in order, a per-timestep schedule P_t (coordinate ascent from the
   constant P), the timestep set among a few candidates, then a second scale per timestep
   (P′_t, γ_t ∈ {0.25, 0.5, 0.75}, coordinate ascent) — the per-timestep schedules show how much
   the extra freedom buys on calib (and how much of it survives on val/gen);
4. reports every candidate's LDS (95 % CI) on every scored split, and writes a JSON with the
   chosen configs and a heatmap of the (t, P) grid (``--plot``).

Choices are made on calib only; val and gen numbers of the chosen configs are what we report.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# the grid: ~0.15-0.35 CPU-s per (query, t, size) on a 16×16 benchmark with N = 1000
T_GRID = (50, 100, 200, 300, 400, 500)
SINGLE_SIZES = (3, 5, 7, 9, 11, 13, 15)
DOWN_SIZES = (4, 6, 8, 10, 12, 14)
GAMMAS = (0.25, 0.5, 0.75)
DEFAULT_T = (100, 200, 300, 400, 500)
T_CANDIDATES = (DEFAULT_T, (50, 100, 200, 300, 400), (50, 100, 200, 300, 400, 500), (100, 200, 300), (50, 100, 200))


def _slice_config(kind: str, size: int, ts):
    import nda

    if kind == "single":
        return nda.NDAConfig(timesteps=ts, patch_size=size)
    # γ = 0: the 2×2-block scale alone (the single scale is then not computed)
    return nda.NDAConfig(timesteps=ts, patch_size=3, down_patch_size=size, gamma=0.0)


def per_timestep_scores(bench, split: str, kind: str, size: int, ts, cache: Path) -> dict:
    """{t: (Q, N) τ_t} of one scale and size for every t in ``ts``; one file per t under ``cache``.

    Missing timesteps are scored in one engine pass (they share the ⟨x, z⟩ products).
    """
    import nda
    from nda.eval.baselines.common import sha

    q = bench.queries[split]
    tag = f"{bench.name}_{split}_{sha(q)[:10]}_{sha(bench.train)[:10]}"
    path = {t: cache / f"{tag}_{kind}{size}_t{t}_{_slice_config(kind, size, (t,)).score_fingerprint()[:10]}.npy" for t in ts}
    missing = [t for t in ts if not path[t].exists()]
    if missing:
        t0 = time.perf_counter()
        res = nda.NDAIndex.build(bench.train, _slice_config(kind, size, tuple(missing))).attribute(q)
        cache.mkdir(parents=True, exist_ok=True)
        for t, s in zip(res.timesteps, res.per_timestep):
            tmp = path[t].with_name(path[t].stem + f".tmp{os.getpid()}.npy")
            np.save(tmp, s.astype(np.float32))
            os.replace(tmp, path[t])
        print(f"  scored {split:5s} {kind:6s} P={size:2d} at t={missing} in {time.perf_counter() - t0:.0f}s",
              file=sys.stderr, flush=True)
    return {t: np.load(path[t]) for t in ts}


class Grid:
    """Per-timestep scores of one split, scored on first use and cached; combines them into any
    schedule's scores."""

    def __init__(self, bench, split, t_grid, cache):
        self.bench, self.split, self.t_grid, self.cache = bench, split, tuple(t_grid), cache
        self.slices: dict = {}
        self.subsets, self.outputs = bench.subsets, bench.outputs[split]

    def slice(self, kind: str, size: int, t: int) -> np.ndarray:
        if (kind, size) not in self.slices:
            self.slices[(kind, size)] = per_timestep_scores(self.bench, self.split, kind, size, self.t_grid, self.cache)
        return self.slices[(kind, size)][t]

    def scores(self, sched: dict) -> np.ndarray:
        """(Q, N) scores of ``sched`` = {t: (P, P′ or None, γ)}."""
        acc = None
        for t, (p, pd, g) in sched.items():
            s = g * self.slice("single", p, t).astype(np.float64) if g > 0 else 0.0
            if pd is not None and g < 1:
                s = s + (1 - g) * self.slice("down", pd, t).astype(np.float64)
            acc = s if acc is None else acc + s
        return acc / len(sched)

    def lds(self, sched: dict, n_boot: int = 0):
        from nda.eval.lds import lds

        return lds(self.scores(sched), self.subsets, self.outputs, n_boot=n_boot, seed=0)

    def heatmap(self, single, down) -> dict:
        """LDS of every (t, P) alone: {"single": [[..]] (T, len(single)), "down": (T, len(down))}."""
        return {"single": [[self.lds(const([t], p)).mean for p in single] for t in self.t_grid],
                "down": [[self.lds(const([t], 3, pd, 0.0)).mean for pd in down] for t in self.t_grid]}


def const(ts, p, pd=None, g=1.0) -> dict:
    return {t: (p, pd, g) for t in ts}


def ascend(grid: Grid, sched: dict, options_at, rounds: int = 3) -> dict:
    """Coordinate ascent of calib LDS: one timestep's setting at a time, until nothing improves."""
    best = grid.lds(sched).mean
    for _ in range(rounds):
        improved = False
        for t in list(sched):
            for opt in options_at(t, sched[t]):
                if opt == sched[t]:  # options may include the current setting
                    continue
                trial = {**sched, t: opt}
                v = grid.lds(trial).mean
                if v > best + 1e-9:
                    best, sched, improved = v, trial, True
        if not improved:
            break
    return sched


def to_config(sched: dict) -> dict:
    """An ``NDAConfig.from_dict`` dict for a schedule (constant fields collapsed to scalars)."""
    ts = sorted(sched)
    ps = {t: sched[t][0] for t in ts}
    pds = {t: sched[t][1] for t in ts}
    gs = {t: sched[t][2] for t in ts}

    def collapse(d):
        vals = set(d.values())
        return next(iter(vals)) if len(vals) == 1 else {str(t): v for t, v in d.items()}

    cfg = {"timesteps": ts, "patch_size": collapse(ps)}
    if any(v is not None for v in pds.values()):
        cfg["down_patch_size"] = collapse(pds)
        cfg["gamma"] = collapse(gs)
    return cfg


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmark", default="fmnist2")
    ap.add_argument("--root", default=None)
    ap.add_argument("--splits", default="calib", help="splits to score (calib always; choices use calib only)")
    ap.add_argument("--cache", default="runs/ablation")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a 3×3 grid (tests, micro benchmark)")
    ap.add_argument("--full-grid", action="store_true",
                    help="also score the whole (t, P) grid on the other splits (otherwise they score only "
                         "what the chosen candidates use)")
    ap.add_argument("--json", default=None, help="write the full results here")
    ap.add_argument("--plot", default=None, help="write a (t, P) heatmap of calib LDS here (.png)")
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    import nda
    from nda.benchmarks import load

    b = load(a.benchmark, root=a.root)
    if b.n_models < 3:
        raise SystemExit(f"{a.benchmark} has {b.n_models} finished subset models; need at least 3")
    t_grid, single, down = (T_GRID, SINGLE_SIZES, DOWN_SIZES) if not a.quick else ((100, 300, 500), (3, 5), (4,))
    t_cands = T_CANDIDATES if not a.quick else ((100, 300, 500), (100, 300))
    default_t = tuple(t for t in DEFAULT_T if t in t_grid)
    splits = ["calib"] + [s for s in a.splits.split(",") if s and s != "calib"]
    cache = Path(a.cache)
    grids = {s: Grid(b, s, t_grid, cache) for s in splits}
    g = grids["calib"]

    # 2. every (t, P) alone: on calib always, on the other splits with --full-grid
    heat = {s: grids[s].heatmap(single, down) for s in (splits if a.full_grid else ["calib"])}

    # 3. choices on calib
    cands = {}
    # the default config as a schedule on the grid (its "auto" sizes for these images); nda.score
    # only where its timesteps are off the grid
    dflt = nda.NDAConfig().resolve(*b.train.shape[-2:])
    on_grid = set(dflt.timesteps) <= set(t_grid)
    cands["default (NDAConfig())"] = {t: (dflt.patch_at(t), None, 1.0) for t in dflt.timesteps} if on_grid else None
    const_lds = {p: g.lds(const(default_t, p)).mean for p in single}
    p0 = max(const_lds, key=const_lds.get)
    cands[f"constant P={p0}"] = const(default_t, p0)
    # the same settings at every timestep, two scales: (P, P′, γ) over the whole grid
    two_const = {(p, pd, gm): g.lds(const(default_t, p, pd, gm)).mean for p in single for pd in down for gm in GAMMAS}
    pc = max(two_const, key=two_const.get)
    cands[f"constant two scales P={pc[0]}, P′={pc[1]}, γ={pc[2]}"] = const(default_t, *pc)
    # P_t non-decreasing in t (the paper: the best patch grows with the noise level), exhaustively
    mono = max((g.lds({t: (p, None, 1.0) for t, p in zip(default_t, ps)}).mean, ps)
               for ps in itertools.combinations_with_replacement(single, len(default_t)))
    cands["non-decreasing P_t (exhaustive)"] = {t: (p, None, 1.0) for t, p in zip(default_t, mono[1])}
    sched = ascend(g, const(default_t, p0), lambda t, cur: [(p, None, 1.0) for p in single])
    cands["per-timestep P_t"] = sched
    # timestep set: each candidate set with the per-t best P of the schedule (nearest t where new)
    best_p_at = {t: single[int(np.argmax(heat["calib"]["single"][i]))] for i, t in enumerate(t_grid)}
    t_rows = []
    for ts in t_cands:
        s_t = {t: sched.get(t, (best_p_at[t], None, 1.0)) for t in ts}
        s_t = ascend(g, s_t, lambda t, cur: [(p, None, 1.0) for p in single])
        t_rows.append((g.lds(s_t).mean, ts, s_t))
    best_ts = max(t_rows, key=lambda r: r[0])
    cands["per-timestep P_t, timesteps chosen"] = best_ts[2]
    base = best_ts[2]
    # start from the better of "γ = 0.5 everywhere" and the single-scale schedule; γ = 1 stays an
    # option at every t, so the result is never below the single-scale schedule on calib
    two0 = {t: (p, down[len(down) // 2], 0.5) for t, (p, _, _) in base.items()}
    start = two0 if g.lds(two0).mean > g.lds(base).mean else base

    def two_opts(t, cur):
        opts = [(cur[0], pd, gm) for pd in down for gm in GAMMAS] + [(p, cur[1], cur[2]) for p in single]
        return [o if o[2] < 1 else (o[0], None, 1.0) for o in opts + [(cur[0], None, 1.0)]]

    two = ascend(g, start, two_opts)
    cands["two scales (P_t, P′_t, γ_t)"] = two

    # 4. every candidate on every split, with CIs
    from nda.eval.lds import lds

    rows = []
    for name, sch in cands.items():
        row = {"name": name, "config": to_config(sch) if sch is not None else dflt.to_dict(), "splits": {}}
        for s in splits:
            if sch is None:
                sc = nda.score(b.train, b.queries[s], dflt)
                r = lds(sc, b.subsets, b.outputs[s], n_boot=a.n_boot, seed=0)
            else:
                r = grids[s].lds(sch, n_boot=a.n_boot)
            row["splits"][s] = r.to_dict()
        rows.append(row)
    # the combination identity, checked on the winner: cached slices == a fresh nda.score run
    chk_cfg = nda.NDAConfig.from_dict(to_config(two))
    direct = nda.score(b.train, b.queries["calib"][:8], chk_cfg)
    combined = g.scores(two)[:8]
    rel = float(np.abs(direct - combined).max() / max(np.abs(direct).max(), 1e-30))

    out = {
        "benchmark": b.name, "n_models": b.n_models, "n_subsets_total": int(len(b.all_subsets)),
        "t_grid": list(t_grid), "single_sizes": list(single), "down_sizes": list(down), "splits": splits,
        "heatmap": heat, "constant_P_calib": {str(k): v for k, v in const_lds.items()},
        "timestep_sets_calib": [{"timesteps": list(ts), "lds": v, "config": to_config(s)} for v, ts, s in t_rows],
        "candidates": rows, "combination_check_max_rel_diff": rel,
    }
    print_tables(out)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1))
    if a.plot:
        plot(out, a.plot)
    return out


def print_tables(out: dict) -> None:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    print(f"**{out['benchmark']}**: NDA ablation, LDS (%) over {out['n_models']} of {out['n_subsets_total']} subset models; "
          f"choices made on calib only\n")
    for s in out["heatmap"]:
        for kind, sizes in (("single", out["single_sizes"]), ("down", out["down_sizes"])):
            print(f"{s}: one timestep, {kind} scale — LDS % by t (rows) and {'P' if kind == 'single' else 'P′'} (columns)\n")
            print("| t | " + " | ".join(str(p) for p in sizes) + " |")
            print("|---" * (len(sizes) + 1) + "|")
            for t, vals in zip(out["t_grid"], out["heatmap"][s][kind]):
                best = int(np.argmax(vals))
                print(f"| {t} | " + " | ".join(("**" + pct(v) + "**") if i == best else pct(v) for i, v in enumerate(vals)) + " |")
            print()
    print("calib: constant P on the default timesteps: "
          + ", ".join(f"P={k}: {pct(v)}" for k, v in out["constant_P_calib"].items()) + "\n")
    print("calib: timestep sets (per-timestep P_t chosen for each): "
          + "; ".join(f"{r['timesteps']}: {pct(r['lds'])}" for r in out["timestep_sets_calib"]) + "\n")
    splits = out["splits"]
    print("| candidate | config | " + " | ".join(f"{s} LDS % [95% CI]" for s in splits) + " |")
    print("|---|---|" + "---|" * len(splits))
    for r in out["candidates"]:
        cfg = {k: r["config"][k] for k in ("timesteps", "patch_size", "down_patch_size", "gamma") if r["config"].get(k) is not None}
        cells = [f"{pct(r['splits'][s]['lds'])} [{pct(r['splits'][s]['ci'][0])}, {pct(r['splits'][s]['ci'][1])}]" for s in splits]
        print(f"| {r['name']} | `{json.dumps(cfg)}` | " + " | ".join(cells) + " |")
    print(f"\ncached-slice combination vs a fresh nda.score run: max relative difference {out['combination_check_max_rel_diff']:.1e}")


def plot(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, kind, sizes in ((axes[0], "single", out["single_sizes"]), (axes[1], "down", out["down_sizes"])):
        h = 100 * np.asarray(out["heatmap"]["calib"][kind])
        im = ax.imshow(h, aspect="auto", cmap="viridis", origin="lower")
        ax.set_xticks(range(len(sizes)), [str(p) for p in sizes])
        ax.set_yticks(range(len(out["t_grid"])), [str(t) for t in out["t_grid"]])
        ax.set_xlabel("patch size P" if kind == "single" else "patch size P′ (2×2-block scale)")
        ax.set_ylabel("timestep t")
        for i in range(h.shape[0]):
            for j in range(h.shape[1]):
                bright = h[i, j] > (h.min() + h.max()) / 2  # dark text on the bright end of viridis
                ax.text(j, i, f"{h[i, j]:.0f}", ha="center", va="center", color="k" if bright else "w", fontsize=8)
        ax.set_title(f"{kind} scale: calib LDS % of τ_t alone")
        fig.colorbar(im, ax=ax)
    fig.suptitle(f"NDA on {out['benchmark']} ({out['n_models']} subset models)")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
