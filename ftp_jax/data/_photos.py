"""DomainNet-sized JPEG photos made offline, for measuring the input pipeline.

DomainNet's images are JPEGs of a few hundred pixels a side (most between 300
and 600). ``photo(index)`` is a deterministic stand-in of that size: a random
crop of one of scikit-learn's two sample photos (``china.jpg``, ``flower.jpg``,
427x640, shipped inside the package), resized to sides drawn from
``[300, 500]``, maybe mirrored, colour-jittered; ``jpeg(index)`` its JPEG bytes
(quality 90). Natural photo content gives JPEG files, and so decoding times,
like real photos', which noise or flat colour would not.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import PIL.Image

__all__ = ["NUM_CLASSES", "SIDES", "SPLIT_SIZES", "jpeg", "photo"]

NUM_CLASSES = 10
SIDES = (300, 500)  # the range of each side, in pixels
SPLIT_SIZES = {"train": 320, "test": 64}
_QUALITY = 90


@functools.cache
def _sample_photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)


def photo(index: int) -> np.ndarray:
    """The ``uint8 (h, w, 3)`` photo number ``index``, ``h`` and ``w`` in ``SIDES``."""
    rng = np.random.default_rng([2026, index])
    source = _sample_photos()[index % 2]
    height, width = (int(rng.integers(SIDES[0], SIDES[1] + 1)) for _ in range(2))
    crop_h = int(rng.integers(source.shape[0] // 2, source.shape[0] + 1))
    crop_w = int(rng.integers(source.shape[1] // 2, source.shape[1] + 1))
    top = int(rng.integers(0, source.shape[0] - crop_h + 1))
    left = int(rng.integers(0, source.shape[1] - crop_w + 1))
    picture = PIL.Image.fromarray(source[top : top + crop_h, left : left + crop_w])
    picture = picture.resize((width, height), PIL.Image.BILINEAR)
    if rng.uniform() < 0.5:
        picture = picture.transpose(PIL.Image.FLIP_LEFT_RIGHT)
    gain = rng.uniform(0.7, 1.3, size=3).astype(np.float32)
    array = np.asarray(picture, np.float32) * gain
    return np.clip(array, 0, 255).astype(np.uint8)


def jpeg(index: int) -> bytes:
    """JPEG bytes (quality 90, Pillow) of ``photo(index)``."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(photo(index)).save(buffer, format="JPEG", quality=_QUALITY)
    return buffer.getvalue()
