"""A small, deterministic DDPM training / sampling / measuring harness (CPU-friendly).

Everything here is used by the LDS benchmarks (:mod:`nda.eval.benchmarks`):

* :class:`TrainConfig` -- the UNet architecture and optimiser settings, JSON-serialisable;
* :func:`make_model` -- a diffusers ``UNet2DModel`` built from a config with a fixed init seed;
* :func:`train` -- ``steps`` AdamW steps of the ε-prediction loss (DDPM, linear betas
  1e-4..0.02, 1000 steps), a fixed step count whatever the data size;
* :func:`sample_ddpm` -- ancestral DDPM (1000 steps), one seed per image (:func:`sample_ddim`:
  DDIM η = 0, kept for comparison);
* :func:`measure_outputs` -- the LDS model output: the per-sample ε-MSE averaged over timesteps and
  noise seeds.

Randomness (all from explicit ``torch.Generator("cpu")`` objects, never the global RNG):

* init: diffusers' default initialisation under ``torch.manual_seed(seed)`` inside
  ``torch.random.fork_rng`` (the caller's global RNG state is left untouched);
* training step ``i``: minibatch indices, timesteps and noise come from one generator seeded with
  ``seed`` at the start of training (drawn in that order every step), so the run is a pure function
  of (data, config, seed);
* measuring: see :func:`measure_outputs`.

With ``torch.set_num_threads`` fixed the results are bit-identical run to run on one machine;
different thread counts may change float32 reductions in the last bits.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

N_TRAIN_TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02


def alphas_cumprod() -> torch.Tensor:
    """ᾱ_t for t = 0..999 in float64 (same values as diffusers' DDPMScheduler, linear betas)."""
    betas = torch.linspace(BETA_START, BETA_END, N_TRAIN_TIMESTEPS, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Architecture + optimisation of one benchmark model (identical for every model of a build)."""

    sample_size: int = 16
    in_channels: int = 1
    block_out_channels: tuple = (32, 64, 64)
    layers_per_block: int = 1
    down_block_types: tuple = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    up_block_types: tuple = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    norm_num_groups: int = 8
    attention_head_dim: int = 8
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # "cosine" (to 0 after warmup) or "constant"
    grad_clip: float = 1.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def make_model(cfg: TrainConfig, seed: int = 0):
    """A diffusers ``UNet2DModel`` whose parameters are a pure function of (cfg, seed)."""
    from diffusers import UNet2DModel

    # diffusers' default init, drawn under a fixed seed without disturbing the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = UNet2DModel(
            sample_size=cfg.sample_size,
            in_channels=cfg.in_channels,
            out_channels=cfg.in_channels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            down_block_types=tuple(cfg.down_block_types),
            up_block_types=tuple(cfg.up_block_types),
            norm_num_groups=cfg.norm_num_groups,
            attention_head_dim=cfg.attention_head_dim,
        )
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        rem = max(cfg.steps - cfg.warmup_steps, 1)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / rem))
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}")


def _as_tensor(images) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN/Inf")
    return x.contiguous()


def train(
    images,
    cfg: TrainConfig,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
):
    """Train a fresh model on ``images`` (N, C, H, W) in [-1, 1]; returns (model, info dict).

    Each step draws, from one ``Generator().manual_seed(seed + 1)`` in this order: ``batch_size``
    indices uniformly with replacement, ``batch_size`` timesteps uniform in 0..999, and the noise
    (batch_size, C, H, W). Loss: mean squared error between predicted and true ε.
    """
    x = _as_tensor(images)
    n = x.shape[0]
    if n == 0:
        raise ValueError("empty training set")
    model = make_model(cfg, seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ac = alphas_cumprod().to(torch.float32)
    g = torch.Generator("cpu").manual_seed(int(seed) + 1)
    t0 = time.perf_counter()
    losses = []
    for step in range(cfg.steps):
        for grp in opt.param_groups:
            grp["lr"] = _lr_at(cfg, step)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g)
        t = torch.randint(0, N_TRAIN_TIMESTEPS, (cfg.batch_size,), generator=g)
        eps = torch.randn((cfg.batch_size,) + tuple(x.shape[1:]), generator=g)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x[idx] + (1 - a).sqrt() * eps
        pred = model(xt, t).sample
        loss = torch.mean((pred - eps) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, float(loss))
    model.eval()
    info = {
        "train_seconds": time.perf_counter() - t0,
        "final_loss_avg100": float(np.mean(losses[-100:])),
        "n_train": int(n),
        "seed": int(seed),
    }
    return model, info


def default_measure_timesteps(n: int = 100) -> np.ndarray:
    """``n`` evenly spaced timesteps in 0..999: round(linspace(0, 999, n))."""
    return np.round(np.linspace(0, N_TRAIN_TIMESTEPS - 1, n)).astype(np.int64)


@torch.no_grad()
def measure_outputs(
    model,
    images,
    timesteps: Sequence[int] | None = None,
    noise_seeds: Iterable[int] = (0, 1, 2),
    batch_size: int = 512,
    return_per_timestep: bool = False,
):
    """Per-sample ε-MSE averaged over ``timesteps`` × ``noise_seeds``; returns float64 (Q,).

    Noise: for noise seed ``e`` and timestep ``t`` ONE tensor
    ``ε = torch.randn((C, H, W), generator=torch.Generator("cpu").manual_seed(1000 * e + t))``
    (float32) is drawn and shared by every image (the same convention as the NDA score, SPEC §1),
    so an image's output does not depend on which other images are measured with it or on the
    batch size. x_t = √ᾱ_t x + √(1−ᾱ_t) ε; loss = mean over (C, H, W) of (ε_θ(x_t, t) − ε)².

    With ``return_per_timestep`` also returns the (Q, T) seed-averaged per-timestep losses.
    """
    x = _as_tensor(images)
    if timesteps is None:
        timesteps = default_measure_timesteps()
    ts = [int(t) for t in timesteps]
    if not ts or min(ts) < 0 or max(ts) >= N_TRAIN_TIMESTEPS:
        raise ValueError("timesteps must be a non-empty list of ints in 0..999")
    seeds = [int(e) for e in noise_seeds]
    if not seeds:
        raise ValueError("noise_seeds must be non-empty")
    model.eval()
    ac = alphas_cumprod()
    q = x.shape[0]
    per_t = torch.zeros((q, len(ts)), dtype=torch.float64)
    for j, t in enumerate(ts):
        a = float(ac[t])
        for e in seeds:
            eps = torch.randn(tuple(x.shape[1:]), generator=torch.Generator("cpu").manual_seed(1000 * e + t))
            for s in range(0, q, batch_size):
                xb = x[s : s + batch_size]
                xt = math.sqrt(a) * xb + math.sqrt(1 - a) * eps
                tt = torch.full((xb.shape[0],), t, dtype=torch.long)
                pred = model(xt, tt).sample
                per_t[s : s + batch_size, j] += ((pred - eps) ** 2).flatten(1).mean(1).double()
    per_t /= len(seeds)
    out = per_t.mean(1).numpy()
    if return_per_timestep:
        return out, per_t.numpy()
    return out


@torch.no_grad()
def sample_ddim(model, seeds: Sequence[int], n_steps: int = 50, shape=None, batch_size: int = 256) -> np.ndarray:
    """DDIM (η = 0) samples, one per seed; the initial noise of image i is
    ``torch.randn(shape, generator=Generator().manual_seed(seeds[i]))``. Returns float32 (K, C, H, W)
    clipped to [-1, 1]. Uses diffusers' DDIMScheduler with the benchmark's betas, the predicted x0
    clipped to [-1, 1] at every step (``clip_sample=True``) and ``timestep_spacing="leading"``.
    """
    from diffusers import DDIMScheduler

    if shape is None:
        cfg = model.config
        shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    sched = DDIMScheduler(
        num_train_timesteps=N_TRAIN_TIMESTEPS,
        beta_start=BETA_START,
        beta_end=BETA_END,
        beta_schedule="linear",
        clip_sample=True,
        set_alpha_to_one=True,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )
    sched.set_timesteps(n_steps)
    model.eval()
    outs = []
    seeds = [int(s) for s in seeds]
    for s0 in range(0, len(seeds), batch_size):
        chunk = seeds[s0 : s0 + batch_size]
        x = torch.stack([torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(s)) for s in chunk])
        for t in sched.timesteps:
            tt = torch.full((x.shape[0],), int(t), dtype=torch.long)
            eps = model(x, tt).sample
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        outs.append(x.clamp(-1, 1))
    return torch.cat(outs).numpy().astype(np.float32)


@torch.no_grad()
def sample_ddpm(model, seeds: Sequence[int], shape=None, batch_size: int = 256) -> np.ndarray:
    """Ancestral DDPM sampling over all 1000 steps, one seed per image; float32 (K, C, H, W) in [-1, 1].

    Image i uses its own ``torch.Generator("cpu").manual_seed(seeds[i])``: first its initial noise
    ``randn(shape)``, then one ``randn(shape)`` per step t = 999..1 (none at t = 0), so an image is
    a pure function of its seed whatever the batch. Step (the same as diffusers' DDPMScheduler with
    ``clip_sample=True``, ``variance_type="fixed_small"``): x̂0 = clip((x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t, −1, 1);
    x_{t−1} = √ᾱ_{t−1} β_t/(1−ᾱ_t) · x̂0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) · x_t + σ_t z,
    σ_t² = β_t (1−ᾱ_{t−1})/(1−ᾱ_t).
    """
    if shape is None:
        cfg = model.config
        shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    shape = tuple(shape)
    betas = torch.linspace(BETA_START, BETA_END, N_TRAIN_TIMESTEPS, dtype=torch.float64)
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, 0)
    model.eval()
    outs = []
    seeds = [int(s) for s in seeds]
    for s0 in range(0, len(seeds), batch_size):
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[s0 : s0 + batch_size]]
        x = torch.stack([torch.randn(shape, generator=g) for g in gens])
        for t in range(N_TRAIN_TIMESTEPS - 1, -1, -1):
            a_t = float(ac[t])
            a_prev = float(ac[t - 1]) if t > 0 else 1.0
            b_t = float(betas[t])
            eps = model(x, torch.full((x.shape[0],), t, dtype=torch.long)).sample
            x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
            x = (math.sqrt(a_prev) * b_t / (1 - a_t)) * x0 + (math.sqrt(float(alphas[t])) * (1 - a_prev) / (1 - a_t)) * x
            if t > 0:
                sigma = math.sqrt(b_t * (1 - a_prev) / (1 - a_t))
                x = x + sigma * torch.stack([torch.randn(shape, generator=g) for g in gens])
        outs.append(x.clamp(-1, 1))
    return torch.cat(outs).numpy().astype(np.float32)


def save_model(model, path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def load_model(path, cfg: TrainConfig):
    from safetensors.torch import load_file

    model = make_model(cfg, 0)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model
