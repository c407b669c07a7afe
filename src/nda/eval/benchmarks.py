"""LDS benchmarks: a resumable builder (train subset models, measure them) and a loader.

A benchmark is described by a :class:`BenchmarkSpec` (data, model config, subsets, measuring
protocol). :func:`build` runs, in order, skipping whatever is already finished:

1. ``subsets.npz``: M stratified half-size subsets (boolean (M, N)), from ``subset_seed``;
2. the **full model** on all N training images (seed 0); its weights go to the work dir (and,
   when small, to ``full_model.safetensors`` in the results dir);
3. ``generated.npz``: the ``gen`` queries and the generated part of ``calib`` (DDIM, one seed per
   image) sampled from the full model;
4. one output file per model, ``outputs/<model id>.npz`` (written atomically): for every query
   split the per-sample ε-MSE (:func:`nda.eval.diffusion.measure_outputs`), plus the same loss
   averaged over 10 consecutive-timestep buckets, plus a JSON ``meta`` entry (timings, fingerprint);
   ids are ``full_s0`` and ``sub{m:03d}_s{seed}``;
5. ``manifest.json``: the whole protocol and the progress (rewritten after every model).

Killing the builder at any point loses at most the model being trained; rerunning the same
command resumes. Every output file carries the protocol fingerprint; the builder refuses to mix
files made under a different protocol (use a fresh ``root``).

:func:`load` reads a results dir and returns a :class:`Benchmark` with only the finished subset
models (``n_models``), outputs averaged over the seeds available for each subset.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .diffusion import TrainConfig

DATA_ROOT = Path(__file__).resolve().parents[1] / "data"
SPLITS = ("val", "gen", "calib")
N_BUCKETS = 10


# --------------------------------------------------------------------------------------- specs
@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    train_config: TrainConfig
    n_subsets: int = 64
    subset_seed: int = 0
    subset_fraction: float = 0.5
    model_seeds: tuple = (0,)  # seeds trained per subset (in this order)
    full_seed: int = 0
    n_measure_timesteps: int = 100
    noise_seeds: tuple = (0, 1, 2)
    n_gen: int = 100
    n_gen_calib: int = 50
    gen_seed_base: int = 10_000  # gen image i: seed gen_seed_base + i
    calib_gen_seed_base: int = 20_000  # generated calib image i: seed calib_gen_seed_base + i
    sampler: str = "ddpm"  # "ddpm" (ancestral, 1000 steps) or "ddim<K>" (η = 0, K steps)
    commit_full_model_max_bytes: int = 4 * 2**20
    default_work: str = ""  # default dir for model weights ('' -> runs/<name>)

    def protocol(self) -> dict:
        d = dataclasses.asdict(self)
        d["train_config"] = self.train_config.to_dict()
        for k in ("commit_full_model_max_bytes", "default_work", "model_seeds"):
            d.pop(k)
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.protocol(), sort_keys=True).encode()).hexdigest()[:16]


FMNIST2_TRAIN_CONFIG = TrainConfig(
    sample_size=16,
    in_channels=1,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    steps=800,
    batch_size=64,
    lr=1e-3,
    weight_decay=0.0,
    warmup_steps=100,
    lr_schedule="cosine",
    grad_clip=1.0,
)

MICRO_TRAIN_CONFIG = TrainConfig(
    sample_size=8,
    in_channels=1,
    block_out_channels=(16, 32),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    steps=150,
    batch_size=32,
    lr=2e-3,
    weight_decay=0.0,
    warmup_steps=20,
    lr_schedule="cosine",
    grad_clip=1.0,
)

SPECS: dict[str, BenchmarkSpec] = {
    "fmnist2": BenchmarkSpec(name="fmnist2", train_config=FMNIST2_TRAIN_CONFIG),
    "micro": BenchmarkSpec(
        name="micro",
        train_config=MICRO_TRAIN_CONFIG,
        n_subsets=16,
        n_measure_timesteps=20,
        n_gen=0,
        n_gen_calib=0,
    ),
}


# ---------------------------------------------------------------------------------------- data
def _u8_to_float(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) / 127.5 - 1.0


def real_data(name: str) -> dict:
    """The real images of a benchmark: train, train_labels, val, val_labels, calib_real, calib_real_labels
    (float32 in [-1, 1], (N, 1, H, W))."""
    if name == "fmnist2":
        with np.load(DATA_ROOT / "fmnist2" / "data.npz", allow_pickle=False) as d:
            return {
                "train": _u8_to_float(d["train"]),
                "train_labels": d["train_labels"].astype(np.int64),
                "val": _u8_to_float(d["val"]),
                "val_labels": d["val_labels"].astype(np.int64),
                "calib_real": _u8_to_float(d["calib_real"]),
                "calib_real_labels": d["calib_real_labels"].astype(np.int64),
            }
    if name == "micro":
        return micro_data()
    raise KeyError(f"unknown benchmark {name!r}; known: {sorted(SPECS)}")


def micro_data(n_per_class: int = 32, n_val_per_class: int = 8) -> dict:
    """8×8 version of FMNIST-2 (2×2 average pooling of the 16×16 images), first ``n_per_class``
    training images of each class and the first ``n_val_per_class`` val images of each class."""
    full = real_data("fmnist2")

    def pool(a):
        return a.reshape(a.shape[0], a.shape[1], a.shape[2] // 2, 2, a.shape[3] // 2, 2).mean((3, 5))

    def take(x, y, k):
        idx = np.concatenate([np.flatnonzero(y == c)[:k] for c in (0, 1)])
        return pool(x[idx]).astype(np.float32), y[idx]

    tr, trl = take(full["train"], full["train_labels"], n_per_class)
    va, val = take(full["val"], full["val_labels"], n_val_per_class)
    ca, cal = take(full["calib_real"], full["calib_real_labels"], n_val_per_class // 2)
    return {"train": tr, "train_labels": trl, "val": va, "val_labels": val, "calib_real": ca, "calib_real_labels": cal}


def make_subsets(labels: np.ndarray, n_subsets: int, seed: int, fraction: float = 0.5) -> np.ndarray:
    """(M, N) bool: each row holds round(fraction · n_c) items of every class c, chosen with
    ``np.random.default_rng(seed)`` (one permutation per row and class, classes in sorted order)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.zeros((n_subsets, len(labels)), dtype=bool)
    classes = np.unique(labels)
    for m in range(n_subsets):
        for c in classes:
            idx = np.flatnonzero(labels == c)
            k = int(round(fraction * len(idx)))
            out[m, rng.permutation(idx)[:k]] = True
    return out


def _sha(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------- I/O
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_savez(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_write_bytes(path, buf.getvalue())


def _atomic_json(path: Path, obj) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(path: Path) -> bool:
    """Atomically claim a build job (a file holding our pid); False if a live worker holds it.

    A claim left by a dead worker (killed session) is taken over, so a build always resumes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _pid_alive(pid):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _release(path: Path) -> None:
    path.unlink(missing_ok=True)


def _read_meta(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as d:
        return json.loads(str(d["meta"]))


# --------------------------------------------------------------------------------------- build
def _queries(spec: BenchmarkSpec, real: dict, generated: dict | None) -> dict:
    q = {"val": real["val"]}
    if spec.n_gen or spec.n_gen_calib:
        if generated is None:
            raise RuntimeError("generated queries missing")
        q["gen"] = generated["gen"]
        q["calib"] = np.concatenate([real["calib_real"], generated["calib_gen"]])
    else:
        q["calib"] = real["calib_real"]
    return q


def _measure_all(model, spec: BenchmarkSpec, queries: dict) -> dict:
    from .diffusion import default_measure_timesteps, measure_outputs

    ts = default_measure_timesteps(spec.n_measure_timesteps)
    names = list(queries)
    allq = np.concatenate([queries[k] for k in names])
    mean, per_t = measure_outputs(model, allq, ts, spec.noise_seeds, return_per_timestep=True)
    nb = min(N_BUCKETS, len(ts))
    buckets = np.stack([b.mean(1) for b in np.array_split(per_t, nb, axis=1)], 1).astype(np.float32)
    out, s = {}, 0
    for k in names:
        n = len(queries[k])
        out[k] = mean[s : s + n]
        out[f"{k}_by_t"] = buckets[s : s + n]
        s += n
    return out


def _nn_label(x: np.ndarray, train: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Label of each image's nearest training image (pixel L2): a rough class of generated images."""
    if not len(x):
        return np.zeros(0, dtype=np.int64)
    a, t = x.reshape(len(x), -1).astype(np.float64), train.reshape(len(train), -1).astype(np.float64)
    d = (a * a).sum(1)[:, None] + (t * t).sum(1)[None] - 2 * a @ t.T
    return labels[d.argmin(1)].astype(np.int64)


def _sampler_doc(sampler: str) -> str:
    if sampler == "ddpm":
        return "ancestral DDPM, all 1000 steps, x0 clipped to [-1,1], fixed-small variance (nda.eval.diffusion.sample_ddpm)"
    if sampler.startswith("ddim"):
        return f"DDIM eta=0, {int(sampler[4:])} steps, clip_sample=True, leading spacing (nda.eval.diffusion.sample_ddim)"
    raise ValueError(f"unknown sampler {sampler!r}")


def _sample(model, sampler: str, seeds) -> np.ndarray:
    from . import diffusion as D

    if not len(seeds):
        return np.zeros((0, model.config.in_channels, model.config.sample_size, model.config.sample_size), np.float32)
    if sampler == "ddpm":
        return D.sample_ddpm(model, seeds)
    if sampler.startswith("ddim"):
        return D.sample_ddim(model, seeds, int(sampler[4:]))
    raise ValueError(f"unknown sampler {sampler!r}")


def _fmt_s(x) -> str:
    return "n/a" if x is None else f"{x:.0f}s"


def _log(msg: str, stream=None) -> None:
    stream = stream or sys.stdout
    print(f"[{_dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}] {msg}", file=stream, flush=True)


def build(
    name: str = "fmnist2",
    root: str | os.PathLike | None = None,
    work: str | os.PathLike | None = None,
    max_models: int | None = None,
    threads: int | None = 1,
    seeds: tuple | None = None,
    spec: BenchmarkSpec | None = None,
    progress: bool = True,
    real: dict | None = None,
) -> dict:
    """Build (or resume) benchmark ``name``; returns the manifest.

    root: results dir (default: the package's ``data/<name>``); work: weights dir (default
    ``runs/<name>`` under the current directory); max_models: train at most this many models in
    this call (the full model counts); threads: ``torch.set_num_threads``; seeds: model seeds per
    subset (default the spec's, ``(0,)``; e.g. ``(0, 1, 2)`` to add seeds later — all seed-0 models
    are trained before any seed-1 model).
    """
    import torch

    from . import diffusion as D

    spec = spec or SPECS[name]
    if threads:
        torch.set_num_threads(int(threads))
    root = Path(root) if root is not None else DATA_ROOT / spec.name
    work = Path(work) if work is not None else Path(spec.default_work or Path("runs") / spec.name)
    root.mkdir(parents=True, exist_ok=True)
    (root / "outputs").mkdir(exist_ok=True)
    (work / "models").mkdir(parents=True, exist_ok=True)
    seeds = tuple(seeds) if seeds is not None else tuple(spec.model_seeds)
    fp = spec.fingerprint()
    real = real if real is not None else real_data(spec.name)
    train_x, labels = real["train"], real["train_labels"]

    # refuse to mix protocols
    mpath = root / "manifest.json"
    old = json.loads(mpath.read_text()) if mpath.exists() else None
    if old is not None and old.get("fingerprint") != fp:
        raise RuntimeError(
            f"{mpath} was built with protocol {old.get('fingerprint')} but the current spec is {fp}; "
            "use a fresh --root (or delete the old results) instead of mixing them"
        )

    # 1. subsets
    spath = root / "subsets.npz"
    if spath.exists():
        with np.load(spath, allow_pickle=False) as d:
            subsets = d["subsets"]
    else:
        subsets = make_subsets(labels, spec.n_subsets, spec.subset_seed, spec.subset_fraction)
        _atomic_savez(spath, subsets=subsets, seed=np.int64(spec.subset_seed))
    if subsets.shape != (spec.n_subsets, len(train_x)):
        raise RuntimeError(f"{spath} has shape {subsets.shape}, expected {(spec.n_subsets, len(train_x))}")

    meta_common = {"fingerprint": fp, "benchmark": spec.name}
    timings: dict = dict(old.get("timings", {})) if old else {}
    t_build0 = time.time()

    def write_manifest(extra=None):
        done = sorted(p.stem for p in (root / "outputs").glob("*.npz"))
        # per-model timings come from the outputs themselves, so that workers sharing this
        # build (each rewriting the manifest) never drop each other's entries
        timings["per_model"] = {
            d: {"train_s": m.get("train_seconds"), "measure_s": m.get("measure_seconds")}
            for d in done
            for m in [_read_meta(root / "outputs" / f"{d}.npz")]
        }
        man = {
            "benchmark": spec.name,
            "fingerprint": fp,
            "protocol": spec.protocol(),
            "model": {
                "class": "diffusers.UNet2DModel",
                "n_params": n_params,
                "objective": "epsilon prediction, MSE",
                "scheduler": "DDPM, 1000 steps, linear betas 1e-4..0.02",
                "optimizer": "AdamW (betas 0.9, 0.999), lr warmup then cosine to 0, grad-norm clip",
                "augmentation": "none",
                "init": "diffusers default init under torch.manual_seed(seed)",
                "training_rng": "Generator().manual_seed(seed + 1): per step indices, timesteps, noise",
            },
            "measure": {
                "output": "per-sample mean over (C,H,W) of (eps_theta(x_t,t) - eps)^2, averaged over timesteps x noise seeds",
                "timesteps": [int(t) for t in D.default_measure_timesteps(spec.n_measure_timesteps)],
                "noise_seeds": list(spec.noise_seeds),
                "noise": "one (C,H,W) float32 tensor per (e,t): torch.randn(generator=Generator('cpu').manual_seed(1000*e+t)), shared by all queries",
                "by_t_buckets": f"<split>_by_t: loss averaged over {N_BUCKETS} consecutive groups of the timesteps",
            },
            "generation": {
                "sampler": _sampler_doc(spec.sampler),
                "gen_seeds": f"{spec.gen_seed_base} + i, i < {spec.n_gen}",
                "calib_gen_seeds": f"{spec.calib_gen_seed_base} + i, i < {spec.n_gen_calib}",
                "noise": "per image Generator('cpu').manual_seed(seed): initial randn((C,H,W)), then (DDPM) one randn((C,H,W)) per step",
                "nn_label_counts": gen_counts,
            },
            "data": {
                "n_train": int(len(train_x)),
                "image_shape": list(train_x.shape[1:]),
                "train_sha": _sha(train_x),
                "query_sizes": {k: int(v) for k, v in query_sizes.items()},
                "calib": "real calib images first, then generated ones" if spec.n_gen_calib else "real only",
            },
            "subsets": {
                "n_subsets": spec.n_subsets,
                "seed": spec.subset_seed,
                "fraction": spec.subset_fraction,
                "stratified_by_class": True,
                "sha": _sha(subsets),
            },
            "seeds_planned": list(seeds),
            "progress": {
                "models_done": done,
                "n_done": len(done),
                "n_subset_models_done": sum(1 for d in done if d.startswith("sub")),
                "n_subsets_with_seed": {str(s): sum(1 for d in done if d.startswith("sub") and d.endswith(f"_s{s}")) for s in seeds},
                "complete": all((root / "outputs" / f"{j}.npz").exists() for j in job_ids),
            },
            "timings": timings,
            "environment": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "processor": platform.processor(),
            },
            "updated": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        if extra:
            man.update(extra)
        _atomic_json(mpath, man)
        return man

    n_params = D.n_params(D.make_model(spec.train_config, 0))
    jobs = [("full_s0", None, spec.full_seed)]
    for s in seeds:
        jobs += [(f"sub{m:03d}_s{s}", m, s) for m in range(spec.n_subsets)]
    job_ids = [j[0] for j in jobs]

    # verify existing output files
    for p in (root / "outputs").glob("*.npz"):
        meta = _read_meta(p)
        if meta.get("fingerprint") != fp:
            raise RuntimeError(f"{p} was made with protocol {meta.get('fingerprint')} != {fp}; refusing to mix")

    # 2-3. full model + generated queries
    gpath = root / "generated.npz"
    need_gen = (spec.n_gen or spec.n_gen_calib) and not gpath.exists()
    full_w_work = work / "models" / "full_s0.safetensors"
    full_w_root = root / "full_model.safetensors"
    full_model = None
    trained_now = 0
    if need_gen or not (root / "outputs" / "full_s0.npz").exists():
        if full_w_work.exists() or full_w_root.exists():
            full_model = D.load_model(full_w_work if full_w_work.exists() else full_w_root, spec.train_config)
            _log(f"{spec.name}: loaded full model weights")
        else:
            _log(f"{spec.name}: training full model on {len(train_x)} images ({spec.train_config.steps} steps)")
            full_model, info = D.train(train_x, spec.train_config, spec.full_seed)
            D.save_model(full_model, full_w_work)
            if full_w_work.stat().st_size <= spec.commit_full_model_max_bytes:
                _atomic_write_bytes(full_w_root, full_w_work.read_bytes())
            timings["full_s0_train_s"] = round(info["train_seconds"], 2)
            _log(f"{spec.name}: full model trained in {info['train_seconds']:.1f}s, loss {info['final_loss_avg100']:.4f}")
            trained_now += 1
    if need_gen:
        t0 = time.perf_counter()
        gen = _sample(full_model, spec.sampler, [spec.gen_seed_base + i for i in range(spec.n_gen)])
        cgen = _sample(full_model, spec.sampler, [spec.calib_gen_seed_base + i for i in range(spec.n_gen_calib)])
        _atomic_savez(
            gpath,
            gen=gen,
            calib_gen=cgen,
            gen_seeds=np.arange(spec.n_gen) + spec.gen_seed_base,
            calib_gen_seeds=np.arange(spec.n_gen_calib) + spec.calib_gen_seed_base,
            gen_nn_label=_nn_label(gen, train_x, labels),
            calib_gen_nn_label=_nn_label(cgen, train_x, labels),
            meta=np.array(json.dumps({**meta_common, "sampler": spec.sampler})),
        )
        timings["generate_s"] = round(time.perf_counter() - t0, 2)
        _log(f"{spec.name}: generated {spec.n_gen}+{spec.n_gen_calib} queries in {timings['generate_s']}s")
    generated = None
    if gpath.exists():
        with np.load(gpath, allow_pickle=False) as d:
            generated = {"gen": d["gen"], "calib_gen": d["calib_gen"]}
    gen_counts = {}
    if gpath.exists():
        with np.load(gpath, allow_pickle=False) as d:
            for k in ("gen_nn_label", "calib_gen_nn_label"):
                if k in d.files:
                    gen_counts[k.replace("_nn_label", "")] = np.bincount(d[k], minlength=int(labels.max()) + 1).tolist()
    queries = _queries(spec, real, generated)
    query_sizes = {k: len(v) for k, v in queries.items()}
    qsha = {k: _sha(v) for k, v in queries.items()}

    # 4. models
    todo = [j for j in jobs if not (root / "outputs" / f"{j[0]}.npz").exists()]
    n_left = len(todo)
    if max_models is not None:  # models *trained* in this call, the full model included
        budget, kept = max(0, int(max_models) - trained_now), []
        for j in todo:
            if j[0] == "full_s0" and full_model is not None:
                kept.append(j)  # already trained: only measured
            elif budget > 0:
                kept.append(j)
                budget -= 1
        todo = kept
    write_manifest()
    _log(f"{spec.name}: {len(jobs) - n_left}/{len(jobs)} models done; {len(todo)} to run in this call")
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"{spec.name} models", unit="model", file=sys.stderr, mininterval=1.0)
    per_model_s = []
    for k, (jid, m, seed) in enumerate(todo):
        # several workers may share one build: each job is claimed before it is trained
        if (root / "outputs" / f"{jid}.npz").exists() or not _claim(work / "claims" / jid):
            if bar is not None:
                bar.update(1)
            continue
        t0 = time.perf_counter()
        info = {}
        if jid == "full_s0" and full_model is not None:
            model = full_model
        else:
            x = train_x if m is None else train_x[subsets[m]]
            model, info = D.train(x, spec.train_config, seed)
            if m is not None:
                D.save_model(model, work / "models" / f"{jid}.safetensors")
            else:
                D.save_model(model, full_w_work)
        t1 = time.perf_counter()
        outs = _measure_all(model, spec, queries)
        t2 = time.perf_counter()
        meta = {
            **meta_common,
            "id": jid,
            "subset": m,
            "seed": int(seed),
            "n_train": int(len(train_x) if m is None else subsets[m].sum()),
            "train_seconds": round(info["train_seconds"], 2) if info else timings.get("full_s0_train_s"),
            "measure_seconds": round(t2 - t1, 2),
            "final_train_loss_avg100": info.get("final_loss_avg100"),
            "query_sha": qsha,
            "threads": torch.get_num_threads(),
            "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        _atomic_savez(root / "outputs" / f"{jid}.npz", meta=np.array(json.dumps(meta)), **outs)
        _release(work / "claims" / jid)
        dt = t2 - t0
        per_model_s.append(dt)
        man = write_manifest()
        left_total = len(jobs) - man["progress"]["n_done"]
        eta = np.mean(per_model_s[-5:]) * left_total
        _log(
            f"{spec.name}: {jid} done (train {_fmt_s(meta['train_seconds'])}, measure {_fmt_s(meta['measure_seconds'])}); "
            f"{man['progress']['n_done']}/{len(jobs)} models, ETA for the rest {eta / 3600:.2f} h"
        )
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    timings["last_session_s"] = round(time.time() - t_build0, 1)
    return write_manifest()


# ---------------------------------------------------------------------------------------- load
@dataclasses.dataclass
class Benchmark:
    name: str
    train: np.ndarray  # (N, C, H, W) float32 in [-1, 1]
    labels: np.ndarray  # (N,)
    queries: dict  # split -> (Q, C, H, W)
    query_labels: dict  # split -> (Q,), -1 for generated images
    subsets: np.ndarray  # (M, N) bool: only subsets with at least one finished model
    subset_ids: np.ndarray  # (M,) row of each subset in all_subsets
    all_subsets: np.ndarray  # (M_total, N) bool
    outputs: dict  # split -> (M, Q), averaged over the available seeds
    outputs_by_t: dict  # split -> (M, Q, buckets)
    n_seeds: np.ndarray  # (M,) seeds averaged per subset
    full_outputs: dict | None  # split -> (Q,) of the full model, if measured
    manifest: dict
    root: Path

    @property
    def n_models(self) -> int:
        """Number of subsets with at least one finished model (rows of ``subsets``/``outputs``)."""
        return int(len(self.subset_ids))

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("progress", {}).get("complete", False))

    def __repr__(self) -> str:
        q = ", ".join(f"{k}={len(v)}" for k, v in self.queries.items())
        return (
            f"Benchmark({self.name!r}, N={len(self.train)}, queries: {q}, "
            f"models: {self.n_models}/{len(self.all_subsets)} subsets, seeds/subset {sorted(set(self.n_seeds.tolist()))})"
        )


def load(name: str = "fmnist2", root: str | os.PathLike | None = None, real: dict | None = None) -> Benchmark:
    """Load a built (possibly partially built) benchmark. Only finished subset models are included."""
    spec = SPECS.get(name)
    root = Path(root) if root is not None else DATA_ROOT / name
    mpath = root / "manifest.json"
    if not mpath.exists():
        raise FileNotFoundError(f"no benchmark at {root} (missing manifest.json); build it with `nda bench build {name}`")
    manifest = json.loads(mpath.read_text())
    fp = manifest["fingerprint"]
    real = real if real is not None else real_data(name)
    with np.load(root / "subsets.npz", allow_pickle=False) as d:
        all_subsets = d["subsets"].astype(bool)
    generated = None
    if (root / "generated.npz").exists():
        with np.load(root / "generated.npz", allow_pickle=False) as d:
            generated = {"gen": d["gen"].astype(np.float32), "calib_gen": d["calib_gen"].astype(np.float32)}
    if spec is None:
        spec = BenchmarkSpec(name=name, train_config=TrainConfig(), n_gen=int(generated is not None), n_gen_calib=int(generated is not None))
    queries = _queries(spec, real, generated)
    qlabels = {"val": real["val_labels"]}
    if "gen" in queries:
        qlabels["gen"] = np.full(len(queries["gen"]), -1, dtype=np.int64)
    ncg = len(queries["calib"]) - len(real["calib_real"])
    qlabels["calib"] = np.concatenate([real["calib_real_labels"], np.full(ncg, -1, dtype=np.int64)])

    per_subset: dict = {}
    full_outputs = None
    for p in sorted((root / "outputs").glob("*.npz")):
        with np.load(p, allow_pickle=False) as d:
            meta = json.loads(str(d["meta"]))
            if meta.get("fingerprint") != fp:
                continue
            arrs = {k: d[k] for k in d.files if k != "meta"}
        if meta["subset"] is None:
            full_outputs = {k: arrs[k] for k in queries if k in arrs}
        else:
            per_subset.setdefault(int(meta["subset"]), []).append(arrs)
    ids = np.array(sorted(per_subset), dtype=np.int64)
    outputs, by_t = {}, {}
    for k, qx in queries.items():
        if len(ids):
            outputs[k] = np.stack([np.mean([a[k] for a in per_subset[i]], 0) for i in ids])
            by_t[k] = np.stack([np.mean([a[f"{k}_by_t"] for a in per_subset[i]], 0) for i in ids])
        else:
            outputs[k] = np.zeros((0, len(qx)))
            by_t[k] = np.zeros((0, len(qx), N_BUCKETS), dtype=np.float32)
    return Benchmark(
        name=name,
        train=real["train"],
        labels=real["train_labels"],
        queries=queries,
        query_labels=qlabels,
        subsets=all_subsets[ids] if len(ids) else np.zeros((0, all_subsets.shape[1]), dtype=bool),
        subset_ids=ids,
        all_subsets=all_subsets,
        outputs=outputs,
        outputs_by_t=by_t,
        n_seeds=np.array([len(per_subset[i]) for i in ids], dtype=np.int64),
        full_outputs=full_outputs,
        manifest=manifest,
        root=root,
    )


def build_summary(manifest: dict) -> dict:
    """What a build cost: models done, summed per-model train / measure seconds, generation.

    The sums add up each model's wall time as its worker recorded it (one torch thread per worker),
    so they do not shrink when workers run side by side, and they grow when the machine is shared.
    """
    per = manifest.get("timings", {}).get("per_model", {})
    tr = [v["train_s"] for v in per.values() if v.get("train_s") is not None]
    me = [v["measure_s"] for v in per.values() if v.get("measure_s") is not None]
    gen = manifest.get("timings", {}).get("generate_s") or 0.0
    total = sum(tr) + sum(me) + gen
    return {
        "benchmark": manifest.get("benchmark"),
        "models_done": manifest["progress"]["n_done"],
        "complete": manifest["progress"]["complete"],
        "train_s_mean": round(float(np.mean(tr)), 1) if tr else None,
        "measure_s_mean": round(float(np.mean(me)), 1) if me else None,
        "train_s_total": round(sum(tr), 1),
        "measure_s_total": round(sum(me), 1),
        "generate_s": gen,
        "summed_hours": round(total / 3600, 2),
        "threads_per_worker": manifest.get("environment", {}).get("threads"),
    }


def main(argv=None) -> None:
    """``python -m nda.eval.benchmarks [name] [--max-models K] [--threads T] [--root DIR] [--work DIR]``"""
    import argparse

    ap = argparse.ArgumentParser(description="build (or resume) an LDS benchmark")
    ap.add_argument("name", nargs="?", default="fmnist2", choices=sorted(SPECS))
    ap.add_argument("--root", default=None)
    ap.add_argument("--work", default=None)
    ap.add_argument("--max-models", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", default=None, help="comma-separated model seeds per subset, e.g. 0,1,2")
    ap.add_argument("--summary", action="store_true", help="print the build's cost from its manifest and exit")
    a = ap.parse_args(argv)
    if a.summary:
        root = Path(a.root) if a.root else DATA_ROOT / a.name
        print(json.dumps(build_summary(json.loads((root / "manifest.json").read_text())), indent=1))
        return
    seeds = tuple(int(s) for s in a.seeds.split(",")) if a.seeds else None
    man = build(a.name, root=a.root, work=a.work, max_models=a.max_models, threads=a.threads, seeds=seeds)
    print(json.dumps(man["progress"], indent=1))


if __name__ == "__main__":
    main()
