"""Build the bundled demo data `src/nda/data/demo.npz` from Debian's `dataset-fashion-mnist`.

    apt-get install dataset-fashion-mnist && python scripts/make_demo_data.py

Train: 40 images of each of the 10 classes from the train split (seeded choice), 16×16 (Lanczos
downsampling of 28×28, uint8). Queries: 4 test-split images of different classes, plus one
training image shifted by one pixel with light noise (a "near copy": NDA should rank its source
first). Fashion-MNIST is © Zalando SE, MIT licence (see src/nda/data/LICENSE-fashion-mnist.md).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parents[1] / "src" / "nda" / "data" / "demo.npz"
CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, f"{path}: not a uint8 IDX file"
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def down16(images: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize((16, 16), Image.LANCZOS)) for im in images])


def main() -> None:
    rng = np.random.default_rng(2026)
    xtr, ytr = read_idx(SRC / "train-images-idx3-ubyte.gz"), read_idx(SRC / "train-labels-idx1-ubyte.gz")
    xte, yte = read_idx(SRC / "t10k-images-idx3-ubyte.gz"), read_idx(SRC / "t10k-labels-idx1-ubyte.gz")
    train_idx = np.concatenate([np.sort(rng.choice(np.flatnonzero(ytr == c), 40, replace=False)) for c in range(10)])
    query_idx = np.array([rng.choice(np.flatnonzero(yte == c)) for c in (0, 5, 7, 8)])
    train = down16(xtr[train_idx])
    queries = down16(xte[query_idx])
    # A near copy of training image #123: shifted right by one pixel, light noise.
    src = 123
    copy = np.roll(train[src].astype(np.int16), 1, axis=1)
    copy[:, 0] = 0
    copy = np.clip(copy + rng.normal(0, 6, copy.shape), 0, 255).astype(np.uint8)
    queries = np.concatenate([queries, copy[None]])
    qnames = [f"test{int(i)}_{CLASSES[yte[i]].replace('/', '-')}.png" for i in query_idx] + [f"near_copy_of_train{src}.png"]
    tnames = [f"train{int(i)}_{CLASSES[ytr[i]].replace('/', '-')}.png" for i in train_idx]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT, train=train, train_labels=ytr[train_idx], train_names=np.array(tnames), train_source_index=train_idx,
        queries=queries, query_names=np.array(qnames), query_source_index=np.append(query_idx, -1),
        classes=np.array(CLASSES), near_copy_source=np.int64(src),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
