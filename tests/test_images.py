import numpy as np
import pytest
import torch
from PIL import Image

from nda import NDAError, load_images
from nda.images import to_uint8_hwc


def test_uint8_hwc_is_converted():
    a = np.zeros((2, 5, 4, 3), dtype=np.uint8)
    a[0, 0, 0] = 255
    s = load_images(a)
    assert s.images.shape == (2, 3, 5, 4)
    assert s.images[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0] and s.images[1].min() == -1.0


def test_grayscale_and_tensor_inputs():
    assert load_images(np.zeros((3, 6, 6))).images.shape == (3, 1, 6, 6)
    t = torch.zeros(2, 1, 4, 4, dtype=torch.float32)
    assert load_images(t).images.dtype == np.float64


def test_folder_sorted_with_names(tmp_path):
    for name, v in [("b.png", 10), ("a.png", 200), ("c.jpg", 0)]:
        Image.fromarray(np.full((4, 4), v, dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("ignored")
    s = load_images(tmp_path)
    assert s.names == ("a.png", "b.png", "c.jpg")
    assert s.images.shape == (3, 1, 4, 4)
    assert np.isclose(s.images[0, 0, 0, 0], 200 / 127.5 - 1)


def test_rgb_folder_and_round_trip(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    s = load_images(tmp_path / "x.png")
    assert s.images.shape == (1, 3, 5, 6) and s.names == ("x.png",)
    np.testing.assert_array_equal(to_uint8_hwc(s.images[0]), img)


def test_npy_and_npz(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 4, 4))
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", images=x, names=np.array(["p", "q", "r"]))
    np.testing.assert_array_equal(load_images(tmp_path / "x.npy").images, x)
    assert load_images(tmp_path / "x.npz").names == ("p", "q", "r")


@pytest.mark.parametrize("bad,match", [
    (np.full((2, 1, 4, 4), np.nan), "NaN or Inf"),
    (np.full((2, 1, 4, 4), np.inf), "NaN or Inf"),
    (np.full((2, 1, 4, 4), 2.0), r"\[-1, 1\]"),
    (np.full((2, 1, 4, 4), 200.0), "looks like"),
    (np.zeros((0, 1, 4, 4)), "empty"),
    (np.zeros((4, 4)), "expected a batch"),
    (np.zeros((2, 1, 4, 4), dtype=np.int32), "ambiguous"),
    (np.zeros((2, 1, 4, 4), dtype=bool), "not numeric"),
])
def test_bad_arrays(bad, match):
    with pytest.raises(NDAError, match=match):
        load_images(bad, what="train")


def test_bad_files(tmp_path):
    with pytest.raises(NDAError, match="does not exist"):
        load_images(tmp_path / "nope")
    with pytest.raises(NDAError, match="no image files"):
        load_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(NDAError, match="cannot read image file broken.png"):
        load_images(tmp_path)
    (tmp_path / "broken.png").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(NDAError, match="differ in size"):
        load_images(tmp_path)
    (tmp_path / "obj.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(NDAError, match="cannot read"):
        load_images(tmp_path / "obj.npy")


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "p.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(NDAError):
        load_images(tmp_path / "p.npy")


def test_mixed_list_shapes():
    with pytest.raises(NDAError, match="different shapes"):
        load_images([np.zeros((1, 4, 4)), np.zeros((1, 5, 5))])
