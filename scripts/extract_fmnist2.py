#!/usr/bin/env python
"""Extract the FMNIST-2 benchmark images from Debian's ``dataset-fashion-mnist`` package.

Writes ``src/nda/data/fmnist2/data.npz`` (and a PROVENANCE.md next to it):

* classes 7 (sneaker) -> label 0 and 8 (bag) -> label 1;
* ``train``: 1000 images from the Fashion-MNIST *train* split, 500 per class;
* ``val``: 100 images (50 per class) and ``calib_real``: 50 images (25 per class) from the
  *test* split, disjoint;
* indices are drawn with ``numpy.random.default_rng(SEED)`` (one permutation per class and split)
  and then sorted, so the selection is a fixed list (the source indices are stored too);
* each 28x28 uint8 image is converted to float in [0, 1], downsampled to 16x16 with PIL's
  LANCZOS filter (antialiased) on the float ("F" mode) image, clipped to [0, 1] and quantised back
  to uint8 (round half to even via ``np.rint``); the loader maps uint8 v to v / 127.5 - 1 in [-1, 1].

Run:  python scripts/extract_fmnist2.py [--src /usr/share/datasets/fashion-mnist] [--out DIR]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 20240607
CLASSES = (7, 8)  # sneaker, bag
CLASS_NAMES = ("sneaker", "bag")
N_TRAIN_PER_CLASS = 500
N_VAL_PER_CLASS = 50
N_CALIB_PER_CLASS = 25
SIZE = 16
DEFAULT_SRC = "/usr/share/datasets/fashion-mnist"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "nda" / "data" / "fmnist2"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a (gzipped) IDX file into a numpy array (uint8 data only)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def downsample(images_u8: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, size, size) uint8 via PIL LANCZOS on float images."""
    out = np.empty((len(images_u8), size, size), dtype=np.uint8)
    for i, im in enumerate(images_u8):
        f = Image.fromarray(im.astype(np.float32) / 255.0, mode="F")
        r = np.asarray(f.resize((size, size), resample=Image.LANCZOS), dtype=np.float64)
        out[i] = np.rint(np.clip(r, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=DEFAULT_SRC)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    src = Path(args.src)
    files = {
        "train_images": src / "train-images-idx3-ubyte.gz",
        "train_labels": src / "train-labels-idx1-ubyte.gz",
        "test_images": src / "t10k-images-idx3-ubyte.gz",
        "test_labels": src / "t10k-labels-idx1-ubyte.gz",
    }
    for p in files.values():
        if not p.exists():
            raise SystemExit(f"missing {p}: install Debian's dataset-fashion-mnist or pass --src")
    tr_x, tr_y = read_idx(files["train_images"]), read_idx(files["train_labels"])
    te_x, te_y = read_idx(files["test_images"]), read_idx(files["test_labels"])

    rng = np.random.default_rng(SEED)
    train_idx, val_idx, calib_idx = [], [], []
    for c in CLASSES:
        pool = np.flatnonzero(tr_y == c)
        train_idx.append(np.sort(rng.permutation(pool)[:N_TRAIN_PER_CLASS]))
        pool = rng.permutation(np.flatnonzero(te_y == c))
        val_idx.append(np.sort(pool[:N_VAL_PER_CLASS]))
        calib_idx.append(np.sort(pool[N_VAL_PER_CLASS : N_VAL_PER_CLASS + N_CALIB_PER_CLASS]))
    train_idx, val_idx, calib_idx = (np.concatenate(a) for a in (train_idx, val_idx, calib_idx))
    assert not set(val_idx) & set(calib_idx)
    lab = {c: i for i, c in enumerate(CLASSES)}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out / "data.npz",
        train=downsample(tr_x[train_idx])[:, None],
        train_labels=np.array([lab[c] for c in tr_y[train_idx]], dtype=np.int64),
        train_source_index=train_idx.astype(np.int64),
        val=downsample(te_x[val_idx])[:, None],
        val_labels=np.array([lab[c] for c in te_y[val_idx]], dtype=np.int64),
        val_source_index=val_idx.astype(np.int64),
        calib_real=downsample(te_x[calib_idx])[:, None],
        calib_real_labels=np.array([lab[c] for c in te_y[calib_idx]], dtype=np.int64),
        calib_real_source_index=calib_idx.astype(np.int64),
    )
    info = {
        "source_package": "dataset-fashion-mnist (Debian)",
        "source_files": {k: {"path": str(v), "sha256": sha256(v)} for k, v in files.items()},
        "classes": {str(c): {"label": lab[c], "name": n} for c, n in zip(CLASSES, CLASS_NAMES)},
        "seed": SEED,
        "downsample": "PIL Image.LANCZOS on float32 'F' image 28x28 -> 16x16, clip [0,1], rint to uint8",
        "stored_dtype": "uint8 (loader: v / 127.5 - 1 -> [-1, 1])",
        "sizes": {"train": int(len(train_idx)), "val": int(len(val_idx)), "calib_real": int(len(calib_idx))},
        "data_npz_sha256": sha256(out / "data.npz"),
    }
    (out / "extract.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info["sizes"]), "->", out / "data.npz")


if __name__ == "__main__":
    main()
