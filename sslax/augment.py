"""On-device image augmentation for self-supervised learning: the curriculum.

The host ships uint8 images; the device crops, flips, colour-jitters, greys, blurs and
solarizes them inside the jitted train step, one example at a time under ``vmap`` with
one PRNG key per example. Data loading is the classic bottleneck of SSL on accelerators,
and this keeps the host's job down to decoding.

Three layers:

* Per-image ops on float32 ``(H, W, 3)`` images in ``[0, 1]`` with the semantics of
  ``torchvision.transforms.functional`` for float tensors: :func:`adjust_brightness`,
  :func:`adjust_contrast`, :func:`adjust_saturation`, :func:`adjust_hue`,
  :func:`to_grayscale`, :func:`gaussian_blur`, :func:`solarize`, :func:`resized_crop`.
* Recipes as data: a :class:`ViewRecipe` lists one view's ops, strengths and
  probabilities; a :class:`Recipe` is the tuple of views, so asymmetric recipes (BYOL,
  DINO) are declared rather than coded. Both are frozen and hashable, so a recipe can be a
  static argument of ``jax.jit``. :func:`sample_view_params` returns the random draws of
  one view as a dict, and :func:`apply_view` applies them; the split lets statistical
  tests check the real sampler.
* Batch calls: :func:`two_views` and :func:`multi_crop`. Example ``i`` draws from
  ``fold_in(key, indices[i])`` and its view ``v`` from ``fold_in(that, v)``, so a view
  depends only on the key, the example's global index and the recipe, never on how the
  batch is split over devices or hosts.

Everything is per example, so under ``jit`` with the image batch sharded over a mesh
axis each device augments its own examples; no ``shard_map`` is needed, and nothing moves
between devices. The views of a batch are laid out image-major, ``(N, k, size, size, 3)``:
axis 0 is the image axis the batch is sharded on, so an image's views stay on the device
that holds the image, and so do they once flattened to the ``(N k, ...)`` batch a network
sees (row ``i k + v`` is view ``v`` of image ``i``). A view-major layout (view 1 of every
image, then view 2) would instead send most finished float views to another device.

>>> import jax, jax.numpy as jnp
>>> images = jnp.zeros((4, 24, 24, 3), jnp.uint8)
>>> views = two_views(jax.random.key(0), images, simclr_recipe(16))
>>> views.shape, views.dtype
((4, 2, 16, 16, 3), dtype('float32'))
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from sslax.data import images as host_images

__all__ = [
    "BRIGHTNESS",
    "CONTRAST",
    "GRAY_WEIGHTS",
    "HUE",
    "SATURATION",
    "Recipe",
    "ViewRecipe",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "apply_view",
    "augment_view",
    "blur_kernel_size",
    "byol_recipe",
    "crop_recipe",
    "dino_multicrop_recipe",
    "finish_crops",
    "gaussian_blur",
    "moco_v2_recipe",
    "multi_crop",
    "random_resized_crop",
    "resized_crop",
    "sample_crop",
    "sample_view_params",
    "simclr_recipe",
    "solarize",
    "to_grayscale",
    "two_views",
    "with_strength",
]

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

# torchvision's RandomResizedCrop tries 10 boxes before its centre-crop fallback; each attempt
# draws an area and an aspect ratio, and the chosen box then draws top and left. The host's
# sampler for photos (sslax.data.images) draws the same numbers.
_CROP_ATTEMPTS = host_images.CROP_ATTEMPTS
_CROP_UNIFORMS = host_images.CROP_DRAWS
# A view draws the crop's numbers, then flip, jitter, 4 jitter-order keys, 3 jitter
# factors, hue, grayscale, blur, blur sigma and solarize: one threefry call per view,
# because each separate random call costs about half a second of XLA compile time.
_VIEW_UNIFORMS = _CROP_UNIFORMS + 14

# Colour-jitter op ids, the values of ``params["jitter_order"]``.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


# --------------------------------------------------------------------------------------
# Per-image ops. Images are float32 (H, W, 3) in [0, 1].
# --------------------------------------------------------------------------------------


def _luma(img: jax.Array) -> jax.Array:
    """(H, W, 3) -> (H, W) grayscale intensity."""
    return jnp.tensordot(img, jnp.asarray(GRAY_WEIGHTS, img.dtype), axes=(-1, 0))


def _blend(img: jax.Array, other: jax.Array, factor: jax.Array) -> jax.Array:
    # torchvision clamps float images to [0, 1] after every adjustment; SimCLR relies on it.
    return jnp.clip(factor * img + (1.0 - factor) * other, 0.0, 1.0)


@jax.jit
def to_grayscale(img: jax.Array) -> jax.Array:
    """Grayscale with weights (0.2989, 0.587, 0.114), repeated to three channels.

    Args:
      img: (H, W, 3) float image.
    Returns:
      (H, W, 3) image with equal channels.
    """
    return jnp.broadcast_to(_luma(img)[..., None], img.shape)


@jax.jit
def adjust_brightness(img: jax.Array, factor: jax.Array | float) -> jax.Array:
    """Scales intensities by ``factor`` (0 gives black, 1 the input), clamped to [0, 1].

    Args:
      img: (H, W, 3) float image in [0, 1].
      factor: non-negative scalar.
    Returns:
      (H, W, 3) image.
    """
    return _blend(img, jnp.zeros((), img.dtype), factor)


@jax.jit
def adjust_contrast(img: jax.Array, factor: jax.Array | float) -> jax.Array:
    """Blends with the mean of the grayscale image (0 gives flat grey), clamped to [0, 1].

    Args:
      img: (H, W, 3) float image in [0, 1].
      factor: non-negative scalar.
    Returns:
      (H, W, 3) image.

    >>> img = jnp.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    >>> adjust_contrast(img, 0.0)[0, :, 0].round(3).tolist()  # the weights sum to 0.9999
    [0.5, 0.5]
    """
    return _blend(img, jnp.mean(_luma(img)), factor)


@jax.jit
def adjust_saturation(img: jax.Array, factor: jax.Array | float) -> jax.Array:
    """Blends with the grayscale image (0 gives grayscale), clamped to [0, 1].

    Args:
      img: (H, W, 3) float image in [0, 1].
      factor: non-negative scalar.
    Returns:
      (H, W, 3) image.
    """
    return _blend(img, _luma(img)[..., None], factor)


def _rgb_to_hue(img: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(H, W, 3) -> hue in [0, 1), value (max) and chroma (max - min), each (H, W)."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    value = jnp.max(img, axis=-1)
    chroma = value - jnp.min(img, axis=-1)
    safe = jnp.where(chroma > 0, chroma, 1.0)
    # Ties resolve red, then green, then blue, as in colorsys and torchvision.
    sextant = jnp.where(
        value == r,
        (g - b) / safe,
        jnp.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe),
    )
    hue = jnp.where(chroma > 0, jnp.mod(sextant / 6.0, 1.0), 0.0)
    return hue, value, chroma


@jax.jit
def adjust_hue(img: jax.Array, delta: jax.Array | float) -> jax.Array:
    """Rotates the hue in HSV space by ``delta`` turns; saturation and value are kept.

    Args:
      img: (H, W, 3) float image in [0, 1].
      delta: scalar in [-0.5, 0.5]; 0.5 maps each colour to its complement.
    Returns:
      (H, W, 3) image.

    >>> adjust_hue(jnp.array([[[1.0, 0.0, 0.0]]]), 1 / 3)[0, 0].tolist()
    [0.0, 1.0, 0.0]
    """
    hue, value, chroma = _rgb_to_hue(img)
    hue6 = jnp.mod(hue + delta, 1.0) * 6.0
    # Closed form of HSV -> RGB: channel n is v - c * clip(min(k, 4 - k), 0, 1) with
    # k = (n + 6h) mod 6 and n = 5, 3, 1 for red, green, blue.
    n = jnp.asarray([5.0, 3.0, 1.0], img.dtype)
    k = jnp.mod(n + hue6[..., None], 6.0)
    ramp = jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
    return jnp.clip(value[..., None] - chroma[..., None] * ramp, 0.0, 1.0)


def blur_kernel_size(size: int) -> int:
    """SimCLR's blur kernel: 10% of the image side, made odd (23 taps at 224, 3 at 32)."""
    return 2 * ((size // 10) // 2) + 1


@functools.partial(jax.jit, static_argnames="kernel_size")
def gaussian_blur(img: jax.Array, sigma: jax.Array | float, kernel_size: int) -> jax.Array:
    """Separable Gaussian blur with reflect padding, as ``torchvision`` ``gaussian_blur``.

    The kernel has ``kernel_size`` taps at integer offsets, ``exp(-x^2 / (2 sigma^2))``
    normalised to sum 1. Padding is torch's ``'reflect'`` (the edge pixel is not
    repeated: ``c b | a b c``), which is ``numpy.pad`` mode ``'reflect'`` but
    ``scipy.ndimage`` mode ``'mirror'``; scipy's own ``'reflect'`` repeats the edge.

    Args:
      img: (H, W, C) float image, H and W larger than ``kernel_size // 2``.
      sigma: positive scalar (may be traced).
      kernel_size: odd static int.
    Returns:
      (H, W, C) image.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    radius = kernel_size // 2
    offsets = jnp.arange(-radius, radius + 1, dtype=img.dtype)
    taps = jnp.exp(-0.5 * jnp.square(offsets / sigma))
    taps = taps / jnp.sum(taps)

    def blur_axis(x: jax.Array, axis: int) -> jax.Array:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = jnp.pad(x, pad, mode="reflect")
        n = x.shape[axis]
        # A sum of shifted slices fuses into one loop; cheaper than a conv on CPU and
        # works with a different traced kernel per example under vmap.
        return sum(
            taps[t] * jax.lax.slice_in_dim(padded, t, t + n, axis=axis) for t in range(kernel_size)
        )

    # Channels-first, the shifted slices run along long contiguous rows instead of a
    # 3-wide channel axis: 3x faster on CPU despite the two transposes.
    planar = jnp.moveaxis(img, -1, 0)
    return jnp.moveaxis(blur_axis(blur_axis(planar, 1), 2), 0, -1)


@jax.jit
def solarize(img: jax.Array, threshold: jax.Array | float = 0.5) -> jax.Array:
    """Inverts pixels at or above ``threshold``: ``x >= t ? 1 - x : x``.

    Args:
      img: (H, W, C) float image in [0, 1].
      threshold: scalar.
    Returns:
      (H, W, C) image.
    """
    return jnp.where(img >= threshold, 1.0 - img, img)


def _resample_taps(
    start: jax.Array,
    length: jax.Array,
    in_size: int,
    out_size: int,
    flip: jax.Array | bool,
) -> tuple[jax.Array, jax.Array]:
    """Bilinear taps resampling pixels [start, start + length) of an axis to out_size.

    A triangle filter widened by the downscale factor (antialiased, as PIL and torchvision
    with ``antialias=True``), with each output pixel's weights renormalised over the
    pixels inside the box: the same result as cropping first and resizing after.
    ``flip`` mirrors the output. Returns (out_size, taps) input indices and weights;
    ``taps`` is static, enough for the widest filter any box of this axis can need.
    """
    start = jnp.asarray(start, jnp.float32)
    length = jnp.asarray(length, jnp.float32)
    scale = length / out_size
    support = jnp.maximum(scale, 1.0)
    # Pixel p (centre p + 0.5) is in the filter iff |p + 0.5 - centre| < support: at
    # most ceil(2 support) pixels; one more tap absorbs rounding in `first`.
    taps = math.ceil(2 * max(in_size / out_size, 1.0)) + 1
    positions = jnp.arange(out_size, dtype=jnp.float32)
    # Mirrored positions rather than reversed index arrays: the reversed gather indices
    # met an XLA:CPU miscompile (fusion emitters, vmap batch of 1, as on one example
    # per device) in JAX 0.10.2.
    positions = jnp.where(flip, out_size - 1 - positions, positions)
    centres = start + (positions + 0.5) * scale
    first = jnp.floor(centres - support - 0.5).astype(jnp.int32) + 1
    pixels = first[:, None] + jnp.arange(taps, dtype=jnp.int32)
    weights = jnp.maximum(0.0, 1.0 - jnp.abs(pixels + 0.5 - centres[:, None]) / support)
    weights = jnp.where((pixels >= start) & (pixels < start + length), weights, 0.0)
    weights = weights / jnp.sum(weights, axis=1, keepdims=True)
    return jnp.clip(pixels, 0, in_size - 1), weights


def _resample_rows(
    img: jax.Array, start: jax.Array, length: jax.Array, size: int, flip: jax.Array | bool
) -> jax.Array:
    """(H, W, C) -> (size, W, C) float32, rows [start, start + length) resampled."""
    pixels, weights = _resample_taps(start, length, img.shape[0], size, flip)
    # A few whole-row gathers and a fused multiply-add: O(size * taps) per column, where
    # a dense (size, H) weight matrix costs O(size * H); 3-4x faster on CPU.
    return sum(
        weights[:, t, None, None] * img[pixels[:, t]].astype(jnp.float32)
        for t in range(pixels.shape[1])
    )


def _crop_and_resize(
    img: jax.Array,
    top: jax.Array,
    left: jax.Array,
    height: jax.Array,
    width: jax.Array,
    size: int,
    flip: jax.Array | bool,
) -> jax.Array:
    """:func:`resized_crop` of any dtype, in the input's units and unclipped."""
    rows = _resample_rows(img, top, height, size, False)
    # Transposed so that columns, too, are gathered as contiguous rows.
    cols = _resample_rows(jnp.swapaxes(rows, 0, 1), left, width, size, flip)
    return jnp.swapaxes(cols, 0, 1)


@functools.partial(jax.jit, static_argnames="size")
def resized_crop(
    img: jax.Array,
    top: jax.Array | int,
    left: jax.Array | int,
    height: jax.Array | int,
    width: jax.Array | int,
    size: int,
    flip: jax.Array | bool = False,
) -> jax.Array:
    """Crops the box and resizes it bilinearly (antialiased) to ``size x size``.

    Matches ``torchvision`` ``resized_crop(..., antialias=True)`` (crop, then PIL-style
    bilinear resize). The box may be traced; only ``size`` is static. The optional
    horizontal flip is folded into the column taps, so it costs nothing.

    Args:
      img: (H, W, C) float image in [0, 1].
      top, left, height, width: box in pixels, inside the image.
      size: static output side.
      flip: scalar bool, mirror the output left-right.
    Returns:
      (size, size, C) float32 image in [0, 1].

    >>> img = jnp.arange(16.0).reshape(4, 4, 1) / 16
    >>> resized_crop(img, 0, 0, 2, 2, 1)[..., 0].tolist()
    [[0.15625]]
    """
    out = _crop_and_resize(img, top, left, height, width, size, flip)
    # Weights summing to 1 + ulp would otherwise push white pixels just above 1.
    return jnp.clip(out, 0.0, 1.0)


def _uniform_index(u: jax.Array, n: jax.Array) -> jax.Array:
    """An integer uniform in [0, n) from u ~ U[0, 1)."""
    return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)


def _crop_from_uniforms(
    u: jax.Array,
    image_shape: Sequence[int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> dict[str, jax.Array]:
    """:func:`sample_crop` given its (_CROP_UNIFORMS,) U[0, 1) draws."""
    height, width = int(image_shape[0]), int(image_shape[1])
    n = _CROP_ATTEMPTS
    area = (scale[0] + (scale[1] - scale[0]) * u[:n]) * (height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[n : 2 * n])
    w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(fits)

    fallback_h, fallback_w = host_images.fallback_crop(height, width, ratio)

    found = jnp.any(fits)
    h = jnp.where(found, h[first], fallback_h)
    w = jnp.where(found, w[first], fallback_w)
    top = jnp.where(found, _uniform_index(u[2 * n], height - h + 1), (height - fallback_h) // 2)
    left = jnp.where(found, _uniform_index(u[2 * n + 1], width - w + 1), (width - fallback_w) // 2)
    return {"top": top, "left": left, "height": h, "width": w}


@functools.partial(jax.jit, static_argnames=("image_shape", "scale", "ratio"))
def sample_crop(
    key: jax.Array,
    image_shape: tuple[int, ...],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> dict[str, jax.Array]:
    """Draws a crop box as torchvision's ``RandomResizedCrop.get_params``.

    Up to 10 attempts: area fraction ``U(scale)``, aspect ratio log-uniform in ``ratio``,
    side lengths rounded; the first box that fits is placed uniformly. If none fits, the
    central crop of the largest box with an in-range aspect ratio is used. All attempts
    are drawn at once and the first valid one is selected, so this is branch-free.

    Args:
      key: PRNG key.
      image_shape: static (H, W, ...) tuple.
      scale, ratio: (low, high) bounds.
    Returns:
      dict of int32 scalars ``top``, ``left``, ``height``, ``width``.

    >>> box = sample_crop(jax.random.key(0), (20, 60), scale=(1.0, 1.0))  # never fits
    >>> [int(box[k]) for k in ("top", "left", "height", "width")]
    [0, 16, 20, 27]
    """
    u = jax.random.uniform(key, (_CROP_UNIFORMS,))
    return _crop_from_uniforms(u, image_shape, scale, ratio)


@functools.partial(jax.jit, static_argnames=("size", "scale", "ratio"))
def random_resized_crop(
    key: jax.Array,
    img: jax.Array,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> jax.Array:
    """torchvision's ``RandomResizedCrop``: :func:`sample_crop` then :func:`resized_crop`.

    Args:
      key: PRNG key.
      img: (H, W, C) float image.
      size: static output side.
    Returns:
      (size, size, C) float32 image.
    """
    box = sample_crop(key, img.shape, scale, ratio)
    return resized_crop(img, box["top"], box["left"], box["height"], box["width"], size)


# --------------------------------------------------------------------------------------
# Recipes.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ViewRecipe:
    """The ops, strengths and probabilities of one view, applied in this order.

    crop (always) -> horizontal flip -> colour jitter -> grayscale -> blur -> solarize.

    Attributes:
      size: output side in pixels.
      crop_scale: area fraction range of the random resized crop.
      crop_ratio: aspect-ratio range (width / height), sampled log-uniformly.
      flip_prob: probability of a horizontal flip.
      jitter_prob: probability of applying colour jitter.
      brightness, contrast, saturation: jitter strengths b; factors ~ U[max(0, 1-b), 1+b].
      hue: jitter strength h in [0, 0.5]; delta ~ U[-h, h].
      grayscale_prob: probability of converting to grayscale.
      blur_prob: probability of a Gaussian blur.
      blur_sigma: sigma range, sampled uniformly.
      blur_kernel: odd number of taps; 0 means :func:`blur_kernel_size` of ``size``.
      solarize_prob: probability of solarizing.
      solarize_threshold: solarize threshold.
    """

    size: int
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 0
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue strength must be in [0, 0.5], got {self.hue}")
        if self.blur_kernel and self.blur_kernel % 2 != 1:
            raise ValueError(f"blur_kernel must be odd, got {self.blur_kernel}")

    @property
    def kernel_size(self) -> int:
        return self.blur_kernel or blur_kernel_size(self.size)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A tuple of views; view ``v`` of every example follows ``views[v]``."""

    name: str
    views: tuple[ViewRecipe, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Distinct output sizes in order of first appearance: the groups of multi_crop."""
        return tuple(dict.fromkeys(v.size for v in self.views))


def simclr_recipe(size: int, strength: float = 1.0, blur: bool = True) -> Recipe:
    """SimCLR: crop (0.08, 1), flip 0.5, jitter p=0.8 at (0.8s, 0.8s, 0.8s, 0.2s) in
    random order, grayscale 0.2, blur p=0.5 with sigma U(0.1, 2) and 10%-of-side kernel.

    ``strength`` is SimCLR's colour-distortion strength s (0.5 with ``blur=False`` is its
    CIFAR recipe); it scales the jitter only, as in the paper. To scale every op from
    the identity upward (InfoMin sweeps), use :func:`with_strength`.

    >>> simclr_recipe(224).views[0].kernel_size
    23
    """
    view = ViewRecipe(
        size=size,
        brightness=0.8 * strength,
        contrast=0.8 * strength,
        saturation=0.8 * strength,
        hue=min(0.2 * strength, 0.5),
        blur_prob=0.5 if blur else 0.0,
    )
    return Recipe("simclr", (view, view))


def crop_recipe(size: int) -> Recipe:
    """Crop and flip only: SimCLR's random resized crop (0.08, 1) and flip 0.5, no colour, no
    blur. SimCLR's single-transformation ablation (Figure 5: crop alone).

    >>> crop_recipe(32).views[0].jitter_prob
    0.0
    """
    view = ViewRecipe(size=size, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    return Recipe("crop", (view, view))


def moco_v2_recipe(size: int) -> Recipe:
    """MoCo v2: crop (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2,
    blur p=0.5, flip 0.5. (MoCo flips last; flip commutes with the other ops.)"""
    view = ViewRecipe(size=size, crop_scale=(0.2, 1.0))
    return Recipe("moco_v2", (view, view))


def byol_recipe(size: int) -> Recipe:
    """BYOL: jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2, blur p 1.0 / 0.1,
    solarize p 0 / 0.2 for views 1 / 2, crop (0.08, 1), flip 0.5."""
    base = ViewRecipe(size=size, saturation=0.2)
    return Recipe(
        "byol",
        (
            dataclasses.replace(base, blur_prob=1.0),
            dataclasses.replace(base, blur_prob=0.1, solarize_prob=0.2),
        ),
    )


def dino_multicrop_recipe(
    global_size: int = 224,
    local_size: int = 96,
    num_local: int = 8,
    jitter_strength: float = 1.0,
) -> Recipe:
    """DINO multi-crop: two global crops, scale (0.4, 1), then ``num_local`` local crops,
    scale (0.05, 0.4). Jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2, flip 0.5;
    blur p 1.0 on global 1, 0.1 (plus solarize 0.2) on global 2, 0.5 on locals.

    ``jitter_strength`` s scales the jitter strengths, as SimCLR's colour strength does
    (hue capped at 0.5); 1 is DINO's recipe.

    DINO blurs with PIL's ``GaussianBlur(radius=sigma)``, which has no kernel cap; here
    the blur is torchvision's with the 10%-of-side kernel, as in the other recipes.

    >>> dino_multicrop_recipe(32, 16, 2, jitter_strength=6.0).views[2].hue
    0.5
    """
    s = jitter_strength
    base = ViewRecipe(
        size=global_size,
        crop_scale=(0.4, 1.0),
        brightness=0.4 * s,
        contrast=0.4 * s,
        saturation=0.2 * s,
        hue=min(0.1 * s, 0.5),
    )
    global_1 = dataclasses.replace(base, blur_prob=1.0)
    global_2 = dataclasses.replace(base, blur_prob=0.1, solarize_prob=0.2)
    local = dataclasses.replace(base, size=local_size, crop_scale=(0.05, 0.4), blur_prob=0.5)
    return Recipe("dino", (global_1, global_2) + (local,) * num_local)


def swav_multicrop_recipe(
    global_size: int = 224,
    local_size: int = 96,
    num_local: int = 6,
    *,
    strength: float = 1.0,
    blur: bool = True,
    global_scale: tuple[float, float] = (0.14, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.14),
) -> Recipe:
    """SwAV multi-crop: two global crops, scale (0.14, 1), then ``num_local`` local crops,
    scale (0.05, 0.14), all with SimCLR's colour distortion of strength ``strength``
    (jitter p=0.8 at (0.8s, 0.8s, 0.8s, 0.2s), grayscale 0.2), blur p=0.5 and flip 0.5, as
    the official ``main_swav.py``.

    >>> r = swav_multicrop_recipe(32, 16, 2)
    >>> [v.size for v in r.views], r.views[2].crop_scale
    ([32, 32, 16, 16], (0.05, 0.14))
    """
    global_view = ViewRecipe(
        size=global_size,
        crop_scale=global_scale,
        brightness=0.8 * strength,
        contrast=0.8 * strength,
        saturation=0.8 * strength,
        hue=min(0.2 * strength, 0.5),
        blur_prob=0.5 if blur else 0.0,
    )
    local = dataclasses.replace(global_view, size=local_size, crop_scale=local_scale)
    return Recipe("swav", (global_view, global_view) + (local,) * num_local)


def with_strength(recipe: Recipe, strength: float) -> Recipe:
    """Scales every op of a recipe by ``strength`` s: 0 is the identity, 1 the recipe.

    * crop: both ``crop_scale`` and ``crop_ratio`` bounds are raised to the power s, so
      s = 0 crops the whole image (a square image is then only resized) and s > 1 makes
      smaller, more elongated crops;
    * jitter strengths are multiplied by s (hue capped at 0.5);
    * flip, grayscale, blur and solarize probabilities are multiplied by min(s, 1).

    >>> with_strength(simclr_recipe(32), 0.0).views[0].crop_scale
    (1.0, 1.0)
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    s, p = strength, min(strength, 1.0)

    def scale_view(view: ViewRecipe) -> ViewRecipe:
        return dataclasses.replace(
            view,
            crop_scale=(view.crop_scale[0] ** s, view.crop_scale[1] ** s),
            crop_ratio=(view.crop_ratio[0] ** s, view.crop_ratio[1] ** s),
            flip_prob=view.flip_prob * p,
            brightness=view.brightness * s,
            contrast=view.contrast * s,
            saturation=view.saturation * s,
            hue=min(view.hue * s, 0.5),
            grayscale_prob=view.grayscale_prob * p,
            blur_prob=view.blur_prob * p,
            solarize_prob=view.solarize_prob * p,
        )

    return Recipe(recipe.name, tuple(scale_view(v) for v in recipe.views))


# --------------------------------------------------------------------------------------
# One view of one image.
# --------------------------------------------------------------------------------------


def _params_from_uniforms(
    u: jax.Array, view: ViewRecipe, image_shape: Sequence[int]
) -> dict[str, jax.Array]:
    """:func:`sample_view_params` given its (_VIEW_UNIFORMS,) U[0, 1) draws."""
    params = _crop_from_uniforms(u[:_CROP_UNIFORMS], image_shape, view.crop_scale, view.crop_ratio)
    flip, jitter, *order_keys, b, c, s, hue, gray, blur, sigma, sol = u[_CROP_UNIFORMS:]

    def between(x: jax.Array, lo: float, hi: float) -> jax.Array:
        return lo + (hi - lo) * x

    def factor(x: jax.Array, strength: float) -> jax.Array:
        return between(x, max(0.0, 1.0 - strength), 1.0 + strength)

    params.update(
        flip=flip < view.flip_prob,
        jitter=jitter < view.jitter_prob,
        # The ranks of i.i.d. uniforms are a uniformly random permutation.
        jitter_order=jnp.argsort(jnp.stack(order_keys)).astype(jnp.int32),
        brightness=factor(b, view.brightness),
        contrast=factor(c, view.contrast),
        saturation=factor(s, view.saturation),
        hue=between(hue, -view.hue, view.hue),
        grayscale=gray < view.grayscale_prob,
        blur=blur < view.blur_prob,
        blur_sigma=between(sigma, *view.blur_sigma),
        solarize=sol < view.solarize_prob,
    )
    return params


@functools.partial(jax.jit, static_argnames=("view", "image_shape"))
def sample_view_params(
    key: jax.Array, view: ViewRecipe, image_shape: tuple[int, ...]
) -> dict[str, jax.Array]:
    """All random draws of one view of one image, as a flat dict of scalars.

    Every draw is made whatever the probabilities, so the dict has a fixed structure
    and ``vmap`` over keys gives batches of parameters for statistical checks. The batch
    functions draw view ``v`` of example ``i`` with the key
    ``fold_in(fold_in(key, indices[i]), v)``.

    Args:
      key: PRNG key for this view of this example.
      view: the view's recipe.
      image_shape: static (H, W, 3) tuple, the input shape.
    Returns:
      dict with int32 ``top``, ``left``, ``height``, ``width`` (crop box); bool ``flip``,
      ``jitter``, ``grayscale``, ``blur``, ``solarize`` (op applied?); float32
      ``brightness``, ``contrast``, ``saturation`` (factors), ``hue`` (delta),
      ``blur_sigma``; and int32 (4,) ``jitter_order``, a permutation of the op ids
      BRIGHTNESS, CONTRAST, SATURATION, HUE.
    """
    u = jax.random.uniform(key, (_VIEW_UNIFORMS,))
    return _params_from_uniforms(u, view, image_shape)


def _color_jitter(img: jax.Array, params: dict[str, jax.Array], with_hue: bool) -> jax.Array:
    """Brightness, contrast, saturation and hue in ``params["jitter_order"]``.

    Under ``vmap`` a data-dependent ``switch`` evaluates every branch, so a naive loop over
    four positions would run the costly hue op four times. Brightness, contrast and
    saturation are all ``clip(f x + (1 - f) ref)`` with ``ref`` = 0, the mean luma or
    the luma, so each position is one blend whose factor and ``ref`` weights are picked
    by scalar arithmetic, and a blend with f = 1 is an exact no-op. Hue runs once,
    between the blends placed before it and those placed after it.
    """
    order = params["jitter_order"]
    factors = jnp.stack([params["brightness"], params["contrast"], params["saturation"], 1.0])

    def blend_at(x: jax.Array, position: int, active: jax.Array | bool = True) -> jax.Array:
        op = order[position]
        factor = jnp.where(active, factors[op], 1.0)
        luma = _luma(x)
        ref = (op == CONTRAST) * jnp.mean(luma) + (op == SATURATION) * luma
        return _blend(x, ref[..., None], factor)

    if not with_hue:
        for position in range(4):
            img = blend_at(img, position)
        return img
    hue_position = jnp.argmax(order == HUE)
    for position in range(3):
        img = blend_at(img, position, position < hue_position)
    img = adjust_hue(img, params["hue"])
    for position in range(1, 4):
        img = blend_at(img, position, position > hue_position)
    return img


@functools.partial(jax.jit, static_argnames=("view", "cropped"))
def apply_view(
    img: jax.Array, params: dict[str, jax.Array], view: ViewRecipe, cropped: bool = False
) -> jax.Array:
    """Applies drawn parameters to one image.

    Ops whose probability or strength in ``view`` is zero are left out of the graph,
    so they cost nothing and are exact identities.

    Args:
      img: (H, W, 3) float image in [0, 1] (uint8 is scaled by 1/255).
      params: a dict from :func:`sample_view_params`.
      view: the recipe the parameters were drawn for.
      cropped: ``img`` is the view's crop already (``view.size`` square, cut on the host);
        the crop parameters are then ignored and the rest applies from the flip on.
    Returns:
      (view.size, view.size, 3) float32 image in [0, 1].
    """
    if cropped:
        if img.shape[:2] != (view.size, view.size):
            raise ValueError(f"a cropped view must be {view.size} square, got {img.shape}")
        out = jnp.where(params["flip"], img[:, ::-1], img).astype(jnp.float32)
    else:
        out = _crop_and_resize(
            img,
            params["top"],
            params["left"],
            params["height"],
            params["width"],
            view.size,
            params["flip"],
        )
    # Scaling after the resize reads the image once, as uint8.
    if img.dtype == jnp.uint8:
        out = out / 255.0
    out = jnp.clip(out, 0.0, 1.0)
    with_hue = view.hue > 0
    if view.jitter_prob > 0 and (view.brightness or view.contrast or view.saturation or with_hue):
        out = jnp.where(params["jitter"], _color_jitter(out, params, with_hue), out)
    if view.grayscale_prob > 0:
        out = jnp.where(params["grayscale"], to_grayscale(out), out)
    if view.blur_prob > 0:
        blurred = gaussian_blur(out, params["blur_sigma"], view.kernel_size)
        out = jnp.where(params["blur"], blurred, out)
    if view.solarize_prob > 0:
        out = jnp.where(params["solarize"], solarize(out, view.solarize_threshold), out)
    # Blur taps summing to 1 + ulp can leave white pixels just above 1.
    return jnp.clip(out, 0.0, 1.0)


@functools.partial(jax.jit, static_argnames="view")
def augment_view(key: jax.Array, img: jax.Array, view: ViewRecipe) -> jax.Array:
    """One random view of one image: (H, W, 3) uint8 or float -> (size, size, 3) float32."""
    return apply_view(img, sample_view_params(key, view, img.shape), view)


# --------------------------------------------------------------------------------------
# Batches.
# --------------------------------------------------------------------------------------


# The ViewRecipe fields whose zeroness leaves an op out of apply_view's graph.
_GRAPH_SWITCHES = (
    "jitter_prob",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "grayscale_prob",
    "blur_prob",
    "solarize_prob",
)


def _merge(views: Sequence[ViewRecipe]) -> ViewRecipe:
    """A view whose graph includes every op any of ``views`` may apply.

    Views of one size share one ``vmap``-ed graph (one copy to compile instead of ten for
    DINO); an op a view never applies gets ``False`` gates from its own sampler.
    """
    merged = {name: max(getattr(v, name) for v in views) for name in _GRAPH_SWITCHES}
    return dataclasses.replace(views[0], **merged)


def _shared_graph_key(view: ViewRecipe) -> tuple:
    """Views agreeing on these static settings can share one application graph."""
    return (view.size, view.kernel_size, view.solarize_threshold)


def _views_by_size(
    key: jax.Array,
    images: jax.Array | None,
    recipe: Recipe,
    indices: jax.Array | None,
    made: Sequence[int] | None = None,
    crops: Sequence[jax.Array] | None = None,
) -> tuple[jax.Array, ...]:
    """multi_crop's output: per size, the (N, k, size, size, 3) views, image-major.

    From ``images`` (N, H, W, 3), cropped here; or from host-made ``crops``, one
    (N, k, size, size, 3) array per size of ``recipe.sizes`` holding every view of the recipe.
    """
    if crops is None:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3), got {images.shape}")
        num = images.shape[0]
    else:
        _check_crops(crops, recipe)
        num = crops[0].shape[0]
    made = tuple(range(len(recipe.views))) if made is None else tuple(made)
    if not made or len(set(made)) != len(made) or not set(made) <= set(range(len(recipe.views))):
        raise ValueError(
            f"views must be distinct positions in recipe {recipe.name!r}'s "
            f"{len(recipe.views)} views, got {made}"
        )
    if indices is None:
        indices = jnp.arange(num, dtype=jnp.int32)
    view_ids = jnp.arange(len(recipe.views))

    def draws(example_key: jax.Array) -> jax.Array:
        view_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(example_key, view_ids)
        return jax.vmap(lambda k: jax.random.uniform(k, (_VIEW_UNIFORMS,)))(view_keys)

    example_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
    uniforms = jax.vmap(draws)(example_keys)  # (N, views, _VIEW_UNIFORMS)

    def view_input(v: int) -> jax.Array:
        """View v's host crop: position v among the recipe's views of its size."""
        size = recipe.views[v].size
        position = [u for u in range(len(recipe.views)) if recipe.views[u].size == size].index(v)
        return crops[recipe.sizes.index(size)][:, position]

    groups: dict[tuple, list[int]] = {}
    for v in made:
        groups.setdefault(_shared_graph_key(recipe.views[v]), []).append(v)
    outputs = {}
    for members in groups.values():
        shape = images.shape[1:] if crops is None else view_input(members[0]).shape[1:]
        params = [
            jax.vmap(_params_from_uniforms, in_axes=(0, None, None))(
                uniforms[:, v], recipe.views[v], shape
            )
            for v in members
        ]
        params = jax.tree.map(lambda *p: jnp.stack(p), *params)  # (members, N, ...)
        merged = _merge([recipe.views[v] for v in members])
        if crops is None:
            apply = jax.vmap(apply_view, in_axes=(0, 0, None))  # over examples
            apply = jax.vmap(apply, in_axes=(None, 0, None))  # over views
            stacked = apply(images, params, merged)
        else:
            apply = jax.vmap(functools.partial(apply_view, view=merged, cropped=True))
            inputs = jnp.stack([view_input(v) for v in members])  # (members, N, ...): local
            stacked = jax.vmap(apply)(inputs, params)
        outputs.update({v: stacked[i] for i, v in enumerate(members)})

    # Stacked on a new axis after the image axis: no row of any device changes device.
    sizes = dict.fromkeys(recipe.views[v].size for v in made)
    return tuple(
        jnp.stack([outputs[v] for v in made if recipe.views[v].size == size], axis=1)
        for size in sizes
    )


def _check_crops(crops: Sequence[jax.Array], recipe: Recipe) -> None:
    counts = [sum(v.size == size for v in recipe.views) for size in recipe.sizes]
    expected = [(k, size, size, 3) for k, size in zip(counts, recipe.sizes)]
    got = [tuple(c.shape[1:]) for c in crops]
    if got != expected or len({c.shape[0] for c in crops}) != 1:
        raise ValueError(
            f"recipe {recipe.name!r} needs host crops of shapes (N, *{expected}) per size, got "
            f"{[tuple(c.shape) for c in crops]}"
        )


@functools.partial(jax.jit, static_argnames="recipe")
def two_views(
    key: jax.Array,
    images: jax.Array,
    recipe: Recipe,
    *,
    indices: jax.Array | None = None,
) -> jax.Array:
    """Two augmented views of every image, for the two-view methods.

    Jittable with ``recipe`` static. With ``images`` sharded over a mesh axis each
    device augments its own examples.

    Args:
      key: PRNG key, the same on every device.
      images: (N, H, W, 3) uint8 (or float in [0, 1]).
      recipe: a two-view recipe with equal view sizes.
      indices: (N,) int32 global example indices; default ``arange(N)``. Example ``i``
        uses ``fold_in(key, indices[i])``.
    Returns:
      (N, 2, size, size, 3) float32 in [0, 1]; ``[i, v]`` is view ``v`` of image ``i``.
      Sharded like ``images`` on axis 0 (module docstring: the layout moves nothing).
    """
    if len(recipe.views) != 2 or len(recipe.sizes) != 1:
        raise ValueError(
            f"two_views needs two views of one size; recipe {recipe.name!r} has sizes "
            f"{[v.size for v in recipe.views]} (use multi_crop)"
        )
    (views,) = _views_by_size(key, images, recipe, indices)
    return views


@functools.partial(jax.jit, static_argnames=("recipe", "views"))
def multi_crop(
    key: jax.Array,
    images: jax.Array,
    recipe: Recipe,
    *,
    indices: jax.Array | None = None,
    views: tuple[int, ...] | None = None,
) -> tuple[jax.Array, ...]:
    """Every view of every image, grouped by size (e.g. DINO's globals and locals).

    Args:
      key, images, indices: as in :func:`two_views`.
      recipe: any recipe.
      views: positions in ``recipe.views`` to make, in this order (default: all). A view
        depends only on its position, so ``views=(1,)`` is the second view of the full call,
        made alone (MoCo v2 makes its key views where the key encoder runs).
    Returns:
      one (N, k, size, size, 3) float32 array per size (in order of first appearance among
      the views made), where k is the number of views of that size: ``[i, j]`` is image
      ``i``'s ``j``-th view of that size.

    >>> images = jnp.zeros((4, 24, 24, 3), jnp.uint8)
    >>> recipe = dino_multicrop_recipe(16, 8, num_local=3)
    >>> [c.shape for c in multi_crop(jax.random.key(0), images, recipe)]
    [(4, 2, 16, 16, 3), (4, 3, 8, 8, 3)]
    """
    return _views_by_size(key, images, recipe, indices, views)


@functools.partial(jax.jit, static_argnames=("recipe", "views"))
def finish_crops(
    key: jax.Array,
    crops: tuple[jax.Array, ...],
    recipe: Recipe,
    *,
    indices: jax.Array | None = None,
    views: tuple[int, ...] | None = None,
) -> tuple[jax.Array, ...]:
    """:func:`multi_crop` for views whose crops were cut on the host (photos of every size).

    The host takes each view's random resized crop from the original image
    (:class:`sslax.data.images.TrainCrops`); this applies the rest of each view's recipe, from
    the flip on, with the same per-example draws as :func:`multi_crop` (the crop's own draws
    go unused).

    Args:
      key, indices, views: as in :func:`multi_crop`.
      crops: one (N, k, size, size, 3) uint8 array per size of ``recipe.sizes``, holding every
        view of the recipe of that size in recipe order.
      recipe: the recipe the crops were cut for.
    Returns:
      as :func:`multi_crop`.

    >>> recipe = dino_multicrop_recipe(16, 8, num_local=3)
    >>> crops = (jnp.zeros((4, 2, 16, 16, 3), jnp.uint8), jnp.zeros((4, 3, 8, 8, 3), jnp.uint8))
    >>> [c.shape for c in finish_crops(jax.random.key(0), crops, recipe, views=(0, 2))]
    [(4, 1, 16, 16, 3), (4, 1, 8, 8, 3)]
    """
    return _views_by_size(key, None, recipe, indices, views, tuple(crops))
