"""The built-in dataset: procedurally generated shapes, deterministic from a seed.

Ten classes whose identity is an object's *shape*; every other factor is a nuisance drawn at
random per image: position, scale, rotation, the object's colour
and hue, the background's colour and texture (flat, gradient, stripes, checks or blotches),
global brightness and contrast, and pixel noise. SimCLR's crops and colour distortions vary
those factors between two views of one image, which leaves the shape to tell images apart by
(its features still keep where the object is and how big: ``--factors``). kNN top-1 on the
held-out split (chance 0.10): a randomly initialised ResNet-18 0.11, raw pixels 0.49, the
default 7-minute SimCLR run 0.72 (README, "Measured"); linear-probe top-1 on raw pixels 0.14.
``generate(..., with_factors=True)`` and :func:`load_factors` also give four of the nuisances
per image as classes (:data:`FACTORS`), to ask which of them a representation keeps
(``python -m sslax.eval --factors``).

No download: the images are drawn with numpy on first use (a few seconds) and cached as .npz
under ``$SSLAX_DATA_DIR`` (default ``~/.cache/sslax``).

>>> images, labels = generate(8, image_size=32, seed=0)
>>> images.shape, images.dtype, labels.shape
((8, 32, 32, 3), dtype('uint8'), (8,))
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np

CLASS_NAMES = (
    "disk",
    "square",
    "triangle",
    "star",
    "plus",
    "ring",
    "crescent",
    "half_disk",
    "bar",
    "frame",
)
NUM_CLASSES = len(CLASS_NAMES)
SPLIT_SIZES = {"train": 20_000, "test": 4_000}
# Distinct seeds per split so the held-out images are new draws, not copies of training ones.
_SPLIT_SEED_OFFSET = {"train": 0, "test": 1_000_003}
_FORMAT_VERSION = 6
MAX_ROTATION = np.pi  # radians either way: any orientation
RADIUS_RANGE = (0.5, 0.8)  # the object's size, as a fraction of half the image side
CENTRE_REACH = 0.95  # centre within +-(reach - radius): the object stays inside
_SUPERSAMPLE = 2  # anti-aliasing: draw at twice the size, average 2x2 blocks
# The nuisances as classes, to ask which of them a representation keeps besides the shape
# (``python -m sslax.eval --factors``): the background's texture, the quadrant of the object's
# centre, its hue in six bins and its size in three.
FACTORS = {
    "background": ("flat", "gradient", "stripes", "checks", "blotches"),
    "position": ("top left", "top right", "bottom left", "bottom right"),
    "object_hue": ("red", "yellow", "green", "cyan", "blue", "magenta"),
    "size": ("small", "medium", "large"),
}


def _inside(cls: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether object-frame points (u, v) lie inside each image's shape.

    Args:
      cls: [B] class ids.
      u, v: [B, P] coordinates in the object's frame, the shape's radius being ~1.

    Returns:
      [B, P] float32 mask.
    """

    def triangle(u, v):
        return np.all(
            [u * np.cos(a) + v * np.sin(a) < 0.5 for a in np.pi / 2 + np.arange(3) * 2 * np.pi / 3],
            axis=0,
        )

    def star(u, v):  # radius oscillates between 0.42 and 1, five times around
        turns = np.arctan2(v, u) * 5 / (2 * np.pi)
        return np.hypot(u, v) < 0.42 + 0.58 * np.abs((turns % 1.0) * 2 - 1) ** 1.5

    def box(u, v):
        return np.maximum(np.abs(u), np.abs(v))

    shapes = {
        0: lambda u, v: np.hypot(u, v) < 0.95,
        1: lambda u, v: box(u, v) < 0.75,
        2: triangle,
        3: star,
        4: lambda u, v: (
            ((np.abs(u) < 0.3) & (np.abs(v) < 0.95)) | ((np.abs(v) < 0.3) & (np.abs(u) < 0.95))
        ),
        5: lambda u, v: (np.hypot(u, v) < 0.95) & (np.hypot(u, v) > 0.55),
        6: lambda u, v: (np.hypot(u, v) < 0.95) & (np.hypot(u - 0.5, v) > 0.75),
        7: lambda u, v: (np.hypot(u, v + 0.4) < 0.95) & (v > -0.4),
        8: lambda u, v: (np.abs(u) < 0.98) & (np.abs(v) < 0.32),
        9: lambda u, v: (box(u, v) < 0.8) & (box(u, v) > 0.45),
    }
    out = np.zeros(u.shape, dtype=np.float32)
    for c, inside in shapes.items():
        sel = cls == c
        out[sel] = inside(u[sel], v[sel])
    return out


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of equal shape; returns shape + (3,)."""
    i = np.floor(h * 6.0).astype(np.int32) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros(h.shape + (3,), dtype=np.float32)
    for k, (r, g, b) in enumerate(choices):
        sel = i == k
        rgb[sel] = np.stack([r[sel], g[sel], b[sel]], axis=-1)
    return rgb


def _random_hsv(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return rng.uniform(0, 1, n), rng.uniform(0.2, 1.0, n), rng.uniform(0.15, 1.0, n)


def _backgrounds(
    rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[n, P, 3] textured backgrounds, two colours mixed by a random pattern, and [n] kinds.

    The second colour is a random step away from the first, so textures range from faint to
    strong but the object usually stays the most salient structure, as in natural photographs.
    """
    c1 = _hsv_to_rgb(*_random_hsv(rng, n))
    c2 = np.clip(c1 + rng.uniform(-0.35, 0.35, (n, 3)).astype(np.float32), 0, 1)
    kind = rng.integers(0, len(FACTORS["background"]), n)  # flat, gradient, stripes, ...
    theta = rng.uniform(0, np.pi, (n, 1)).astype(np.float32)
    freq = rng.uniform(1.5, 5.0, (n, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 1)).astype(np.float32)
    waves = rng.uniform(0, np.pi, (n, 3, 3)).astype(np.float32)  # angle, frequency, phase
    waves[..., 1] = waves[..., 1] * (2 / np.pi) + 0.5
    waves[..., 2] *= 2
    mix = np.zeros((n, x.size), dtype=np.float32)
    for k in range(1, 5):  # kind 0: flat colour
        sel = kind == k
        if not sel.any():
            continue
        t, f, ph = theta[sel], freq[sel], phase[sel]
        along = x[None] * np.cos(t) + y[None] * np.sin(t)
        if k == 1:  # gradient
            mix[sel] = (along + 1) / 2
        elif k == 2:  # stripes
            mix[sel] = 0.5 + 0.5 * np.sin(np.pi * f * along + ph)
        elif k == 3:  # checks
            across = -x[None] * np.sin(t) + y[None] * np.cos(t)
            mix[sel] = (np.floor(f * (along + 1)) + np.floor(f * (across + 1))) % 2
        else:  # blotches: a sum of three random low-frequency waves
            w = waves[sel]
            mix[sel] = (
                0.5
                + sum(
                    np.sin(
                        np.pi
                        * w[:, j, 1:2]
                        * (x[None] * np.cos(w[:, j, 0:1]) + y[None] * np.sin(w[:, j, 0:1]))
                        + w[:, j, 2:3]
                    )
                    for j in range(3)
                )
                / 6
            )
    mix = np.clip(mix, 0, 1)[..., None]
    return c1[:, None] * (1 - mix) + c2[:, None] * mix, kind


def generate(
    num_images: int,
    *,
    image_size: int = 32,
    seed: int = 0,
    chunk: int = 1000,
    with_factors: bool = False,
):
    """Draws ``num_images`` images with balanced random classes.

    Args:
      num_images: how many images.
      image_size: side in pixels (square images).
      seed: the same seed always gives the same images and labels.
      chunk: images drawn per vectorised batch (memory knob only, does not change the output).
      with_factors: also return each image's nuisance factors (the images are the same).

    Returns:
      images [num_images, image_size, image_size, 3] uint8 and labels [num_images] int32; with
      ``with_factors``, a third item: ``{name: [num_images] int32}`` for each of ``FACTORS``.
    """
    if num_images < 0 or image_size < 8:
        raise ValueError(
            f"need num_images >= 0 and image_size >= 8, got {num_images}, {image_size}"
        )
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_images) % NUM_CLASSES).astype(np.int32)
    side = image_size * _SUPERSAMPLE
    grid = (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1  # pixel centres in [-1, 1]
    y, x = [a.reshape(-1) for a in np.meshgrid(grid, grid, indexing="ij")]
    images = np.empty((num_images, image_size, image_size, 3), dtype=np.uint8)
    factors = {name: np.empty(num_images, dtype=np.int32) for name in FACTORS}
    for start in range(0, num_images, chunk):
        cls = labels[start : start + chunk]
        n = len(cls)
        # One generator per chunk seeded from (seed, chunk index): the chunk size then only
        # changes memory use, as long as it is kept the same for a given cache file.
        crng = np.random.default_rng([seed, start // chunk])
        radius = crng.uniform(*RADIUS_RANGE, (n, 1)).astype(np.float32)
        cx, cy = [
            crng.uniform(-1, 1, (n, 1)).astype(np.float32) * (CENTRE_REACH - radius)
            for _ in range(2)
        ]
        angle = crng.uniform(-MAX_ROTATION, MAX_ROTATION, (n, 1)).astype(np.float32)
        dx, dy = (x[None] - cx) / radius, (y[None] - cy) / radius
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        mask = _inside(cls, u, v)[..., None]
        background, kind = _backgrounds(crng, n, x, y)
        hue, saturation, value = _random_hsv(crng, n)
        foreground = _hsv_to_rgb(hue, saturation, value)[:, None]
        # Keep the object visible: push its brightness away from the background's mean.
        bg_luma = background.mean(axis=(1, 2))[:, None, None]
        fg_luma = foreground.mean(axis=2, keepdims=True)
        gap = crng.uniform(0.25, 0.5, (n, 1, 1)) * np.where(bg_luma > 0.5, -1, 1)
        foreground = np.clip(foreground + (bg_luma + gap - fg_luma), 0, 1)
        img = background * (1 - mask) + foreground * mask
        img = img.reshape(n, image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE, 3).mean(
            axis=(2, 4)
        )
        contrast = crng.uniform(0.6, 1.2, (n, 1, 1, 1))
        brightness = crng.uniform(-0.15, 0.15, (n, 1, 1, 1))
        img = (img - 0.5) * contrast + 0.5 + brightness
        img = img + crng.standard_normal(img.shape, dtype=np.float32) * crng.uniform(
            0.0, 0.06, (n, 1, 1, 1)
        ).astype(np.float32)
        images[start : start + n] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
        # Row-major quadrants of the object's centre; sizes and hues in equal-width bins.
        factors["position"][start : start + n] = 2 * (cy[:, 0] > 0) + (cx[:, 0] > 0)
        size = (radius[:, 0] - RADIUS_RANGE[0]) / (RADIUS_RANGE[1] - RADIUS_RANGE[0])
        factors["size"][start : start + n] = np.minimum(size * 3, 2).astype(np.int32)
        factors["object_hue"][start : start + n] = np.minimum(hue * 6, 5).astype(np.int32)
        factors["background"][start : start + n] = kind
    return (images, labels, factors) if with_factors else (images, labels)


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("SSLAX_DATA_DIR", pathlib.Path.home() / ".cache" / "sslax"))


def load_factors(split: str, image_size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Each image's nuisance factors in a split, as ``generate(..., with_factors=True)`` gives.

    Drawn again rather than cached (a few seconds): only diagnostics read them.
    """
    _check_split(split)
    return generate(
        SPLIT_SIZES[split],
        image_size=image_size,
        seed=seed + _SPLIT_SEED_OFFSET[split],
        with_factors=True,
    )[2]


def _check_split(split: str) -> None:
    if split not in SPLIT_SIZES:
        raise ValueError(f"shapes has splits {sorted(SPLIT_SIZES)}, not {split!r}")


def load(split: str, image_size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [N, S, S, 3], labels int32 [N]) of a split, from the cache if there.

    Args:
      split: "train" (20,000 images) or "test" (4,000 images).
      image_size: side in pixels.
      seed: dataset seed; each split draws from its own stream of it.
    """
    _check_split(split)
    path = cache_dir() / f"shapes-v{_FORMAT_VERSION}-{split}-{image_size}px-seed{seed}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return f["images"], f["labels"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is regenerated below
    images, labels = generate(
        SPLIT_SIZES[split], image_size=image_size, seed=seed + _SPLIT_SEED_OFFSET[split]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so concurrent or interrupted runs never see a half-written file.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, images=images, labels=labels)
    os.replace(tmp.name, path)
    return images, labels
