"""Run the installed `nda` entry point as a user would (a subprocess), for CLI tests."""

import shutil
import subprocess
import sys
from pathlib import Path

_BESIDE = Path(sys.executable).with_name("nda")
NDA = str(_BESIDE) if _BESIDE.exists() else shutil.which("nda")


def run_nda(*args, check=True, timeout=600):
    assert NDA, "the `nda` entry point is not installed (pip install -e .)"
    proc = subprocess.run([NDA, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"nda {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def image_folders(root, n_train, extra_train=()):
    """`root/train` with n_train random 8×8 PNGs img{i}.png (plus copies of img1 under each name in
    `extra_train`) and `root/queries` with a copy of img2 and one unrelated image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    train, queries = root / "train", root / "queries"
    train.mkdir(), queries.mkdir()
    imgs = rng.integers(0, 256, (n_train, 8, 8), dtype=np.uint8)
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(train / f"img{i}.png")
    for name in extra_train:
        Image.fromarray(imgs[1]).save(train / name)
    Image.fromarray(imgs[2]).save(queries / "copy_of_img2.png")
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(queries / "other.png")
    return train, queries
