"""``nda bench``: build LDS benchmarks and score attribution methods on them.

Methods are looked up in :data:`METHODS`, a registry ``name -> fn(bench, queries, config) -> (Q, N)``
(called once per query split; ``config`` is the parsed ``--config`` JSON dict or ``{}``). Register
more with :func:`register_method`.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Callable

import click
import numpy as np

MethodFn = Callable[..., np.ndarray]
METHODS: dict[str, MethodFn] = {}


def register_method(name: str, fn: MethodFn | None = None):
    """Register ``fn(bench, queries, config) -> scores (Q, N)`` under ``name`` (usable as a decorator)."""

    def deco(f):
        METHODS[name] = f
        return f

    return deco(fn) if fn is not None else deco


@register_method("nda")
def _method_nda(bench, queries, config):
    import nda

    cfg = nda.NDAConfig.from_dict(config) if config else nda.NDAConfig()
    return np.asarray(nda.score(bench.train, queries, cfg))


@register_method("random")
def _method_random(bench, queries, config):
    """I.i.d. standard-normal scores, ``np.random.default_rng(config.get("seed", 0))``."""
    rng = np.random.default_rng(int(config.get("seed", 0)))
    return rng.standard_normal((len(queries), len(bench.train)))


def _load_baselines() -> None:
    """Register the baseline methods (a lazy import: the baselines import this module's registry)."""
    import nda.eval.baselines  # noqa: F401


def evaluate(bench, method: str, config: dict | None = None, splits=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Score ``bench``'s query splits with ``method`` and compute their LDS; returns a JSON-able dict."""
    _load_baselines()
    from .lds import lds

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    config = dict(config or {})
    splits = list(splits or bench.queries)
    out = {
        "benchmark": bench.name,
        "method": method,
        "config": config,
        "n_models": bench.n_models,
        "n_subsets_total": int(len(bench.all_subsets)),
        "complete": bench.complete,
    }
    for split in splits:
        if split not in bench.queries:
            raise ValueError(f"unknown split {split!r}; available: {', '.join(bench.queries)}")
        t0 = time.perf_counter()
        scores = METHODS[method](bench, bench.queries[split], config)
        t1 = time.perf_counter()
        scores = np.asarray(scores, dtype=np.float64)
        expect = (len(bench.queries[split]), len(bench.train))
        if scores.shape != expect:
            raise ValueError(f"method {method!r} returned scores of shape {scores.shape}, expected {expect}")
        r = lds(scores, bench.subsets, bench.outputs[split], n_boot=n_boot, seed=seed)
        out[split] = {**r.to_dict(), "score_seconds": round(t1 - t0, 3)}
    return out


EXIT_USER_ERROR = 2


class _BenchGroup(click.Group):
    """Bad input (ValueError incl. NDAError, missing files, protocol mismatch) -> one line, exit 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise  # click's own control flow (--help, usage errors); Exit is a RuntimeError
        except (ValueError, RuntimeError, KeyError, FileNotFoundError, PermissionError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(f"error: {msg}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted; finished models are kept, rerun the same command to resume", err=True)
            ctx.exit(130)


@click.group("bench", cls=_BenchGroup)
def bench():
    """LDS benchmarks: build them, and measure attribution methods on them."""


@bench.command("build")
@click.argument("name", default="fmnist2")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="results dir (default: the package's data/<name>)")
@click.option("--work", type=click.Path(file_okay=False), default=None, help="model-weights dir (default: runs/<name>)")
@click.option("--max-models", type=int, default=None, help="train at most this many models in this call")
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads")
@click.option("--seeds", default=None, help="model seeds per subset, comma-separated (default 0)")
def build_cmd(name, root, work, max_models, threads, seeds):
    """Build, or resume, benchmark NAME (fmnist2, micro). Safe to kill and rerun."""
    from .benchmarks import SPECS, build

    if name not in SPECS:
        raise click.ClickException(f"unknown benchmark {name!r}; known: {', '.join(sorted(SPECS))}")
    try:
        s = tuple(int(x) for x in seeds.split(",")) if seeds else None
    except ValueError:
        raise click.ClickException(f"--seeds must be comma-separated integers, got {seeds!r}")
    man = build(name, root=root, work=work, max_models=max_models, threads=threads, seeds=s)
    p = man["progress"]
    click.echo(f"{name}: {p['n_done']} models done (complete: {p['complete']})")


@bench.command("lds")
@click.option("--benchmark", "name", default="fmnist2", show_default=True)
@click.option("--method", required=True, help="attribution method (registry name, e.g. nda, random)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="JSON file of method options")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="benchmark results dir")
@click.option("--split", "splits", multiple=True, help="query split(s); default all")
@click.option("--n-boot", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON (LDS as fractions)")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="also write the JSON result here")
def lds_cmd(name, method, config_path, root, splits, n_boot, as_json, out):
    """LDS of METHOD's scores on a benchmark, with 95% bootstrap CIs over subsets."""
    _load_baselines()
    from .benchmarks import load

    config = {}
    if config_path:
        try:
            with open(config_path) as f:
                config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path} is not valid JSON ({e}); give a JSON object of NDAConfig fields")
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: the config must be a JSON object of method options")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    b = load(name, root=root)
    if b.n_models < 3:
        raise ValueError(f"benchmark {name!r} has only {b.n_models} finished subset models; build more first (nda bench build {name})")
    res = evaluate(b, method, config, splits=splits or None, n_boot=n_boot)
    text = json.dumps(res, indent=None if as_json else 2)
    if out:
        with open(out, "w") as f:
            f.write(json.dumps(res, indent=2) + "\n")
    if as_json:
        click.echo(text)
        return
    click.echo(f"benchmark {res['benchmark']}  method {res['method']}  subset models {res['n_models']}/{res['n_subsets_total']}"
               + ("" if res["complete"] else "  (build incomplete)"))
    click.echo(f"{'split':<8}{'LDS %':>8}  {'95% CI':<18}{'queries':>8}{'undef':>7}{'score s':>9}")
    for split in [k for k in res if isinstance(res[k], dict) and "lds" in res[k]]:
        r = res[split]
        click.echo(
            f"{split:<8}{100 * r['lds']:>8.2f}  [{100 * r['ci'][0]:6.2f}, {100 * r['ci'][1]:6.2f}]  "
            f"{r['n_queries']:>7}{r['n_undefined']:>7}{r['score_seconds']:>9.2f}"
        )


if __name__ == "__main__":
    bench(sys.argv[1:])
