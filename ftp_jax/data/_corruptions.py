"""Image corruptions in the spirit of MNIST-C (Mu & Gilmer, 2019, arXiv:1906.02337).

Pure numpy on one ``uint8 (28, 28, 1)`` image, white ink on black; each
corruption has one fixed severity and draws its randomness from a generator
seeded by ``(CORRUPTION_SEED, corruption number, example index)``, so that an
example's corrupted image depends only on the corruption and its index in the
source dataset, not on the order in which the images are made.

The severities are chosen so that a small CNN trained on the clean domain loses
a clearly measurable part of its test accuracy, but not all of it. Measured with
a CNN of two 3x3 convolutions (16, 32 channels, ReLU, 2x2 average pooling) and
two dense layers (64, 10), Adam 1e-3, batch 64, trained on the clean train split
(mnist5k 8 epochs, uci_digits 15), two seeds; test accuracy in percent:

==============  ================  ===================
corruption      mnist5k (94.6)    uci_digits (95-96)
==============  ================  ===================
gaussian_noise  54-72             64-66
impulse_noise   54-74             62-72
gaussian_blur   36-63             84-87
low_contrast    66-70             45-52
rotate          77-79             59-64
translate       73-74             56-59
==============  ================  ===================

(uci_digits is upsampled from 8x8 and already smooth, so blur costs it little.)

================  =============================================================
corruption        what it does
================  =============================================================
gaussian_noise    add N(0, 0.35^2) per pixel (image in [0, 1]), clip
impulse_noise     set 20% of the pixels to 0 or 1 (salt and pepper, half each)
gaussian_blur     convolve with a Gaussian of standard deviation 2.4 pixels
low_contrast      scale the deviation from the image mean by 0.3
rotate            rotate by 15 to 30 degrees, either sense (bilinear)
translate         shift by 1 to 2 pixels along each axis, either sense
================  =============================================================
"""

from __future__ import annotations

import numpy as np

__all__ = ["CORRUPTIONS", "CORRUPTION_SEED", "corrupt"]

CORRUPTION_SEED = 1906_02337  # fixed: changing it changes every corrupted image

GAUSSIAN_NOISE_STDDEV = 0.35
IMPULSE_FRACTION = 0.2
BLUR_STDDEV = 2.4
CONTRAST_FACTOR = 0.3
ROTATE_DEGREES = (15.0, 30.0)
TRANSLATE_PIXELS = (1, 2)


def _gaussian_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return image + rng.normal(0.0, GAUSSIAN_NOISE_STDDEV, image.shape)


def _impulse_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hit = rng.random(image.shape) < IMPULSE_FRACTION
    salt = rng.random(image.shape) < 0.5
    return np.where(hit, salt.astype(np.float64), image)


def _gaussian_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng  # deterministic
    radius = int(np.ceil(3 * BLUR_STDDEV))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / BLUR_STDDEV) ** 2)
    kernel /= kernel.sum()
    # Zero padding: the background is black in both domains.
    padded = np.pad(image, radius)
    rows = np.stack([np.convolve(row, kernel, mode="valid") for row in padded])
    return np.stack([np.convolve(col, kernel, mode="valid") for col in rows.T]).T


def _low_contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng  # deterministic
    mean = image.mean()
    return (image - mean) * CONTRAST_FACTOR + mean


def _rotate(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    degrees = rng.uniform(*ROTATE_DEGREES) * rng.choice([-1.0, 1.0])
    angle = np.deg2rad(degrees)
    height, width = image.shape
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    out_y, out_x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    # Inverse map: where each output pixel comes from in the input.
    dy, dx = out_y - centre_y, out_x - centre_x
    src_y = np.cos(angle) * dy - np.sin(angle) * dx + centre_y
    src_x = np.sin(angle) * dy + np.cos(angle) * dx + centre_x
    return _sample_bilinear(image, src_y, src_x)


def _sample_bilinear(image: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` at float coordinates; 0 outside the image."""
    padded = np.pad(image, 1)  # a black border: samples outside read 0
    y = np.clip(src_y + 1, 0, padded.shape[0] - 1)
    x = np.clip(src_x + 1, 0, padded.shape[1] - 1)
    y0 = np.minimum(np.floor(y).astype(np.int64), padded.shape[0] - 2)
    x0 = np.minimum(np.floor(x).astype(np.int64), padded.shape[1] - 2)
    fy, fx = y - y0, x - x0
    return (
        padded[y0, x0] * (1 - fy) * (1 - fx)
        + padded[y0 + 1, x0] * fy * (1 - fx)
        + padded[y0, x0 + 1] * (1 - fy) * fx
        + padded[y0 + 1, x0 + 1] * fy * fx
    )


def _translate(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    low, high = TRANSLATE_PIXELS
    shift = rng.integers(low, high + 1, size=2) * rng.choice([-1, 1], size=2)
    out = np.zeros_like(image)
    height, width = image.shape
    dy, dx = int(shift[0]), int(shift[1])
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


_CORRUPTION_FNS = {
    "gaussian_noise": _gaussian_noise,
    "impulse_noise": _impulse_noise,
    "gaussian_blur": _gaussian_blur,
    "low_contrast": _low_contrast,
    "rotate": _rotate,
    "translate": _translate,
}
CORRUPTIONS = tuple(_CORRUPTION_FNS)


def corrupt(image: np.ndarray, corruption: str, index: int) -> np.ndarray:
    """The corrupted copy of one ``uint8 (h, w, 1)`` image, deterministic in ``index``.

    Args:
      image: ``uint8`` image of shape ``(h, w, 1)``, white ink on black.
      corruption: one of ``CORRUPTIONS``.
      index: the example's index in its source dataset; seeds the randomness.

    Returns:
      A ``uint8`` image of the same shape.

    Raises:
      ValueError: for an unknown corruption or an image that is not
        ``uint8 (h, w, 1)``.
    """
    if corruption not in _CORRUPTION_FNS:
        raise ValueError(f"unknown corruption {corruption!r}; expected one of {CORRUPTIONS}.")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 1:
        raise ValueError(
            f"`image` must be uint8 of shape (h, w, 1); got {image.dtype} {image.shape}."
        )
    rng = np.random.default_rng((CORRUPTION_SEED, CORRUPTIONS.index(corruption), int(index)))
    pixels = image[..., 0].astype(np.float64) / 255.0
    corrupted = _CORRUPTION_FNS[corruption](pixels, rng)
    return np.rint(np.clip(corrupted, 0.0, 1.0) * 255.0).astype(np.uint8)[..., None]
