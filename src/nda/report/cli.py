"""`nda explain` (score one query and write its report) and `nda report` (a report from saved scores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


class _ConfigCommand(click.Command):
    """A command that also takes the NDAConfig flags of `nda.cli.config_options`.

    They are attached on first use, not at import time: `nda.cli` imports this module while it
    is itself being imported, so this module must not need `nda.cli` to load.
    """

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not getattr(self, "_config_attached", False):
            from ..cli import config_options

            holder = config_options(lambda **kw: None)
            extra = list(reversed(holder.__click_params__))
            names = [p.name for p in self.params]
            at = names.index("progress") if "progress" in names else len(self.params)
            self.params[at:at] = extra
            self._config_attached = True
        return super().get_params(ctx)


@click.command("explain", cls=_ConfigCommand)
@click.option("--train", "train_path", required=True, type=click.Path(), help="Training images: folder, image, .npy or .npz.")
@click.option("--query", "query_path", required=True, type=click.Path(),
              help="The query image (an image file; a folder / .npy / .npz explains every image in it).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (index.html, scores.npz).")
@click.option("-k", "k", default=8, show_default=True, type=click.IntRange(min=1), help="Proponents shown per query.")
@click.option("--png", is_flag=True, help="Also write paper figures to OUT/figures/.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def explain_cmd(train_path: str, query_path: str, out_dir: str, k: int, png: bool, progress: bool,
                config_path: str | None = None, **flags: Any) -> None:
    """Attribute a query and show where: OUT/index.html with its top-k proponents, heat maps on
    both images, a per-timestep view, and the training patches behind every query location.

    \b
    Examples:
      nda explain --train train/ --query gen/0042.png --out explain-0042/
      nda explain --train train.npz --query q.png --out ex/ -k 12 --patch-size 5 --png
    """
    from ..attribution import NDAIndex
    from ..cli import build_config
    from ..images import load_images
    from .html import write_report

    cfg = build_config(config_path, **flags)
    index = NDAIndex.build(train_path, cfg)
    queries = load_images(query_path, what="query")
    result = index.attribute(queries, progress=progress)
    out = Path(out_dir)
    page = write_report(result, index.train, queries, out, k=k, png=png, progress=progress)
    scores = result.save(out / "scores.npz")
    click.echo(f"scores: {scores}")
    if png:
        click.echo(f"figures: {out / 'figures'}")
    click.echo(f"report: {page}")


@click.command("report")
@click.option("--scores", "scores_path", required=True, type=click.Path(dir_okay=False), help="A scores .npz from `nda score`.")
@click.option("--train", "train_path", required=True, type=click.Path(), help="The training images the scores were computed on.")
@click.option("--queries", "queries_path", required=True, type=click.Path(), help="The query images the scores were computed on.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (index.html).")
@click.option("-k", "k", default=8, show_default=True, type=click.IntRange(min=1), help="Proponents shown per query.")
@click.option("--png", is_flag=True, help="Also write paper figures to OUT/figures/ (query | proponents | overlays).")
@click.option("--max-queries", type=click.IntRange(min=1), help="Only the first N queries.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def report_cmd(scores_path: str, train_path: str, queries_path: str, out_dir: str, k: int, png: bool,
               max_queries: int | None, progress: bool) -> None:
    """Write a self-contained HTML report (OUT/index.html) of saved scores.

    The patch-level detail is recomputed with the scores' own config (and its engine); the
    training and query images must be the ones the scores were computed on (their fingerprints
    are checked).

    \b
    Examples:
      nda score --train train/ --queries gen/ --out scores.npz
      nda report --scores scores.npz --train train/ --queries gen/ --out report/
      nda report --scores scores.npz --train train/ --queries gen/ --out fig/ -k 5 --png
    """
    from ..attribution import AttributionResult
    from ..images import load_images
    from .html import write_report

    result = AttributionResult.load(scores_path)
    train = load_images(train_path, what="train")
    queries = load_images(queries_path, what="queries")
    page = write_report(result, train, queries, out_dir, k=k, png=png, progress=progress, max_queries=max_queries)
    if png:
        click.echo(f"figures: {Path(out_dir) / 'figures'}")
    click.echo(f"report: {page}")
