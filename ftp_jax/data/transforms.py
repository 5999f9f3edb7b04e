"""Standard image transforms for the paper-scale recipes (per example, numpy + Pillow).

``train_transform``: random resized crop (scale 0.08-1, aspect 3/4-4/3), random
horizontal flip, normalization; ``eval_transform``: resize the shorter side,
center crop, normalization. They take ``(uint8 image (h, w[, c]), rng)`` and
return ``float32 (size, size, 3)``, as :func:`ftp_jax.data.batches` expects;
the randomness comes only from ``rng``, so an example's augmentation is a pure
function of ``(seed, epoch, index)`` there.

With ``output="uint8"`` they stop before the normalization and return the
``uint8 (size, size, 3)`` crop (a quarter of the bytes to the device); the
transform's ``normalization`` attribute, ``(mean, std)``, is then what the
jitted step applies on the device (:func:`ftp_jax.train.normalize_images`),
to the same float32 values up to rounding. A float32 transform's
``normalization`` is ``None``: nothing is left to do on the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLIP_MEAN",
    "CLIP_STD",
    "train_transform",
    "eval_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _rgb(image: np.ndarray) -> Image.Image:
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    picture = Image.fromarray(image)
    return picture.convert("RGB")


def _normalize(picture: Image.Image, mean, std) -> np.ndarray:
    array = np.asarray(picture, np.float32) / np.float32(255.0)
    return (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


_OUTPUTS = ("float32", "uint8")


def _check_output(output: str) -> None:
    if output not in _OUTPUTS:
        raise ValueError(
            f"`output` must be one of {_OUTPUTS}: 'float32' normalizes on the host, 'uint8' "
            f"leaves the normalization to the device; got {output!r}."
        )


def _finish(transform, output: str, mean, std) -> Transform:
    """Sets the transform's ``normalization``: ``(mean, std)`` left to the device, or ``None``."""
    transform.normalization = (
        (tuple(map(float, mean)), tuple(map(float, std))) if output == "uint8" else None
    )
    return transform


def _output(picture: Image.Image, output: str, mean, std) -> np.ndarray:
    if output == "uint8":
        return np.asarray(picture, np.uint8)
    return _normalize(picture, mean, std)


def train_transform(
    size: int = 224,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    output: str = "float32",
) -> Transform:
    """RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip + Normalize (torchvision's).

    Args:
      size: the output's side in pixels.
      scale, ratio: the crop's area fraction and aspect ranges.
      mean, std: per-channel normalization of values in ``[0, 1]``.
      output: ``"float32"``: normalized on the host; ``"uint8"``: the flipped
        crop, with ``mean`` and ``std`` in the transform's ``normalization``
        for the device.

    Returns:
      ``transform(uint8 image (h, w[, c]), rng) -> (size, size, 3)`` array.

    Raises:
      ValueError: an unknown ``output``.
    """
    _check_output(output)

    def transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        picture = _rgb(image)
        width, height = picture.size
        area = width * height
        box = (0, 0, width, height)
        for _ in range(10):
            target = area * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                left = int(rng.integers(0, width - w + 1))
                top = int(rng.integers(0, height - h + 1))
                box = (left, top, left + w, top + h)
                break
        else:  # fall back to a center crop of the allowed aspect
            aspect = width / height
            if aspect < ratio[0]:
                w, h = width, int(round(width / ratio[0]))
            elif aspect > ratio[1]:
                w, h = int(round(height * ratio[1])), height
            else:
                w, h = width, height
            left, top = (width - w) // 2, (height - h) // 2
            box = (left, top, left + w, top + h)
        picture = picture.resize((size, size), Image.BILINEAR, box=box)
        if rng.uniform() < 0.5:
            picture = picture.transpose(Image.FLIP_LEFT_RIGHT)
        return _output(picture, output, mean, std)

    return _finish(transform, output, mean, std)


def eval_transform(
    size: int = 224,
    *,
    resize: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    output: str = "float32",
) -> Transform:
    """Resize (shorter side to ``resize``, default size * 256 / 224), CenterCrop, Normalize.

    ``output``: as for :func:`train_transform` (``"uint8"``: normalized on the device).
    """
    _check_output(output)
    resize = resize or int(round(size * 256 / 224))

    def transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        del rng
        picture = _rgb(image)
        width, height = picture.size
        factor = resize / min(width, height)
        picture = picture.resize(
            (max(size, round(width * factor)), max(size, round(height * factor))),
            Image.BICUBIC,
        )
        width, height = picture.size
        left, top = (width - size) // 2, (height - size) // 2
        picture = picture.crop((left, top, left + size, top + size))
        return _output(picture, output, mean, std)

    return _finish(transform, output, mean, std)
