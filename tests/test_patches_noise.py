import numpy as np
import torch
import torch.nn.functional as F

from nda.noise import noise_queries, query_noise
from nda.patches import border_classes, output_size


def test_output_size_odd_and_even():
    assert output_size(8, 6, 3) == (8, 6)
    assert output_size(8, 6, 4) == (7, 5)
    assert output_size(8, 6, 1) == (8, 6)


def test_border_classes_small_case_by_hand():
    # 4×4 image, P=3: rows {0}, {1, 2}, {3} and the same for columns → 9 classes.
    c = border_classes(4, 4, 3).reshape(4, 4)
    assert len(torch.unique(c)) == 9
    assert c[1, 1] == c[2, 2] == c[1, 2]
    assert c[0, 0] != c[0, 1] and c[0, 1] == c[0, 2] and c[3, 3] != c[0, 0]


def test_border_classes_equal_iff_masks_equal():
    for H, W, P in [(6, 7, 3), (6, 7, 4), (5, 5, 5), (8, 6, 6)]:
        p = (P - 1) // 2
        masks = F.unfold(torch.ones(1, 1, H, W), P, padding=p)[0].T  # (L, P*P) in-image mask
        same_mask = (masks[:, None, :] == masks[None, :, :]).all(-1)
        c = border_classes(H, W, P)
        assert torch.equal(c[:, None] == c[None, :], same_mask)


def test_query_noise_is_the_spec_generator():
    eps = query_noise((3, 4, 4), t=200, noise_seed=2)
    want = torch.randn((3, 4, 4), generator=torch.Generator("cpu").manual_seed(2200), dtype=torch.float32)
    assert torch.equal(eps, want)
    x = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    xt = noise_queries(x, 200, 0.25, 2)
    assert xt.dtype == torch.float64
    np.testing.assert_allclose(xt[1].numpy(), 0.5 * 0 + np.sqrt(0.75) * want.double().numpy())
