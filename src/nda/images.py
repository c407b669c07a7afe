"""Image sets: arrays, tensors, image files, folders and npy/npz files → validated (N, C, H, W) in [-1, 1].

Accepted inputs (`load_images`):

* numpy arrays / torch tensors, float in [-1, 1] or uint8 in [0, 255] (mapped to [-1, 1]);
  shapes (N, C, H, W), (N, H, W, C) (channels-last is detected when the last axis is 1, 3 or 4
  and axis 1 is not), or (N, H, W) for grayscale;
* a folder of PNG/JPEG files (sorted by name; names kept);
* a single image file (a set of one);
* a `.npy` file, or a `.npz` file holding `images` (or exactly one array), optionally `names`.
  Files are read with ``allow_pickle=False``.

Every image of a set must share size and channels. NaN/Inf, values outside [-1, 1], empty sets
and unreadable files raise `NDAError` naming the problem and the fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import NDAError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_RANGE_TOL = 1e-6  # float inputs may overshoot [-1, 1] by rounding, not more


@dataclass(frozen=True)
class ImageSet:
    """A validated image set.

    Attributes:
        images: (N, C, H, W) float64 array in [-1, 1].
        names: one name per image (file names for folders; None for anonymous arrays).
        source: where the set came from (a path or "array"), for provenance.
    """

    images: np.ndarray
    names: tuple[str, ...] | None = None
    source: str = "array"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def fingerprint(self) -> str:
        """sha256 of the float32 pixels and the shape: identifies the data a result was computed on."""
        h = hashlib.sha256()
        h.update(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    def tensor(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.as_tensor(self.images).to(device=device, dtype=dtype)


def load_images(obj: Any, *, what: str = "images", names: Sequence[str] | None = None) -> ImageSet:
    """Turn any supported input into a validated `ImageSet` (see the module docstring).

    Args:
        obj: array, tensor, `ImageSet`, or a path (folder, image file, .npy, .npz).
        what: how to call this set in error messages ("train", "queries", ...).
        names: optional names for array inputs (one per image).
    """
    if isinstance(obj, ImageSet):
        return obj
    if isinstance(obj, (str, Path)):
        return _load_path(Path(obj), what)
    if isinstance(obj, torch.Tensor):
        arr = obj.detach().cpu().numpy()
    elif isinstance(obj, np.ndarray):
        arr = obj
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(o, (np.ndarray, torch.Tensor)) for o in obj):
        shapes = {tuple(o.shape) for o in obj}
        if len(shapes) > 1:
            raise NDAError(f"{what}: images have different shapes {sorted(shapes)}; resize them to one size")
        arr = np.stack([o.detach().cpu().numpy() if isinstance(o, torch.Tensor) else o for o in obj])
    else:
        raise NDAError(
            f"{what}: unsupported input of type {type(obj).__name__}; pass a numpy array, a torch "
            "tensor, or a path to a folder of images / .npy / .npz file"
        )
    images = to_nchw(arr, what)
    if names is not None:
        names = tuple(str(n) for n in names)
        if len(names) != images.shape[0]:
            raise NDAError(f"{what}: {len(names)} names for {images.shape[0]} images")
    return ImageSet(images, names, "array")


def to_nchw(arr: np.ndarray, what: str = "images") -> np.ndarray:
    """Validate and convert an array to (N, C, H, W) float64 in [-1, 1]."""
    arr = np.asarray(arr)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "uif":
        raise NDAError(f"{what}: pixel dtype {arr.dtype} is not numeric; pass float in [-1, 1] or uint8")
    if arr.ndim == 3:  # (N, H, W) grayscale
        arr = arr[:, None]
    elif arr.ndim == 4:
        # Channels-last is recognised only when unambiguous (axis 1 cannot be a channel axis).
        if arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
            arr = np.moveaxis(arr, -1, 1)
    else:
        raise NDAError(
            f"{what}: expected a batch of images (N, C, H, W), (N, H, W, C) or (N, H, W); got shape "
            f"{tuple(arr.shape)} (for one image, add a leading axis: x[None])"
        )
    if arr.shape[0] == 0:
        raise NDAError(f"{what}: the image set is empty; give at least one image")
    if min(arr.shape[2:]) < 1:
        raise NDAError(f"{what}: images have zero size {tuple(arr.shape[2:])}")
    if arr.dtype == np.uint8:
        out = arr.astype(np.float64) / 127.5 - 1.0
    elif arr.dtype.kind in "ui":
        raise NDAError(
            f"{what}: integer pixels of dtype {arr.dtype} are ambiguous; pass uint8 in [0, 255] "
            "or float in [-1, 1]"
        )
    else:
        out = arr.astype(np.float64)
        if not np.all(np.isfinite(out)):
            bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
            raise NDAError(f"{what}: {bad} pixel values are NaN or Inf; clean the images first")
        lo, hi = float(out.min()), float(out.max())
        if lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
            hint = " (looks like [0, 255]: pass uint8 or divide by 127.5 and subtract 1)" if hi > 1.5 else ""
            raise NDAError(
                f"{what}: float pixels must lie in [-1, 1], found [{lo:.4g}, {hi:.4g}]{hint}"
            )
        out = np.clip(out, -1.0, 1.0)
    return np.ascontiguousarray(out)


def _load_path(path: Path, what: str) -> ImageSet:
    if not path.exists():
        raise NDAError(f"{what}: {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise NDAError(
                f"{what}: folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
            )
        arrays = [_read_image(p, what) for p in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            first = arrays[0].shape
            odd = next(p.name for p, a in zip(files, arrays) if a.shape != first)
            raise NDAError(
                f"{what}: images in {path} differ in size/channels ({files[0].name} is {first} (H, W, C), "
                f"{odd} is not); resize them to one size and mode"
            )
        return ImageSet(to_nchw(np.moveaxis(np.stack(arrays), -1, 1), what), tuple(p.name for p in files), str(path))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise NDAError(f"{what}: cannot read {path} as a .npy array ({exc})") from exc
        return ImageSet(to_nchw(arr, what), None, str(path))
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if "images" in keys:
                    arr = z["images"]
                elif len([k for k in keys if k != "names"]) == 1:
                    arr = z[[k for k in keys if k != "names"][0]]
                else:
                    raise NDAError(
                        f"{what}: {path} holds arrays {keys}; name the image array 'images'"
                    )
                names = tuple(str(n) for n in z["names"]) if "names" in keys else None
        except (ValueError, OSError) as exc:
            raise NDAError(f"{what}: cannot read {path} as a .npz archive ({exc})") from exc
        images = to_nchw(arr, what)
        if names is not None and len(names) != images.shape[0]:
            raise NDAError(f"{what}: {path} has {len(names)} names for {images.shape[0]} images")
        return ImageSet(images, names, str(path))
    if suffix in IMAGE_SUFFIXES:
        return ImageSet(to_nchw(np.moveaxis(_read_image(path, what), -1, 0)[None], what), (path.name,), str(path))
    raise NDAError(
        f"{what}: don't know how to read {path}; give a folder of images, an image file, .npy or .npz"
    )


def _read_image(path: Path, what: str) -> np.ndarray:
    """One image file → (H, W, C) uint8 (grayscale stays one channel; alpha is dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "I;16", "I", "F", "1", "LA"):
                im = im.convert("L")
            else:
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NDAError(f"{what}: cannot read image file {path.name} ({exc.__class__.__name__}); is it a valid image?") from exc
    return arr[:, :, None] if arr.ndim == 2 else arr


def check_compatible(train: ImageSet, queries: ImageSet) -> None:
    """Queries and training images must have the same (C, H, W)."""
    if train.shape != queries.shape:
        raise NDAError(
            f"queries have shape (C, H, W) = {queries.shape} but training images {train.shape}; "
            "resize the queries to the training images' size and channels"
        )


def to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [-1, 1] → (H, W, C) uint8, for display and saving."""
    x = np.clip((np.asarray(image) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return np.moveaxis(x, 0, -1)
