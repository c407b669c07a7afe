import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # for `import oracle`

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def smooth_images(n: int, c: int, h: int, w: int, seed: int = 0, flat: bool = False) -> np.ndarray:
    """Structured test images in [-1, 1]: smoothed noise, optionally with an exactly constant
    background (exact ties, which matter for top-k)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c, h + 2, w + 2))
    x = (x[:, :, :-2, :-2] + x[:, :, 1:-1, 1:-1] + x[:, :, 2:, 2:] + x[:, :, 1:-1, :-2]) / 4
    x = np.tanh(x)
    if flat:
        x[:, :, : h // 3, :] = -1.0
    return np.clip(x, -1, 1)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
