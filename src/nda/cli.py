"""The `nda` command: a thin layer over the Python API.

Every error a user can cause ends as one readable line on stderr and a non-zero exit code (2);
results are written atomically, so a failed run never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from .attribution import AttributionResult, NDAIndex
from .config import BORDERS, DTYPES, ENGINES, DEVICES, NDAConfig
from .errors import NDAError

EXIT_USER_ERROR = 2


class _Group(click.Group):
    """Turns `NDAError` (and unreadable files) into one line + exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NDAError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            click.echo(f"error: {exc.strerror}: {exc.filename}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted; no results written", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="nda")
def main() -> None:
    """Nonparametric data attribution for diffusion models.

    Which training images shaped an image a diffusion model made — and where — from the data alone.

    \b
    Examples:
      nda demo                                       # bundled Fashion-MNIST subset
      nda score --train train/ --queries gen/ --out scores.npz
      nda top --scores scores.npz -k 5
    """


def _parse_timesteps(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise NDAError(f"--timesteps must be comma-separated integers like 100,200,300; got {value!r}") from exc


def _parse_size_table(value: str | None, name: str) -> Any:
    """'7' → 7; '100:5,200:7' → {100: 5, 200: 7}; 'none' → "none"; 'auto' → "auto"."""
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("none", "off"):
        return "none"
    if v == "auto":
        return "auto"
    try:
        if ":" in v:
            return {int(a): (None if b in ("none", "off") else int(b)) for a, b in (kv.split(":") for kv in v.split(","))}
        return int(v)
    except ValueError as exc:
        raise NDAError(f"{name} must be an integer or a table like 100:5,200:7; got {value!r}") from exc


def config_options(f):
    """The NDAConfig fields as CLI flags (each overrides --config)."""
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="NDAConfig as JSON (flags override it)."),
        click.option("--timesteps", help="Comma-separated timesteps, e.g. 100,200,300,400,500."),
        click.option("--patch-size", help="Patch side P, a per-timestep table like 100:5,300:9, or 'auto' (default)."),
        click.option("--down-patch-size", help="Even patch side of the 2×2-block scale (or a table; 'none' = off)."),
        click.option("--gamma", type=float, help="Weight of the single scale (1.0 = single scale only)."),
        click.option("--topk", help="Top-k weights per (query position, training image); 'none' keeps all."),
        click.option("--noise-seed", type=int, help="Seed of the query noise ε_t (default 0)."),
        click.option("--border", type=click.Choice(BORDERS), help="Border rule (default: match)."),
        click.option("--dtype", type=click.Choice(DTYPES), help="Compute dtype (default: float32)."),
        click.option("--engine", type=click.Choice(ENGINES), help="Engine (default: auto)."),
        click.option("--device", type=click.Choice(DEVICES), help="Device (default: auto)."),
        click.option("--memory-budget-mb", type=int, help="Soft cap on engine working memory."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def build_config(config_path: str | None, **flags: Any) -> NDAConfig:
    cfg = NDAConfig.from_json(config_path) if config_path else NDAConfig()
    changes: dict[str, Any] = {}
    if flags.get("timesteps") is not None:
        changes["timesteps"] = _parse_timesteps(flags["timesteps"])
    if flags.get("patch_size") is not None:
        changes["patch_size"] = _parse_size_table(flags["patch_size"], "--patch-size")
    if flags.get("down_patch_size") is not None:
        d = _parse_size_table(flags["down_patch_size"], "--down-patch-size")
        changes["down_patch_size"] = None if d == "none" else d
    if flags.get("topk") is not None:
        k = _parse_size_table(flags["topk"], "--topk")
        changes["topk"] = None if k == "none" else k
    for key in ("gamma", "noise_seed", "border", "dtype", "engine", "device", "memory_budget_mb"):
        if flags.get(key) is not None:
            changes[key] = flags[key]
    if "down_patch_size" in changes and "gamma" not in changes and cfg.gamma in (0.5, 1.0):
        changes["gamma"] = None  # re-resolve the default γ for the new number of scales
    return cfg.replace(**changes) if changes else cfg


@main.command("score")
@click.option("--train", "train_path", required=True, type=click.Path(), help="Training images: folder, image, .npy or .npz.")
@click.option("--queries", "queries_path", required=True, type=click.Path(), help="Query images (same size and channels).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output .npz (metadata .json beside it).")
@config_options
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def score_cmd(train_path: str, queries_path: str, out_path: str, config_path: str | None, progress: bool, **flags: Any) -> None:
    """Score every query against every training image; write (queries × train) scores.

    \b
    Examples:
      nda score --train train/ --queries gen/ --out scores.npz
      nda score --train train.npz --queries q.npy --out s.npz --patch-size 5 --topk 50
      nda score --train train/ --queries gen/ --out s.npz --down-patch-size 10 --gamma 0.5
    """
    cfg = build_config(config_path, **flags)
    index = NDAIndex.build(train_path, cfg)
    result = index.attribute(queries_path, progress=progress)
    path = result.save(out_path)
    Q, N = result.shape
    click.echo(f"wrote {path} ({Q} queries × {N} training images, higher = proponent; metadata {path.with_suffix('.json')})")


@main.command("top")
@click.option("--scores", "scores_path", required=True, type=click.Path(dir_okay=False), help="A scores .npz from `nda score`.")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Proponents per query.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def top_cmd(scores_path: str, k: int, as_json: bool) -> None:
    """List the top-k proponents (highest scores) of every query.

    \b
    Example:
      nda top --scores scores.npz -k 5
    """
    result = AttributionResult.load(scores_path)
    click.echo(format_top(result, k, as_json))


def format_top(result: AttributionResult, k: int, as_json: bool = False, labels: dict[int, str] | None = None) -> str:
    idx, val = result.topk(k)
    tnames, qnames = result.train_names, result.query_names
    rows = []
    for q in range(idx.shape[0]):
        qn = qnames[q] if qnames else f"query {q}"
        props = [{"rank": r + 1, "train_index": int(i), "name": tnames[i] if tnames else None, "score": float(v)}
                 for r, (i, v) in enumerate(zip(idx[q], val[q]))]
        rows.append({"query_index": q, "query": qn, "proponents": props})
    if as_json:
        return json.dumps({"orientation": result.metadata.get("orientation"), "sign": result.metadata.get("sign"),
                           "score_fingerprint": result.metadata.get("score_fingerprint"), "top": rows}, indent=2)
    lines = []
    for row in rows:
        lines.append(f"{row['query']}:")
        for p in row["proponents"]:
            label = f"  {labels[p['train_index']]}" if labels else ""
            name = p["name"] or f"#{p['train_index']}"
            lines.append(f"  {p['rank']:>3}. {name:<36} score {p['score']:10.4f}{label}")
    return "\n".join(lines)


@main.command("demo")
@click.option("--out", "out_dir", default="nda-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the scores (and the report).")
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(min=1), help="Proponents shown per query.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def demo_cmd(out_dir: str, k: int, progress: bool) -> None:
    """Attribute 5 queries to 400 bundled Fashion-MNIST training images (16×16).

    One query is a shifted, lightly noised copy of a training image; NDA should rank its source first.
    """
    from .demo import load_demo

    data = load_demo()
    cfg = NDAConfig().resolve(*data.train.shape[-2:])  # the default config, sizes made explicit
    click.echo(f"NDA demo: {len(data.queries)} queries × {len(data.train)} training images "
               f"(Fashion-MNIST, 16×16), default config: patch_size={cfg.patch_size} (auto), topk={cfg.topk}, "
               f"timesteps={list(cfg.timesteps)}")
    result = NDAIndex.build(data.train, cfg).attribute(data.queries, progress=progress)
    out = Path(out_dir)
    path = result.save(out / "scores.npz")
    labels = {i: data.classes[int(c)] for i, c in enumerate(data.train_labels)}
    click.echo(format_top(result, k, labels=labels))
    best = int(result.topk(1)[0][-1, 0])
    verdict = "found" if best == data.near_copy_source else "NOT found"
    click.echo(f"\nnear copy of training image #{data.near_copy_source}: top proponent #{best} — {verdict}")
    click.echo(f"scores: {path} (engine {result.metadata['engine']}, {result.metadata['elapsed_s']:.1f} s)")
    _demo_report(result, data, out)


def _demo_report(result: AttributionResult, data: Any, out: Path) -> None:
    """Write the HTML report when the report module is available."""
    try:
        from .report import write_report
    except ImportError:
        return
    page = write_report(result, data.train, data.queries, out / "report")
    click.echo(f"report: {page}")


@main.command("config")
@config_options
def config_cmd(config_path: str | None, **flags: Any) -> None:
    """Print the resolved configuration as JSON (defaults, --config file and flags combined).

    \b
    Example:
      nda config --patch-size 100:5,200:7,300:9,400:11,500:13 > cfg.json
    """
    click.echo(build_config(config_path, **flags).to_json())


def _register_optional() -> None:
    """Sub-commands that live beside their feature (benchmarks, reports)."""
    try:
        from .eval.cli_bench import bench
    except ImportError:  # the benchmark module needs the [bench] extra (diffusers)
        bench = None
    if bench is not None:
        main.add_command(bench)
    from .report.cli import explain_cmd, report_cmd

    main.add_command(explain_cmd)
    main.add_command(report_cmd)


_register_optional()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
