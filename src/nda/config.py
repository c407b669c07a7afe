"""`NDAConfig`: every knob of the NDA score, validated once, saved as JSON beside every result.

The score is defined in SPEC §1. Fields split in two groups:

* **score fields** change the numbers (timesteps, patch sizes, γ, top-k, noise seed, border rule,
  noise schedule, dtype); they make up `score_fingerprint()`, and results whose fingerprints differ
  are never mixed.
* **run fields** (engine, device, memory budget) only change how the numbers are computed; every
  engine agrees with the float64 oracle within its documented tolerance.

Per-timestep settings (`patch_size`, `down_patch_size`, `gamma`) take either one value for every
timestep or a dict ``{timestep: value}`` that must cover every timestep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .errors import NDAError

DEFAULT_TIMESTEPS: tuple[int, ...] = (100, 200, 300, 400, 500)

#: The default patch-size schedule ("auto"): patch side as a fraction of the image side, per
#: timestep. Chosen on the FMNIST-2 benchmark's calib split (16×16 images: P_t = 16 × fraction) by
#: `benchmarks/ablate_nda.py`; the evidence and its limits are in docs/configuration.md. A timestep
#: not in the table takes the value of the nearest one that is.
AUTO_PATCH_FRACTION: dict[int, float] = {100: 7 / 16, 200: 9 / 16, 300: 13 / 16, 400: 13 / 16, 500: 15 / 16}
DEFAULT_PATCH_SIZE = "auto"

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")
BORDERS = ("match", "zero")
DTYPES = ("float32", "float64")
ENGINES = ("auto", "reference", "conv", "fast")
DEVICES = ("auto", "cpu", "cuda")

_SCORE_FIELDS = (
    "timesteps",
    "patch_size",
    "down_patch_size",
    "gamma",
    "topk",
    "noise_seed",
    "border",
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "alphas_cumprod",
    "dtype",
)


def _per_timestep(name: str, value: Any, timesteps: tuple[int, ...]) -> dict[int, Any]:
    """Expand a scalar-or-dict field to ``{t: value}`` covering exactly `timesteps`."""
    if isinstance(value, Mapping):
        try:
            table = {int(k): v for k, v in value.items()}
        except (TypeError, ValueError) as exc:
            raise NDAError(f"{name}: dict keys must be timesteps (integers), got {list(value)}") from exc
        missing = [t for t in timesteps if t not in table]
        extra = [t for t in table if t not in timesteps]
        if missing or extra:
            raise NDAError(
                f"{name}: the dict must give a value for each timestep {list(timesteps)}; "
                f"missing {missing}, not in timesteps {extra}"
            )
        return {t: table[t] for t in timesteps}
    return {t: value for t in timesteps}


def auto_patch_size(t: int, side: int) -> int:
    """The "auto" patch side at timestep t for images whose shorter side is ``side`` pixels.

    The odd integer nearest to AUTO_PATCH_FRACTION[t'] · side (t' the tabulated timestep nearest
    to t; ties go to the smaller t'), at least 1 and at most ``side``.
    """
    t_near = min(AUTO_PATCH_FRACTION, key=lambda k: (abs(k - int(t)), k))
    x = AUTO_PATCH_FRACTION[t_near] * int(side)
    p = 2 * math.floor((x - 1) / 2 + 0.5) + 1
    return int(max(1, min(p, side if side % 2 else side - 1)))


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass(frozen=True)
class NDAConfig:
    """Configuration of an NDA attribution run (SPEC §1).

    Attributes:
        timesteps: diffusion timesteps t (0-based, as `DDPMScheduler.alphas_cumprod[t]`) whose
            per-timestep scores are averaged.
        patch_size: patch side P (int, or ``{t: P}``). Odd P gives H×W positions, even P (H-1)×(W-1).
            "auto" (default): the schedule chosen by the project's ablation, scaled to the image
            side (`auto_patch_size`, docs/configuration.md); resolved by `resolve(H, W)`.
        down_patch_size: patch side P′ of the second scale (2×2-block projection), even; None for
            one scale only. Int or ``{t: P′}`` (a None value in the dict disables it at that t).
        gamma: weight of the single scale, τ_t = γ·τ_single + (1-γ)·τ_down. None resolves to 1.0
            without a second scale and 0.5 with one (the authors' constant).
        topk: keep the k largest weights over training positions for each (query position,
            training image); None keeps all.
        noise_seed: the query noise ε_t is drawn from ``Generator('cpu').manual_seed(1000*noise_seed+t)``.
        border: "match" (a query patch only compares with training patches hanging over the image
            border by exactly the same amount) or "zero" (plain zero padding, all comparable).
        num_train_timesteps, beta_start, beta_end, beta_schedule: the DDPM noise schedule, as
            diffusers' `DDPMScheduler` defines it ("linear", "scaled_linear", "cosine" =
            diffusers' "squaredcos_cap_v2").
        alphas_cumprod: a user-given ᾱ array (length num_train_timesteps) overriding the schedule.
        dtype: "float32" (default) or "float64" for the distance/weight computation.
        engine: "auto" (the fastest exact engine available), "reference" (float64 brute force,
            small inputs only), "conv" (the authors' convolution formulation), "fast".
        device: "auto" (CUDA if available), "cpu" or "cuda".
        memory_budget_mb: soft cap on an engine's working memory (not the inputs / outputs).
    """

    timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS
    patch_size: Any = DEFAULT_PATCH_SIZE
    down_patch_size: Any = None
    gamma: Any = None
    topk: int | None = 100
    noise_seed: int = 0
    border: str = "match"
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    alphas_cumprod: tuple[float, ...] | None = None
    dtype: str = "float32"
    engine: str = "auto"
    device: str = "auto"
    memory_budget_mb: int = 1024
    # Resolved per-timestep tables (filled in by validation; not constructor arguments).
    _patch: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _down: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _gamma: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)

        ts = self.timesteps
        if _is_int(ts):
            ts = (ts,)
        try:
            ts = tuple(int(t) for t in ts)
        except (TypeError, ValueError) as exc:
            raise NDAError(f"timesteps must be a list of integers, got {self.timesteps!r}") from exc
        if not ts:
            raise NDAError("timesteps is empty; give at least one, e.g. timesteps=(100, 200, 300)")
        if len(set(ts)) != len(ts):
            raise NDAError(f"timesteps has duplicates: {list(ts)}")
        if not _is_int(self.num_train_timesteps) or self.num_train_timesteps < 1:
            raise NDAError(f"num_train_timesteps must be a positive integer, got {self.num_train_timesteps!r}")
        bad = [t for t in ts if not 0 <= t < self.num_train_timesteps]
        if bad:
            raise NDAError(
                f"unknown timesteps {bad}: timesteps index the schedule, 0 ≤ t < {self.num_train_timesteps}"
            )
        set_("timesteps", ts)

        auto = isinstance(self.patch_size, str)
        if auto and self.patch_size != "auto":
            raise NDAError(f"patch_size must be 'auto', a positive integer or {{t: P}}; got {self.patch_size!r}")
        patch = {} if auto else _per_timestep("patch_size", self.patch_size, ts)
        for t, p in patch.items():
            if not _is_int(p) or p < 1:
                raise NDAError(f"patch_size must be a positive integer (t={t}: got {p!r})")
        down = _per_timestep("down_patch_size", self.down_patch_size, ts)
        for t, p in down.items():
            if p is None:
                continue
            if not _is_int(p) or p < 2 or p % 2:
                raise NDAError(
                    f"down_patch_size must be an even integer ≥ 2 (2×2 blocks tile the patch); t={t}: got {p!r}"
                )
        has_down = any(p is not None for p in down.values())
        gamma_in = self.gamma if self.gamma is not None else (0.5 if has_down else 1.0)
        gamma = _per_timestep("gamma", gamma_in, ts)
        for t, g in gamma.items():
            if isinstance(g, bool) or not isinstance(g, (int, float, np.floating)) or not 0.0 <= float(g) <= 1.0:
                raise NDAError(f"gamma must be a number in [0, 1] (t={t}: got {g!r})")
            if down[t] is None and float(g) != 1.0:
                raise NDAError(
                    f"gamma={g} at t={t} weights a second scale that is not configured; "
                    "set down_patch_size or use gamma=1.0"
                )
        if self.topk is not None and (not _is_int(self.topk) or self.topk < 1):
            raise NDAError(f"topk must be a positive integer or None (keep all), got {self.topk!r}")
        if not _is_int(self.noise_seed) or self.noise_seed < 0:
            raise NDAError(f"noise_seed must be a non-negative integer, got {self.noise_seed!r}")
        for name, allowed in (
            ("border", BORDERS),
            ("beta_schedule", BETA_SCHEDULES),
            ("dtype", DTYPES),
            ("engine", ENGINES),
            ("device", DEVICES),
        ):
            if getattr(self, name) not in allowed:
                raise NDAError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if not (0 < float(self.beta_start) < float(self.beta_end) < 1):
            raise NDAError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.alphas_cumprod is not None:
            ac = np.asarray(self.alphas_cumprod, dtype=np.float64).ravel()
            if ac.shape[0] != self.num_train_timesteps:
                raise NDAError(
                    f"alphas_cumprod has {ac.shape[0]} values but num_train_timesteps={self.num_train_timesteps}"
                )
            if not np.all(np.isfinite(ac)) or np.any(ac <= 0) or np.any(ac >= 1):
                raise NDAError("alphas_cumprod values must be finite and strictly inside (0, 1)")
            set_("alphas_cumprod", tuple(float(a) for a in ac))
        if not _is_int(self.memory_budget_mb) or self.memory_budget_mb < 16:
            raise NDAError(f"memory_budget_mb must be an integer ≥ 16, got {self.memory_budget_mb!r}")

        # Normalise so that equal configs compare and serialise equally.
        set_("patch_size", "auto" if auto else _compact({t: int(p) for t, p in patch.items()}))
        set_("down_patch_size", _compact({t: (None if p is None else int(p)) for t, p in down.items()}))
        set_("gamma", _compact({t: float(g) for t, g in gamma.items()}))
        set_("topk", None if self.topk is None else int(self.topk))
        set_("noise_seed", int(self.noise_seed))
        set_("beta_start", float(self.beta_start))
        set_("beta_end", float(self.beta_end))
        set_("_patch", {t: int(p) for t, p in patch.items()})
        set_("_down", {t: (None if p is None else int(p)) for t, p in down.items()})
        set_("_gamma", {t: float(g) for t, g in gamma.items()})

    # ------------------------------------------------------------------ per-timestep views
    def patch_at(self, t: int) -> int:
        """Patch size P_t of the single scale at timestep t."""
        if self.patch_size == "auto":
            raise NDAError("patch_size='auto' depends on the image size: use config.resolve(H, W) "
                           "(NDAIndex does this when it sees the training images)")
        return self._patch[t]

    def resolve(self, height: int, width: int) -> "NDAConfig":
        """This config with patch_size='auto' replaced by the concrete sizes for H×W images.

        Results always carry a resolved config, so they say which patch sizes produced them.
        """
        if self.patch_size != "auto":
            return self
        side = min(int(height), int(width))
        return self.replace(patch_size={t: auto_patch_size(t, side) for t in self.timesteps})

    def down_at(self, t: int) -> int | None:
        """Patch size P′_t of the 2×2-block scale at timestep t (None: no second scale)."""
        return self._down[t]

    def gamma_at(self, t: int) -> float:
        """Weight γ_t of the single scale at timestep t."""
        return self._gamma[t]

    def alpha_bar(self) -> np.ndarray:
        """ᾱ_t for t = 0..num_train_timesteps-1, float64, (num_train_timesteps,)."""
        if self.alphas_cumprod is not None:
            return np.asarray(self.alphas_cumprod, dtype=np.float64)
        return alphas_cumprod(self.num_train_timesteps, self.beta_start, self.beta_end, self.beta_schedule)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        out["timesteps"] = list(self.timesteps)
        for k in ("patch_size", "down_patch_size", "gamma"):
            if isinstance(out[k], dict):
                out[k] = {str(t): v for t, v in out[k].items()}
        if out["alphas_cumprod"] is not None:
            out["alphas_cumprod"] = list(out["alphas_cumprod"])
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NDAConfig":
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(d) - names)
        if unknown:
            raise NDAError(f"unknown config keys {unknown}; valid keys: {sorted(names)}")
        kw = dict(d)
        if "timesteps" in kw and isinstance(kw["timesteps"], list):
            kw["timesteps"] = tuple(kw["timesteps"])
        return cls(**kw)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> "NDAConfig":
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            try:
                text = Path(path_or_text).read_text()
            except OSError as exc:
                raise NDAError(f"cannot read config file {path_or_text}: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NDAError(f"config is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(data, dict):
            raise NDAError("config JSON must be an object of field → value")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "NDAConfig":
        d = self.to_dict()
        d.update(changes)
        return NDAConfig.from_dict(d)

    def score_dict(self) -> dict[str, Any]:
        """The fields that change the scores (engine, device and memory budget do not)."""
        d = self.to_dict()
        return {k: d[k] for k in _SCORE_FIELDS}

    def score_fingerprint(self) -> str:
        """A short hash of `score_dict()`: equal ⇔ the results are comparable."""
        blob = json.dumps(self.score_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def resolved_device(self) -> torch.device:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise NDAError("device='cuda' but CUDA is not available here; use device='cpu' or 'auto'")
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32


def _compact(table: dict[int, Any]) -> Any:
    """A per-timestep table whose values are all equal collapses back to the scalar."""
    values = list(table.values())
    if all(v == values[0] for v in values):
        return values[0]
    return dict(table)


def alphas_cumprod(num_train_timesteps: int, beta_start: float, beta_end: float, schedule: str) -> np.ndarray:
    """ᾱ_t exactly as diffusers' `DDPMScheduler` computes it (float32 math), returned as float64.

    Matching diffusers bit for bit means the noise levels are the ones the models were trained with.
    """
    T = num_train_timesteps
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    elif schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    elif schedule == "cosine":  # diffusers' "squaredcos_cap_v2"

        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor(
            [min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)], dtype=torch.float32
        )
    else:
        raise NDAError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}; got {schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0).double().numpy()
