#!/usr/bin/env python
"""LDS table of every attribution method on an LDS benchmark (issue 5).

    python benchmarks/lds_table.py --benchmark fmnist2                 # all methods
    python benchmarks/lds_table.py --benchmark micro --root runs/micro_bench --quick
    python benchmarks/lds_table.py --methods nda,pixel-cos,dtrak-10 --json out.json

For each method: LDS (%) with a 95 % bootstrap CI over subsets on every query split (val, gen,
calib — calib is the split hyperparameters are chosen on, so its numbers are optimistic), the
method's wall time and peak memory, and the ratio of its time to NDA's. Each method runs in its
own subprocess (so its peak RSS is its own; ``ru_maxrss`` includes the ~0.3–0.5 GB of Python +
torch). TRAK-type methods cache their projected gradient features under runs/baselines/: their
time column is the *cold* cost — the feature passes they need (recorded when the features were
computed, possibly in an earlier run; one pass serves trak and dtrak, and the 100-timestep pass
also serves the 10-timestep methods) plus this run's scoring time — and the "cached" column says
whether this run reused features.

It works with however many subset models the benchmark has finished (at least 3): the header
says how many the numbers rest on.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ALL = ("random", "pixel-dot", "pixel-cos", "embed-dot", "embed-cos", "trak-10", "trak-100", "dtrak-10", "dtrak-100",
       "nda", "nda-single", "nda-two")
QUICK_SKIP = ("trak-100", "dtrak-100")


def run_one(args) -> dict:
    """Score one method on every split in this process; returns a JSON-able dict."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import nda.eval.baselines  # noqa: F401  (registers the methods)
    from nda.benchmarks import load
    from nda.eval.baselines import trak as TR
    from nda.eval.cli_bench import METHODS
    from nda.eval.lds import lds

    b = load(args.benchmark, root=args.root)
    config = json.loads(args.config) if args.config else {}
    out = {"method": args.one, "n_models": b.n_models, "n_subsets_total": int(len(b.all_subsets)), "splits": {}}
    score_s = 0.0
    # calib first: the TRAK methods choose (k, λ) on it; the other splits then only score
    splits = sorted(b.queries, key=lambda s: s != "calib")
    for split in splits:
        t0 = time.perf_counter()
        s = np.asarray(METHODS[args.one](b, b.queries[split], config), dtype=np.float64)
        dt = time.perf_counter() - t0
        score_s += dt
        r = lds(s, b.subsets, b.outputs[split], n_boot=args.n_boot, seed=0)
        out["splits"][split] = {"lds": r.mean, "ci": list(r.ci), "n_queries": r.n_queries, "n_undefined": r.n_undefined,
                                "seconds": round(dt, 3)}
    out["seconds_this_run"] = round(score_s, 4)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if TR.FEATURE_LOG:
        # cold cost: each distinct feature file once (train + each query split), as recorded when computed
        files = {}
        for e in TR.FEATURE_LOG:
            files.setdefault(e["file"] or e["images_sha"], e)
        feat_s = sum(float(e["seconds"] or 0) for e in files.values())
        cached = all(e["cached"] for e in TR.FEATURE_LOG)
        fresh_s = sum(float(e["seconds"] or 0) for e in files.values() if not e["cached"])
        out["feature_seconds_cold"] = round(feat_s, 2)
        cpu = [e.get("cpu_seconds") for e in files.values()]
        # process CPU time of the same passes (None where a cache file predates it)
        out["feature_cpu_seconds_cold"] = None if any(c is None for c in cpu) else round(sum(cpu), 2)
        out["features_cached"] = cached
        # scoring time proper = this run's time minus the features computed during it
        out["seconds"] = round(feat_s + max(score_s - fresh_s, 0.0), 2)
        out["peak_rss_mb"] = max(out["peak_rss_mb"], max(float(e["peak_rss_mb"] or 0) for e in files.values()))
        cp = TR._choice_path(b, config)
        if cp is not None and cp.exists():
            out["choice"] = {k: v for k, v in json.loads(cp.read_text()).get(args.one, {}).items() if k != "grid"}
    else:
        out["seconds"] = round(score_s, 4)
    return out


def fmt_table(results: list, bench_name: str, n_models: int, n_total: int, splits: list) -> str:
    nda_t = next((r["seconds"] for r in results if r["method"] == "nda"), None)
    lines = [f"**{bench_name}**: LDS (%) with 95 % bootstrap CI over **{n_models} of {n_total}** subset models"
             + (" (build incomplete)" if n_models < n_total else ""), ""]
    head = "| method | " + " | ".join(f"{s} LDS % [95% CI]" for s in splits) + " | time (s) | × NDA time | peak RSS (MB) |"
    lines += [head, "|" + "---|" * (len(splits) + 4)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | " + " | ".join("error" for _ in splits) + f" | – | – | – |  <!-- {r['error'][:120]} -->")
            continue
        cells = []
        for s in splits:
            v = r["splits"].get(s)
            cells.append("–" if v is None else f"{100 * v['lds']:.1f} [{100 * v['ci'][0]:.1f}, {100 * v['ci'][1]:.1f}]")
        t = r["seconds"]
        ratio = f"{t / nda_t:.2g}" if nda_t else "–"
        tt = (f"{t:.2g}" if t < 10 else f"{t:.0f}") + (" (feats cached)" if r.get("features_cached") else "")
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {tt} | {ratio} | {r['peak_rss_mb']:.0f} |")
    notes = [r for r in results if r.get("choice")]
    if notes:
        lines += ["", "TRAK hyperparameters chosen on calib: " + "; ".join(
            f"{r['method']}: k={r['choice'].get('k')}, λ_rel={r['choice'].get('lam')} ({r['choice'].get('source')})" for r in notes)]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmark", default="fmnist2")
    ap.add_argument("--root", default=None, help="benchmark results dir (default: the package's data/<name>)")
    ap.add_argument("--methods", default=None, help="comma-separated (default: all)")
    ap.add_argument("--quick", action="store_true", help="skip the 100-timestep TRAK methods, 200 bootstrap samples")
    ap.add_argument("--n-boot", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", default=None, help="JSON dict of method options passed to every method")
    ap.add_argument("--jobs", type=int, default=1, help="methods run side by side (default 1: one at a time)")
    ap.add_argument("--json", dest="json_out", default=None, help="write all results to this JSON file")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.n_boot is None:
        args.n_boot = 200 if args.quick else 1000
    if args.one:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return 0

    import nda.eval.baselines  # noqa: F401
    from nda.benchmarks import load
    from nda.eval.cli_bench import METHODS

    methods = [m.strip() for m in args.methods.split(",")] if args.methods else [m for m in ALL if not (args.quick and m in QUICK_SKIP)]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"error: unknown method(s) {unknown}; available: {', '.join(sorted(METHODS))}", file=sys.stderr)
        return 2
    b = load(args.benchmark, root=args.root)
    if b.n_models < 3:
        print(f"error: {args.benchmark} has only {b.n_models} finished subset models; at least 3 are needed", file=sys.stderr)
        return 2
    splits = [s for s in ("val", "gen", "calib") if s in b.queries]
    print(f"# {b!r}", file=sys.stderr)
    def run(m):
        cmd = [sys.executable, os.path.abspath(__file__), "--one", m, "--benchmark", args.benchmark, "--n-boot", str(args.n_boot),
               "--threads", str(args.threads)]
        if args.root:
            cmd += ["--root", args.root]
        if args.config:
            cmd += ["--config", args.config]
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if p.returncode != 0 or line is None:
            err = (p.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"  {m}: FAILED ({err})", file=sys.stderr, flush=True)
            return {"method": m, "error": err}
        r = json.loads(line[len("RESULT "):])
        print(f"  {m}: " + ", ".join(f"{s} {100 * v['lds']:.1f}" for s, v in r["splits"].items()) + f"  ({time.time() - t0:.0f}s)",
              file=sys.stderr, flush=True)
        return r

    # --jobs > 1 runs methods side by side (each in its own process, so peak RSS stays per method;
    # wall times then include contention for the cores)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(run, methods))
    table = fmt_table(results, args.benchmark, b.n_models, len(b.all_subsets), splits)
    print(table)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"benchmark": args.benchmark, "n_models": b.n_models, "n_subsets_total": int(len(b.all_subsets)),
                       "argv": sys.argv[1:] if argv is None else list(argv), "jobs": args.jobs, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
