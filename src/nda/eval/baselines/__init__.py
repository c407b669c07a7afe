"""Baseline attribution methods for the LDS benchmarks, registered into ``nda bench``'s registry.

Importing this package registers, in :data:`nda.eval.cli_bench.METHODS` (each
``fn(bench, queries, config) -> scores (Q, N)``, higher = proponent):

========================  ==================================================================
``random``                i.i.d. normal scores (registered by cli_bench itself)
``pixel-dot/-cos``        flattened [-1, 1] pixels (:mod:`.pixel`)
``embed-dot/-cos``        features of a pluggable encoder; on a benchmark: the full diffusion
                          model's mid-block activations (:mod:`.embedding`)
``trak-10/-100``          TRAK, output = denoising loss, 10 / 100 timesteps (:mod:`.trak`)
``dtrak-10/-100``         D-TRAK, output = mean(ε_θ²), 10 / 100 timesteps
``nda``                   NDA, default :class:`nda.NDAConfig` (registered by cli_bench)
``nda-single``            NDA, one scale, one patch size chosen on calib (:data:`NDA_SINGLE`)
``nda-two``               NDA, two scales, (P, P′, γ) chosen on calib (:data:`NDA_TWO`)
========================  ==================================================================

The Python API: :func:`pixel_scores`, :func:`embedding_scores` (+ :class:`UNetFeatureEncoder`),
:func:`trak_scores_from_features`, :func:`featurize`, :class:`ChunkedProjector`.
See ``docs/baselines.md``.
"""
from __future__ import annotations

import numpy as np

from ..cli_bench import METHODS, register_method
from .embedding import Encoder, FunctionEncoder, PixelEncoder, UNetFeatureEncoder, embedding_scores
from .pixel import pixel_scores, similarity
from .trak import ChunkedProjector, featurize, per_sample_grads, trak_scores_from_features

# NDA variants, chosen on fmnist2's calib split by benchmarks/ablate_nda.py (docs/configuration.md):
# the best patch size constant over the default timesteps, and the best constant two-scale setting.
# The default config ("nda") uses the best non-decreasing per-timestep schedule (NDAConfig "auto").
NDA_SINGLE = {"patch_size": 11}
NDA_TWO = {"patch_size": 7, "down_patch_size": 12, "gamma": 0.5}

BASELINES = (
    "random", "pixel-dot", "pixel-cos", "embed-dot", "embed-cos",
    "trak-10", "trak-100", "dtrak-10", "dtrak-100", "nda", "nda-single", "nda-two",
)


def _pixel(metric):
    def fn(bench, queries, config):
        return pixel_scores(bench.train, queries, metric)

    fn.__doc__ = f"raw pixels, {metric}"
    return fn


register_method("pixel-dot", _pixel("dot"))
register_method("pixel-cos", _pixel("cos"))

_ENC_CACHE: dict = {}


def bench_encoder(bench, config: dict | None = None):
    """The benchmark encoder: ``config["encoder"]`` = "unet-mid" (default) or "pixels"."""
    config = config or {}
    kind = config.get("encoder", "unet-mid")
    if kind == "pixels":
        return PixelEncoder()
    if kind == "unet-mid":
        from .common import full_model

        model, msha = full_model(bench)
        return UNetFeatureEncoder(
            model,
            timesteps=tuple(config.get("embed_timesteps", (50, 200, 400))),
            noise_seed=int(config.get("noise_seed", 0)),
            pool=int(config.get("pool", 2)),
            tag=msha,
        )
    raise ValueError(f"unknown encoder {kind!r}; use 'unet-mid' or 'pixels'")


def _embed(metric):
    def fn(bench, queries, config):
        from .common import sha

        enc = bench_encoder(bench, config)
        key = (enc.name, sha(bench.train))
        if key not in _ENC_CACHE:
            _ENC_CACHE[key] = enc(bench.train)
        return embedding_scores(enc, bench.train, queries, metric, train_features=_ENC_CACHE[key])

    fn.__doc__ = f"encoder features, {metric}"
    return fn


register_method("embed-dot", _embed("dot"))
register_method("embed-cos", _embed("cos"))


def _trak(output, n_t):
    def fn(bench, queries, config):
        from .trak import bench_method

        return bench_method(bench, queries, config, output, n_t)

    return fn


for _n in (10, 100):
    register_method(f"trak-{_n}", _trak("loss", _n))
    register_method(f"dtrak-{_n}", _trak("dtrak", _n))


def _nda(base: dict):
    def fn(bench, queries, config):
        import nda

        cfg = nda.NDAConfig.from_dict({**base, **(config or {})})
        return np.asarray(nda.score(bench.train, queries, cfg))

    return fn


register_method("nda-single", _nda(NDA_SINGLE))
register_method("nda-two", _nda(NDA_TWO))

__all__ = [
    "METHODS", "BASELINES", "NDA_SINGLE", "NDA_TWO", "Encoder", "FunctionEncoder", "PixelEncoder",
    "UNetFeatureEncoder", "embedding_scores", "pixel_scores", "similarity", "ChunkedProjector",
    "featurize", "per_sample_grads", "trak_scores_from_features", "bench_encoder",
]
