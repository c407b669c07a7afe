"""The bundled demo: a small real Fashion-MNIST subset (400 training images, 16×16) and 5 queries.

`nda demo` attributes the queries and prints each one's top proponents. One query is a shifted,
lightly noised copy of a training image: NDA should rank that image first.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

from .images import ImageSet, load_images


@dataclass(frozen=True)
class DemoData:
    train: ImageSet
    queries: ImageSet
    train_labels: np.ndarray
    classes: tuple[str, ...]
    near_copy_source: int


def load_demo() -> DemoData:
    """Load `nda/data/demo.npz` (see scripts/make_demo_data.py for its provenance)."""
    with resources.files("nda").joinpath("data/demo.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as z:
            d = {k: z[k] for k in z.keys()}
    return DemoData(
        train=load_images(d["train"], what="demo train", names=[str(n) for n in d["train_names"]]),
        queries=load_images(d["queries"], what="demo queries", names=[str(n) for n in d["query_names"]]),
        train_labels=d["train_labels"],
        classes=tuple(str(c) for c in d["classes"]),
        near_copy_source=int(d["near_copy_source"]),
    )
