"""`NDAIndex` (a training set + a config) and `AttributionResult` (scores that say what they are).

    index = NDAIndex.build(train, NDAConfig(patch_size=5))
    result = index.attribute(queries)          # result.scores: (Q, N), higher = proponent
    result.save("scores.npz")                  # npz + the same metadata as JSON beside it

The data path: clean queries → noised at each t (noise.py) → per-(timestep, scale) engine scores
(engines/) → γ-combination per timestep → mean over timesteps.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import __version__
from .config import NDAConfig
from .engines import Scale, Step, make_engine
from .errors import NDAError
from .images import ImageSet, check_compatible, load_images
from .noise import query_noise
from .patches import check_patch

FORMAT = "nda-scores/1"
ORIENTATION = "queries x train"
SIGN = "higher = more influential (proponent)"


@dataclass
class AttributionResult:
    """NDA scores of Q queries against N training images, with everything needed to interpret them.

    Attributes:
        scores: (Q, N) float64, τ(x, n) = mean over timesteps of τ_t; higher = proponent.
        per_timestep: (T, Q, N) float64, τ_t for each t in `timesteps` (already γ-combined).
        timesteps: the T timesteps, in the order of `per_timestep`.
        config: the `NDAConfig` used.
        metadata: orientation, sign, fingerprints of config and inputs, engine, timing, names.
    """

    scores: np.ndarray
    per_timestep: np.ndarray
    timesteps: tuple[int, ...]
    config: NDAConfig
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def train_names(self) -> list[str] | None:
        return self.metadata.get("train", {}).get("names")

    @property
    def query_names(self) -> list[str] | None:
        return self.metadata.get("queries", {}).get("names")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.scores.shape)  # type: ignore[return-value]

    def topk(self, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k proponents per query: (indices (Q, k), scores (Q, k)), highest first.

        Ties are broken by the lower training index, so the order is deterministic.
        """
        if k < 1:
            raise NDAError(f"k must be ≥ 1, got {k}")
        k = min(k, self.scores.shape[1])
        order = np.lexsort((np.broadcast_to(np.arange(self.scores.shape[1]), self.scores.shape), -self.scores), axis=1)
        idx = order[:, :k]
        return idx, np.take_along_axis(self.scores, idx, axis=1)

    def check_comparable(self, other: "AttributionResult") -> None:
        """Raise unless `other` was computed under the same score config on the same training set."""
        a, b = self.metadata, other.metadata
        if a.get("score_fingerprint") != b.get("score_fingerprint"):
            raise NDAError(
                "these results were computed under different configs "
                f"({a.get('score_fingerprint')} vs {b.get('score_fingerprint')}); recompute one of them"
            )
        if a.get("train", {}).get("fingerprint") != b.get("train", {}).get("fingerprint"):
            raise NDAError("these results were computed on different training sets; they cannot be combined")

    def concat(self, other: "AttributionResult") -> "AttributionResult":
        """Stack the queries of two results computed under the same config and training set."""
        self.check_comparable(other)
        meta = json.loads(json.dumps(self.metadata))
        qa, qb = self.metadata.get("queries", {}), other.metadata.get("queries", {})
        names = qa.get("names"), qb.get("names")
        meta["queries"] = {
            "n": int(self.scores.shape[0] + other.scores.shape[0]),
            "fingerprint": f"{qa.get('fingerprint')}+{qb.get('fingerprint')}",
            "names": names[0] + names[1] if names[0] is not None and names[1] is not None else None,
            "source": f"{qa.get('source')} + {qb.get('source')}",
        }
        meta["shape"] = [meta["queries"]["n"], int(self.scores.shape[1])]
        return AttributionResult(
            np.concatenate([self.scores, other.scores]),
            np.concatenate([self.per_timestep, other.per_timestep], axis=1),
            self.timesteps, self.config, meta,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write `path` (.npz: scores, per_timestep, timesteps, metadata) and `path` with .json.

        Both are written to temporary files and renamed, so an interrupted save never leaves a
        file that looks complete.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_text = json.dumps(self.metadata, indent=2, sort_keys=True)
        _atomic_write(path, lambda f: np.savez_compressed(
            f, scores=self.scores, per_timestep=self.per_timestep,
            timesteps=np.asarray(self.timesteps, dtype=np.int64), metadata=np.asarray(meta_text),
        ))
        _atomic_write(path.with_suffix(".json"), lambda f: f.write(meta_text.encode() + b"\n"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AttributionResult":
        """Read a result written by `save` (no pickle involved)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"scores", "per_timestep", "timesteps", "metadata"} - set(z.keys())
                if missing:
                    raise NDAError(f"{path} is not an NDA scores file (missing {sorted(missing)})")
                meta = json.loads(str(z["metadata"]))
                scores, per_t, ts = z["scores"], z["per_timestep"], tuple(int(t) for t in z["timesteps"])
        except (OSError, ValueError) as exc:
            raise NDAError(f"cannot read scores file {path}: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise NDAError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
        return cls(scores, per_t, ts, NDAConfig.from_dict(meta["config"]), meta)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class NDAIndex:
    """A validated training set and config, ready to attribute queries.

    Build with `NDAIndex.build(train, config)`; `train` is anything `load_images` accepts.
    """

    def __init__(self, train: ImageSet, config: NDAConfig) -> None:
        C, H, W = train.shape
        config = config.resolve(H, W)  # "auto" patch sizes depend on the image size
        for t in config.timesteps:
            check_patch(config.patch_at(t), H, W, "patch_size")
            if config.down_at(t) is not None:
                check_patch(config.down_at(t), H, W, "down_patch_size")
        self.train = train
        self.config = config
        self._train_t = train.tensor(torch.float64)

    @classmethod
    def build(cls, train: Any, config: NDAConfig | None = None, *, names: Sequence[str] | None = None,
              **overrides: Any) -> "NDAIndex":
        """Validate `train` (N, C, H, W) and the config (fields may be given as keyword overrides)."""
        config = config or NDAConfig()
        if overrides:
            config = config.replace(**overrides)
        return cls(load_images(train, what="train", names=names), config)

    def steps(self, shape: tuple[int, int, int]) -> list[Step]:
        """The (timestep, scale) jobs of the config, with ε_t drawn per SPEC §1.1."""
        abar = self.config.alpha_bar()
        jobs = []
        for t in self.config.timesteps:
            eps = query_noise(shape, t, self.config.noise_seed)
            g = self.config.gamma_at(t)
            if g > 0:
                jobs.append(Step(t, float(abar[t]), eps, Scale(self.config.patch_at(t), 1)))
            if g < 1:
                jobs.append(Step(t, float(abar[t]), eps, Scale(self.config.down_at(t), 2)))
        return jobs

    def attribute(self, queries: Any, *, names: Sequence[str] | None = None, progress: bool = False) -> AttributionResult:
        """Score queries (anything `load_images` accepts) against the training set.

        Returns an `AttributionResult` with scores (Q, N) and per_timestep (T, Q, N).
        """
        qset = load_images(queries, what="queries", names=names)
        check_compatible(self.train, qset)
        cfg = self.config
        device = cfg.resolved_device()
        engine = make_engine(cfg.engine, cfg.torch_dtype(), device, cfg.memory_budget_mb)
        steps = self.steps(qset.shape)
        q = qset.tensor(torch.float64)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(q) * len(steps), desc=f"NDA ({engine.name})", unit="query·step", leave=False)
        start = time.perf_counter()
        try:
            parts = engine.score_steps(q, self._train_t, steps, cfg.topk, cfg.border,
                                       progress=(bar.update if bar else (lambda n: None)))
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - start
        T, Q, N = len(cfg.timesteps), len(qset), len(self.train)
        per_t = np.zeros((T, Q, N), dtype=np.float64)
        index = {t: i for i, t in enumerate(cfg.timesteps)}
        for step, part in zip(steps, parts):
            g = cfg.gamma_at(step.t)
            w = g if step.scale.block == 1 else 1.0 - g
            per_t[index[step.t]] += w * part.numpy()
        meta = {
            "format": FORMAT,
            "orientation": ORIENTATION,
            "sign": SIGN,
            "shape": [Q, N],
            "config": cfg.to_dict(),
            "score_fingerprint": cfg.score_fingerprint(),
            "train": _set_meta(self.train),
            "queries": _set_meta(qset),
            "engine": engine.name,
            "device": str(device),
            "elapsed_s": round(elapsed, 4),
            "nda_version": __version__,
            "torch_version": torch.__version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return AttributionResult(per_t.mean(axis=0), per_t, tuple(cfg.timesteps), cfg, meta)


def _set_meta(s: ImageSet) -> dict[str, Any]:
    return {
        "n": len(s),
        "shape": list(s.shape),
        "fingerprint": s.fingerprint(),
        "source": s.source,
        "names": list(s.names) if s.names is not None else None,
    }


def score(train: Any, queries: Any, config: NDAConfig | None = None, **overrides: Any) -> np.ndarray:
    """NDA scores τ(x, n) of every query against every training image, (Q, N), higher = proponent.

    Args:
        train: (N, C, H, W) training images (array, tensor or path; see `nda.images`).
        queries: (Q, C, H, W) query images, same (C, H, W).
        config: an `NDAConfig` (default: `NDAConfig()`); keyword overrides replace its fields.
    """
    return NDAIndex.build(train, config, **overrides).attribute(queries).scores
