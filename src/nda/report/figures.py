"""Paper figures (matplotlib, Agg): query | top proponents | heat-map overlays, one PNG per query.

Layout: two rows, k + 1 columns. Top row: the query, then each proponent with the training-side
heat map (where its matched patches lie). Bottom row: the query's "explained by the top-k" map,
then the query with each proponent's query-side heat map (which query locations it explains).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..attribution import AttributionResult
from ..images import ImageSet, to_uint8_hwc
from ..provenance import Provenance


def _show(ax, image: np.ndarray) -> None:
    hwc = to_uint8_hwc(image)
    if hwc.shape[2] == 1:
        ax.imshow(hwc[:, :, 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(hwc[:, :, :3], interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _overlay(ax, heat: np.ndarray) -> None:
    from .html import heat_rgba

    ax.imshow(heat_rgba(heat), interpolation="nearest")


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def query_figure(prov: Provenance, result: AttributionResult, q: int, sel: Sequence[int], tnames: Sequence[str],
                 qname: str, train: ImageSet, path: str | Path, t: int | None = None, dpi: int = 150) -> Path:
    """Write one query's figure to `path` (PNG). `t`: a timestep, or None for the score's mean."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = len(sel)
    fig, axes = plt.subplots(2, k + 1, figsize=(1.45 * (k + 1), 3.9), squeeze=False)
    view = "mean over t" if t is None else f"t = {t}"
    _show(axes[0, 0], prov.query)
    axes[0, 0].set_title(f"query\n{_short(qname)}", fontsize=7)
    explained = sum(prov.query_heat(int(n), t) for n in sel)
    _show(axes[1, 0], prov.query)
    _overlay(axes[1, 0], explained)
    axes[1, 0].set_title(f"top {k} together\n({view})", fontsize=7)
    scores = result.scores[q] if t is None else result.per_timestep[list(result.timesteps).index(t), q]
    for j, n in enumerate(sel):
        n = int(n)
        ax = axes[0, j + 1]
        _show(ax, train.images[n])
        _overlay(ax, prov.train_heat(n, t))
        ax.set_title(f"#{j + 1} {_short(tnames[n], 14)}\nτ={scores[n]:.3g}", fontsize=7)
        ax = axes[1, j + 1]
        _show(ax, prov.query)
        _overlay(ax, prov.query_heat(n, t))
        ax.set_title(f"where #{j + 1}\nexplains", fontsize=7)
    fig.tight_layout(pad=0.3, h_pad=0.6)
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
