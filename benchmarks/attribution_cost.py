#!/usr/bin/env python
"""NDA vs TRAK-type cost, side by side in one process (1 thread), on the FMNIST-2 benchmark.

    python benchmarks/attribution_cost.py [--images 32] [--queries 100]

Measures process CPU time (robust to other jobs on a shared machine) of
* NDA's default config scoring ``--queries`` calib queries against the 1000 training images, and
* the TRAK/D-TRAK gradient-feature pass (both outputs, k = 2048) over ``--images`` training images,
  with 10 and with 100 timesteps (the pass every TRAK-type method needs for train + queries),
then extrapolates both linearly to the whole benchmark job (300 queries; 1000 + 300 images).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--queries", type=int, default=100)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    import nda
    from nda.benchmarks import load
    from nda.eval.baselines.common import full_model
    from nda.eval.baselines.trak import K_MAX, OUTPUTS, _protocol, featurize

    b = load("fmnist2")
    q = b.queries["calib"][: a.queries]
    t0 = time.process_time()
    nda.score(b.train, q, nda.NDAConfig())
    nda_cpu = (time.process_time() - t0) / len(q)
    model, _ = full_model(b)
    x = b.train[: a.images]
    out = {"nda_cpu_s_per_query": nda_cpu}
    for n_t in (10, 100):
        sets = _protocol(n_t, 0, 0, K_MAX)["sets"]
        t0 = time.process_time()
        featurize(model, x, {f"T{n_t}": sets[f"T{n_t}"]}, OUTPUTS, k=K_MAX)
        out[f"trak{n_t}_cpu_s_per_image"] = (time.process_time() - t0) / len(x)
    n_q, n_img = sum(len(v) for v in b.queries.values()), len(b.train) + sum(len(v) for v in b.queries.values())
    out["nda_job_cpu_s"] = nda_cpu * n_q
    for n_t in (10, 100):
        out[f"trak{n_t}_job_cpu_s"] = out[f"trak{n_t}_cpu_s_per_image"] * n_img
        out[f"trak{n_t}_over_nda"] = out[f"trak{n_t}_job_cpu_s"] / out["nda_job_cpu_s"]
    print(json.dumps({k: round(v, 3) for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
