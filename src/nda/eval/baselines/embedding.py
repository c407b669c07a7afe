"""Embedding-similarity baselines: ``embed-dot`` and ``embed-cos`` with a pluggable encoder.

An *encoder* is any callable ``images (N, C, H, W) float32 in [-1, 1] -> features (N, D)`` with a
``name`` attribute (used in cache keys and reports). Scores are dot products or cosines of the
features (queries × train, higher = proponent); see :func:`embedding_scores`.

On the LDS benchmarks the default encoder is :class:`UNetFeatureEncoder` over the benchmark's full
diffusion model (the one the ``gen`` queries were sampled from): no pretrained vision encoder (CLIP,
DINO, ...) is available offline here, and the full model is the one network trained on exactly this
data. It noises the image at a few fixed timesteps with fixed noise (seeded like the rest of the
project: ``Generator('cpu').manual_seed(1000 * noise_seed + t)``), runs the UNet and average-pools
the mid-block activations (the bottleneck, 4×4×64 on FMNIST-2) to ``pool × pool`` per channel; the
per-timestep features are concatenated.
"""
from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence

import numpy as np

from .common import check_pair
from .pixel import similarity


class Encoder(Protocol):
    name: str

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


class PixelEncoder:
    """The identity encoder (flattened pixels): ``embed-*`` with it equals ``pixel-*``."""

    name = "pixels"

    def __call__(self, images):
        a = np.asarray(images, dtype=np.float32)
        return a.reshape(len(a), -1)


class FunctionEncoder:
    """Wrap a plain function ``images -> (N, D)`` as an encoder."""

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name

    def __call__(self, images):
        return np.asarray(self.fn(images))


class UNetFeatureEncoder:
    """Mid-block activations of a diffusers ``UNet2DModel`` at fixed noise levels, average-pooled.

    Args:
        model: a ``UNet2DModel`` (eval mode).
        timesteps: noise levels t (the noisy input is √ᾱ_t x + √(1−ᾱ_t) ε_t).
        noise_seed: ε_t = randn((C, H, W), generator=Generator('cpu').manual_seed(1000 * noise_seed + t)),
            shared by every image.
        pool: adaptive average pooling of the mid-block output to pool × pool per channel.
        batch_size: images per forward pass.
    """

    def __init__(self, model, timesteps: Sequence[int] = (50, 200, 400), noise_seed: int = 0, pool: int = 2, batch_size: int = 256, tag: str = ""):
        self.model = model
        self.timesteps = tuple(int(t) for t in timesteps)
        self.noise_seed = int(noise_seed)
        self.pool = int(pool)
        self.batch_size = int(batch_size)
        self.name = f"unet-mid(t={','.join(map(str, self.timesteps))};pool={self.pool};seed={self.noise_seed}{';' + tag if tag else ''})"

    def __call__(self, images) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from ..diffusion import alphas_cumprod

        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        ac = alphas_cumprod()
        grabbed = {}
        hook = self.model.mid_block.register_forward_hook(lambda m, i, o: grabbed.__setitem__("h", o))
        feats = []
        try:
            with torch.no_grad():
                for t in self.timesteps:
                    a = float(ac[t])
                    eps = torch.randn(tuple(x.shape[1:]), generator=torch.Generator("cpu").manual_seed(1000 * self.noise_seed + t))
                    parts = []
                    for s in range(0, len(x), self.batch_size):
                        xb = x[s : s + self.batch_size]
                        xt = math.sqrt(a) * xb + math.sqrt(1 - a) * eps
                        self.model(xt, torch.full((len(xb),), t, dtype=torch.long))
                        h = grabbed["h"]
                        parts.append(F.adaptive_avg_pool2d(h, self.pool).flatten(1))
                    feats.append(torch.cat(parts))
        finally:
            hook.remove()
        return torch.cat(feats, 1).double().numpy()


def embedding_scores(encoder: Encoder | Callable, train, queries, metric: str = "cos", train_features=None) -> np.ndarray:
    """(Q, N) dot-product or cosine similarity of ``encoder`` features of queries and training images.

    ``train_features`` (N, D) may be passed to skip re-encoding the training set.
    """
    train, queries = check_pair(train, queries)
    ft = np.asarray(encoder(train) if train_features is None else train_features, dtype=np.float64)
    fq = np.asarray(encoder(queries), dtype=np.float64)
    if ft.ndim != 2 or fq.ndim != 2 or len(ft) != len(train) or len(fq) != len(queries):
        raise ValueError(f"encoder must return (N, D) features, got {ft.shape} for {train.shape[0]} train and {fq.shape} for {queries.shape[0]} queries")
    if not (np.isfinite(ft).all() and np.isfinite(fq).all()):
        raise ValueError("encoder returned NaN/Inf features")
    return similarity(fq, ft, metric)
