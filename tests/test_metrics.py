import numpy as np
import pytest
import torch

from napari_textsr.metrics import psnr, quality_scores, rgb_to_y, ssim


def test_identical_images_score_perfectly():
    rng = np.random.default_rng(0)
    img = np.round(rng.random((32, 40, 3)) * 255) / 255
    scores = quality_scores(img, img, border=4)
    assert scores.psnr_y == float("inf") and scores.psnr_rgb == float("inf")
    assert scores.ssim_y == pytest.approx(1.0) and scores.ssim_rgb == pytest.approx(1.0)


def test_psnr_matches_its_definition():
    a = torch.zeros(1, 1, 10, 10, dtype=torch.float64)
    b = a + 2.55  # MSE = 2.55^2 on a 255 scale -> 20*log10(255/2.55) = 40 dB
    assert psnr(a, b, 255.0) == pytest.approx(40.0)


def test_luma_of_white_and_black():
    white = torch.ones(1, 3, 1, 1, dtype=torch.float64)
    assert rgb_to_y(white).item() == pytest.approx(235.0, abs=1e-3)
    assert rgb_to_y(0 * white).item() == pytest.approx(16.0)


def test_ssim_drops_with_noise_and_border_is_cropped():
    rng = np.random.default_rng(1)
    img = rng.random((48, 48, 3))
    noisy = np.clip(img + rng.normal(0, 0.2, img.shape), 0, 1)
    assert quality_scores(noisy, img, 4).ssim_rgb < 0.9
    damaged = img.copy()
    damaged[:4] = 0  # only in the cropped border
    assert quality_scores(damaged, img, 4).psnr_rgb > 45  # only 8-bit quantisation remains


def test_shape_mismatch_and_tiny_images_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        quality_scores(np.zeros((20, 20, 3)), np.zeros((20, 22, 3)), 2)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), 1.0)
