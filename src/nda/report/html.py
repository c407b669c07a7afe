"""The self-contained HTML report (`write_report`): one page, images inline, no network access.

For each query: the query, its top-k proponents with scores, heat maps on both (where each
proponent explains the query; where its matched patches lie), a per-timestep view, and hovering
(or clicking) a query location highlights the training patches that explain it. The per-location
detail comes from `nda.provenance.explain`, computed by the engine the scores' config selects.

Safety: every name and string goes through Jinja2 autoescaping; the data for the page's script is
JSON inside ``<script type="application/json">`` with ``<``, ``>``, ``&`` and every non-ASCII
character (U+2028/9 included) escaped, read with ``JSON.parse`` and inserted with ``textContent``;
a Content-Security-Policy allows only the page's own inline script (by hash) and ``data:`` images.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import io
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import __version__
from ..attribution import AttributionResult, NDAIndex
from ..errors import NDAError
from ..images import ImageSet, load_images, to_uint8_hwc
from ..provenance import Provenance, explain

#: matches below this fraction of a step's largest weight are left out of the page (invisible there).
_MATCH_CUTOFF = 0.03


def script_json(obj: Any) -> str:
    """JSON that is safe inside an HTML <script> element (no `</script>`, no `<!--`, no U+2028/9)."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def png_data_uri(rgb_or_gray: np.ndarray) -> str:
    """(H, W), (H, W, 1|3|4) uint8 → a PNG data: URI."""
    from PIL import Image

    a = np.asarray(rgb_or_gray)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_uri(image: np.ndarray) -> str:
    """(C, H, W) image in [-1, 1] → PNG data URI (1 channel gray, 3 RGB, others: first channel)."""
    hwc = to_uint8_hwc(image)
    if hwc.shape[2] not in (1, 3):
        hwc = hwc[:, :, :1]
    return png_data_uri(hwc)


def heat_rgba(heat: np.ndarray, vmax: float | None = None, cmap: str = "inferno") -> np.ndarray:
    """(H, W) non-negative map → (H, W, 4) uint8 overlay: colour and opacity grow with the value."""
    import matplotlib

    h = np.asarray(heat, dtype=np.float64)
    top = float(h.max()) if vmax is None else float(vmax)
    v = np.clip(h / top, 0.0, 1.0) if top > 0 else np.zeros_like(h)
    rgba = matplotlib.colormaps[cmap](0.35 + 0.65 * v)
    rgba[..., 3] = 0.9 * v ** 0.75
    return (rgba * 255 + 0.5).astype(np.uint8)


def _fmt(x: float) -> str:
    ax = abs(x)
    if x == 0:
        return "0"
    return f"{x:.3e}" if ax >= 1000 or ax < 1e-3 else f"{x:.4g}"


def _b64(a: np.ndarray, dtype: str) -> str:
    """A little-endian typed array as base64 (decoded in the page into a JS typed array)."""
    return base64.b64encode(np.ascontiguousarray(np.asarray(a).astype(dtype)).tobytes()).decode("ascii")


def _round(a: np.ndarray, digits: int = 3) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in np.asarray(a, dtype=np.float64).ravel()]


def _check_matches(result: AttributionResult, train: ImageSet, queries: ImageSet) -> None:
    """The images must be the ones the scores were computed on (fingerprints in the metadata)."""
    meta = result.metadata
    Q, N = result.scores.shape
    if len(train) != N or len(queries) != Q:
        raise NDAError(
            f"the scores are {Q} queries × {N} training images but {len(queries)} queries and "
            f"{len(train)} training images were given; pass the sets the scores were computed on"
        )
    for what, s in (("train", train), ("queries", queries)):
        want = meta.get(what, {}).get("fingerprint")
        if want is not None and want != s.fingerprint():
            raise NDAError(
                f"the {what} images ({s.source}) are not the ones the scores were computed on "
                f"(fingerprint {s.fingerprint()}, scores say {want}); pass the same {what} set or recompute the scores"
            )


def _names(s: ImageSet, prefix: str) -> list[str]:
    return list(s.names) if s.names is not None else [f"{prefix} #{i}" for i in range(len(s))]


def _query_block(q: int, prov: Provenance, result: AttributionResult, sel: np.ndarray, tnames: list[str],
                 qname: str, query_img: np.ndarray, train: ImageSet, here_m: int, r: int) -> tuple[dict, dict]:
    """(template context, JSON data) of one query."""
    H, W = prov.image_size
    views: list[int | None] = [None, *result.timesteps]
    k = len(sel)
    data_views = []
    referenced = {int(n) for n in sel}
    for vi, t in enumerate(views):
        scores = result.scores[q, sel] if t is None else result.per_timestep[vi - 1, q, sel]
        allq = prov.query_heat_all(t)  # (N, H, W)
        qh = allq[sel]
        th = np.stack([prov.train_heat(int(n), t) for n in sel])
        # who explains each pixel: top here_m images by share (over all training images)
        flat = allq.reshape(allq.shape[0], -1).T  # (H·W, N)
        mm = min(here_m, flat.shape[1])
        top = np.argsort(-flat, axis=1, kind="stable")[:, :mm]
        topw = np.take_along_axis(flat, top, axis=1)
        top = np.where(topw > 0, top, -1)
        data_views.append({
            "qheat": [png_data_uri(heat_rgba(h)) for h in qh],
            "theat": [png_data_uri(heat_rgba(h)) for h in th],
            "qmax": _round([h.max() for h in qh]),
            "scores": [float(s) for s in scores],
            "here_n": _b64(top, "<i4"),
            "here_w": _b64(np.round(np.clip(topw, 0, 1) * 65535), "<u2"),
        })
        referenced.update(int(n) for n in top.ravel() if n >= 0)
    steps = []
    T = len(result.timesteps)
    for s in prov.steps:
        rr = min(r, s.match_pos.shape[2])
        pos_dtype = "<i2" if s.grid[0] * s.grid[1] < 2**15 else "<i4"
        w = s.match_w[:, :, :rr]
        wmax = float(w.max()) if w.size else 0.0
        mp, mw = [], []
        for j in range(k):
            p = s.match_pos[j, :, :rr].copy()
            p[w[j] <= _MATCH_CUTOFF * wmax] = -1  # invisible at opacity ∝ weight
            q8 = np.round(w[j] / wmax * 255) if wmax > 0 else np.zeros_like(w[j])
            mp.append(_b64(p, pos_dtype))
            mw.append(_b64(np.where(p < 0, 0, q8), "u1"))
        steps.append({"t": s.t, "pos16": pos_dtype == "<i2", "P": s.scale.patch, "block": s.scale.block, "pad": s.pad,
                      "Ho": s.grid[0], "Wo": s.grid[1], "fall": s.coef, "ft": s.coef * T,
                      "r": rr, "wmax": wmax / 255.0, "mp": mp, "mw": mw})
    data = {"H": H, "W": W, "m": mm, "sel": [int(n) for n in sel],
            "names": {str(n): tnames[n] for n in sorted(referenced)}, "views": data_views, "steps": steps}
    ctx = {
        "index": q, "name": qname, "uri": image_uri(query_img), "qheat0": data_views[0]["qheat"][0],
        "props": [{
            "rank": j + 1, "n": int(n), "name": tnames[n], "uri": image_uri(train.images[n]),
            "theat0": data_views[0]["theat"][j], "score_text": _fmt(float(result.scores[q, n])),
            "per_t": [_fmt(float(result.per_timestep[i, q, n])) for i in range(T)],
        } for j, n in enumerate(sel)],
    }
    return ctx, data


def _config_line(result: AttributionResult) -> str:
    c = result.config
    parts = [f"timesteps={list(c.timesteps)}", f"patch_size={c.patch_size}"]
    if c.down_patch_size is not None:
        parts += [f"down_patch_size={c.down_patch_size}", f"gamma={c.gamma}"]
    parts += [f"topk={c.topk}", f"border={c.border}", f"noise_seed={c.noise_seed}", f"dtype={c.dtype}"]
    return ", ".join(str(p) for p in parts)


def write_report(result: AttributionResult, train: Any, queries: Any, out_dir: str | Path, k: int = 8, *,
                 png: bool = False, title: str | None = None, here_m: int = 5, r: int = 3,
                 progress: bool | Callable[[int], None] = False, max_queries: int | None = None) -> Path:
    """Write `out_dir/index.html`: a self-contained page explaining `result` (see the module docstring).

    Args:
        result: scores from `NDAIndex.attribute` (or `AttributionResult.load`).
        train, queries: the images the scores were computed on (anything `load_images` accepts);
            checked against the fingerprints in the result's metadata.
        out_dir: output folder (created).
        k: proponents shown per query.
        png: also write paper figures `out_dir/figures/query-XXX.png` (query | top proponents | overlays).
        title: page title. here_m: images listed per hovered location. r: patches highlighted per
            (location, proponent, step).
        progress: True for a progress bar, or a callable taking the number of queries done.
        max_queries: only the first queries (default: all).
    Returns:
        the path of index.html.
    """
    train = load_images(train, what="train")
    queries = load_images(queries, what="queries")
    _check_matches(result, train, queries)
    if k < 1:
        raise NDAError(f"k must be ≥ 1, got {k}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NDAError(f"cannot create the report folder {out}: {exc.strerror}") from exc
    tnames, qnames = _names(train, "train"), _names(queries, "query")
    index = NDAIndex(train, result.config)
    sel_all, _ = result.topk(k)
    nq = len(queries) if max_queries is None else min(max_queries, len(queries))
    tick, close = _progress(progress, nq)
    ctxs, datas, provs = [], [], []
    try:
        for q in range(nq):
            sel = sel_all[q]
            prov = explain(index, queries.images[q], images=sel, m=0, r=r)
            ctx, data = _query_block(q, prov, result, sel, tnames, qnames[q], queries.images[q], train, here_m, r)
            ctxs.append(ctx)
            datas.append(data)
            if png:
                from .figures import query_figure

                fig_dir = out / "figures"
                fig_dir.mkdir(exist_ok=True)
                query_figure(prov, result, q, sel, tnames, qnames[q], train, fig_dir / f"query-{q:03d}.png")
            tick(1)
    finally:
        close()
    html = render_page(result, train, queries, ctxs, datas, title=title)
    page = out / "index.html"
    _atomic_write_text(page, html)
    return page


def render_page(result: AttributionResult, train: ImageSet, queries: ImageSet, ctxs: Sequence[dict],
                datas: Sequence[dict], title: str | None = None) -> str:
    import jinja2
    from markupsafe import Markup

    tpl_dir = resources.files("nda.report").joinpath("templates")
    css = tpl_dir.joinpath("report.css").read_text(encoding="utf-8")
    js = tpl_dir.joinpath("report.js").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string(tpl_dir.joinpath("report.html.j2").read_text(encoding="utf-8"))
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    C, H, W = train.shape
    views = [{"label": "all timesteps", "t": None}] + [{"label": f"t = {t}", "t": int(t)} for t in result.timesteps]
    payload = {"views": views, "queries": list(datas)}
    meta = result.metadata
    return template.render(
        title=title or "NDA attribution report", version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        n_queries=len(ctxs), n_train=len(train), C=C, H=H, W=W,
        train_source=Path(train.source).name if train.source != "array" else "array",
        queries_source=Path(queries.source).name if queries.source != "array" else "array",
        config_line=_config_line(result), engine=meta.get("engine", "?"),
        score_fingerprint=meta.get("score_fingerprint", result.config.score_fingerprint()),
        views=views, timesteps=list(result.timesteps), queries=list(ctxs),
        css=Markup(css), js=Markup(js), data_json=Markup(script_json(payload)),
        script_hash=Markup(f"'sha256-{digest}'"),
    )


def _progress(progress: bool | Callable[[int], None], total: int):
    if callable(progress):
        return progress, (lambda: None)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="report", unit="query", leave=False)
        return bar.update, bar.close
    return (lambda n: None), (lambda: None)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
