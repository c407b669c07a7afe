"""Shared helpers of the baselines: input checks, the benchmark's full model, the feature cache."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path("runs") / "baselines"


def as_images(x, what: str = "images") -> np.ndarray:
    """(N, C, H, W) finite float32 array, or a clear ValueError."""
    a = np.asarray(x)
    if a.ndim != 4:
        raise ValueError(f"{what} must be (N, C, H, W), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{what} is empty")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contain NaN/Inf")
    return a


def check_pair(train, queries):
    train = as_images(train, "train images")
    queries = as_images(queries, "query images")
    if train.shape[1:] != queries.shape[1:]:
        raise ValueError(f"train images are {train.shape[1:]} but queries are {queries.shape[1:]}: they must match")
    return train, queries


def sha(*arrays, extra=None) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def cache_dir(config: dict | None) -> Path | None:
    """Cache root: ``config["cache_dir"]`` (None/"" disables), else $NDA_BASELINE_CACHE, else runs/baselines."""
    config = config or {}
    if "cache_dir" in config:
        c = config["cache_dir"]
        return Path(c) if c else None
    return Path(os.environ.get("NDA_BASELINE_CACHE", str(DEFAULT_CACHE)))


def load_cached(path: Path | None) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as d:
            out = {k: d[k] for k in d.files if k != "meta"}
            out["meta"] = json.loads(str(d["meta"])) if "meta" in d.files else {}
        return out
    except Exception:  # a corrupt cache entry is recomputed, never trusted
        return None


def save_cached(path: Path | None, meta: dict, **arrays) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ the full model
def full_model_path(bench) -> Path:
    """Weights of the model trained on the whole training set of ``bench``."""
    cands = [Path(bench.root) / "full_model.safetensors", Path("runs") / bench.name / "models" / "full_s0.safetensors"]
    for p in cands:
        if p.exists():
            return p
    raise FileNotFoundError(
        f"no full-model weights for benchmark {bench.name!r} (looked in {', '.join(map(str, cands))}); "
        f"build it first (nda bench build {bench.name})"
    )


_MODELS: dict = {}


def full_model(bench):
    """(model, sha of its weights file), loaded once per process."""
    from ..diffusion import TrainConfig, load_model

    p = full_model_path(bench)
    raw = p.read_bytes()
    key = hashlib.sha256(raw).hexdigest()[:16]
    if key not in _MODELS:
        cfg = TrainConfig.from_dict(bench.manifest["protocol"]["train_config"])
        model = load_model(p, cfg)
        model.requires_grad_(False)
        _MODELS[key] = model
    return _MODELS[key], key
