"""Host-side image work for photos of every size: decode once, crop each view from the original.

The papers' random resized crop is taken from the whole original photo. For data whose images
are not already square at the training size (folders of JPEGs, TFDS ``imagenet2012``) the host
therefore decodes each image once and cuts every view's box out of it, resized to that view's
size (:class:`TrainCrops`); flips, colour, blur and solarize stay on the device
(:func:`sslax.augment.finish_crops`). Evaluation images are resized on the shorter side to
``round(S / crop_fraction)`` and centre-cropped to ``S`` (:class:`EvalImage`), as in the
papers' linear evaluation.

Determinism: the boxes of example ``index`` (its global position in the run's stream of
examples, ``step * batch + row``) come from a counter-based generator keyed by
``(seed, index)``, so a batch is a pure function of (seed, step) whatever the number of hosts
or decoding workers.

Speed: Pillow with libjpeg-turbo. When every box of an image is at least ``2^k`` times its
view size, the JPEG is decoded at ``1/2^k`` scale in the DCT domain (``Image.draft``), which
is several times faster than a full decode; the boxes are then resampled from that (with
``resize(box=...)``, at fractional coordinates). A full decode crops, then resizes each crop,
exactly as torchvision's ``RandomResizedCrop`` does on a PIL image.

>>> crops = TrainCrops(views=((8, (0.08, 1.0), (3 / 4, 4 / 3)),) * 2, seed=0)
>>> out = crops(encode_jpeg(np.zeros((30, 50, 3), np.uint8)), index=7)
>>> out["crops_8"].shape, out["crops_8"].dtype
((2, 8, 8, 3), dtype('uint8'))
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from typing import Sequence

import numpy as np

# What a folder dataset reads as images (lower-cased extensions), as torchvision's ImageFolder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# torchvision's RandomResizedCrop tries this many boxes before its centre-crop fallback; each
# attempt draws an area and an aspect ratio, and the chosen box then draws top and left.
CROP_ATTEMPTS = 10
CROP_DRAWS = 2 * CROP_ATTEMPTS + 2

# One view's host half: (output size, area-fraction range, aspect-ratio range).
ViewCrop = tuple[int, tuple[float, float], tuple[float, float]]


class DecodeError(ValueError):
    """A file or record that is not a decodable image."""


def sample_crop(
    draws: np.ndarray,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` from ``CROP_DRAWS`` uniforms in [0, 1).

    Up to 10 attempts: area fraction ``U(scale)``, aspect ratio (width / height) log-uniform
    in ``ratio``, sides rounded; the first box that fits is placed uniformly. If none fits,
    the centred largest box with an in-range aspect ratio. The same rule as
    :func:`sslax.augment.sample_crop` on the device.

    Returns:
      (top, left, height, width) in pixels of the image.

    >>> sample_crop(np.full(CROP_DRAWS, 0.5), 100, 100, (1.0, 1.0), (1.0, 1.0))
    (0, 0, 100, 100)
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for attempt in range(CROP_ATTEMPTS):
        target = area * (scale[0] + (scale[1] - scale[0]) * draws[attempt])
        aspect = math.exp(log_lo + (log_hi - log_lo) * draws[CROP_ATTEMPTS + attempt])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(draws[-2] * (height - h + 1)), height - h)
            left = min(int(draws[-1] * (width - w + 1)), width - w)
            return top, left, h, w
    h, w = fallback_crop(height, width, ratio)
    return (height - h) // 2, (width - w) // 2, h, w


def fallback_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """(height, width) of RandomResizedCrop's fallback: the largest box of the image whose
    aspect ratio is in ``ratio``, used centred when no attempt fits."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return round(width / min(ratio)), width
    if in_ratio > max(ratio):
        return height, round(height * max(ratio))
    return height, width


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def crop_draws(seed: int, index: int, num_views: int) -> np.ndarray:
    """(num_views, CROP_DRAWS) uniforms in [0, 1) of example ``index`` of a run's ``seed``.

    Counter-based: SplitMix64's finaliser of (seed, index, counter), 53 bits per uniform. A
    pure function of its arguments, and about 10 times cheaper than making a numpy Generator
    per example (which showed at 5% of a photo's host time).
    """
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        base = np.uint64(seed) * _GOLDEN + np.uint64(index) * np.uint64(0xD1B54A32D192ED03)
        x = base + (np.arange(1, num_views * CROP_DRAWS + 1, dtype=np.uint64) * _GOLDEN)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return ((x >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape(num_views, CROP_DRAWS)


def _open(data: bytes):
    """A lazily decoded PIL image, or DecodeError."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DecodeError("empty file")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not an image Pillow can read") from None
    except (OSError, ValueError) as e:
        raise DecodeError(f"not an image ({e})") from None


def _load_rgb(image, min_sides: Sequence[tuple[float, float]]):
    """Decodes ``image`` as RGB, at 1/2, 1/4 or 1/8 scale when every (height, width) in
    ``min_sides`` (sizes the decoded image must still cover at full scale) allows it."""
    from PIL import Image

    width, height = image.size
    if image.format == "JPEG" and min_sides:
        reduce = min(min(h, w) for h, w in min_sides)
        factor = 1
        while factor < 8 and reduce >= 2 * factor:
            factor *= 2
        if factor > 1:
            # draft() picks the largest DCT scale whose result is at least this size.
            image.draft("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DecodeError(f"cannot decode ({e})") from None
    if image.mode != "RGB":
        # CMYK, grayscale, palette, 16-bit and alpha images: alpha is dropped, as
        # torchvision's ImageFolder loader does (convert("RGB")).
        if image.mode.startswith("I"):  # 16- or 32-bit integer grayscale: keep the top byte
            depth = 16 if image.mode.startswith("I;16") else 32
            gray = np.asarray(image).astype(np.int64) >> (depth - 8)
            image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
        image = image.convert("RGB")
    return image


@dataclasses.dataclass(frozen=True)
class TrainCrops:
    """The host half of a recipe: every view's random resized crop, from one decode.

    Attributes:
      views: one (size, scale, ratio) per view of the recipe, in order.
      seed: the run's seed; the boxes of example ``index`` depend on (seed, index) only.
      dct_downscale: decode JPEGs at 1/2, 1/4 or 1/8 scale when every box allows it.
    """

    views: tuple[ViewCrop, ...]
    seed: int = 0
    dct_downscale: bool = True

    @classmethod
    def for_recipe(cls, recipe, seed: int, dct_downscale: bool = True) -> "TrainCrops":
        """The crops of every view of an :class:`sslax.augment.Recipe`."""
        views = tuple((v.size, v.crop_scale, v.crop_ratio) for v in recipe.views)
        return cls(views=views, seed=seed, dct_downscale=dct_downscale)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The distinct view sizes, in order of first appearance: one output array each."""
        return tuple(dict.fromkeys(size for size, _, _ in self.views))

    def boxes(self, index: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """(top, left, height, width) of each view of example ``index`` in an H x W image."""
        draws = crop_draws(self.seed, index, len(self.views))
        return [
            sample_crop(d, height, width, scale, ratio)
            for d, (_, scale, ratio) in zip(draws, self.views)
        ]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``crops_<S>``: (k, S, S, 3), the k views of size S, in recipe order."""
        sizes = [size for size, _, _ in self.views]
        return {f"crops_{s}": (sizes.count(s), s, s, 3) for s in self.sizes}

    def __call__(self, data: bytes, index: int) -> dict[str, np.ndarray]:
        """``crops_<S>``: uint8 [k, S, S, 3], the k views of size S, in recipe order."""
        out = {key: np.empty(shape, np.uint8) for key, shape in self.shapes().items()}
        self.write(data, index, out)
        return out

    def write(self, data: bytes, index: int, out: dict[str, np.ndarray]) -> None:
        """Writes example ``index``'s crops of image ``data`` into ``out`` (as :meth:`shapes`):
        straight into a batch, which may live in shared memory. DecodeError before any write."""
        from PIL.Image import BILINEAR

        image = _open(data)
        width, height = image.size
        boxes = self.boxes(index, height, width)
        # A box of h x w pixels drawn to S x S pixels may be decoded down to S on its shorter
        # side, never below: the view then loses nothing it would have had.
        margins = [(h / size, w / size) for (_, _, h, w), (size, _, _) in zip(boxes, self.views)]
        image = _load_rgb(image, margins if self.dct_downscale else [])
        sx, sy = image.width / width, image.height / height
        position = dict.fromkeys(self.sizes, 0)
        for (top, left, h, w), (size, _, _) in zip(boxes, self.views):
            if image.size == (width, height):
                # torchvision's resized_crop on a PIL image: crop, then resize the crop alone.
                view = image.crop((left, top, left + w, top + h)).resize((size, size), BILINEAR)
            else:  # decoded at 1/2^k: the box in those pixels, fractional, resampled directly
                box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
                view = image.resize((size, size), BILINEAR, box=box)
            out[f"crops_{size}"][position[size]] = np.asarray(view)
            position[size] += 1


@dataclasses.dataclass(frozen=True)
class EvalImage:
    """The evaluation transform: shorter side to ``round(size / crop_fraction)``, centre crop.

    ``crop_fraction`` 0.875 gives torchvision's Resize(256) + CenterCrop(224).
    """

    size: int
    crop_fraction: float = 0.875
    dct_downscale: bool = True

    def __call__(self, data: bytes) -> np.ndarray:
        """uint8 [size, size, 3]."""
        from PIL import Image

        image = _open(data)
        width, height = image.size
        resized_short = round(self.size / self.crop_fraction)
        # The centre square of side size / scale in the original maps onto the output.
        side = self.size * min(height, width) / resized_short
        margin = min(height, width) / resized_short
        image = _load_rgb(image, [(margin, margin)] if self.dct_downscale else [])
        sx, sy = image.width / width, image.height / height
        top, left = (height - side) / 2, (width - side) / 2
        box = (left * sx, top * sy, (left + side) * sx, (top + side) * sy)
        return np.asarray(image.resize((self.size, self.size), Image.BILINEAR, box=box))


def is_image_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes (for tests, previews and generated data)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return out.getvalue()
