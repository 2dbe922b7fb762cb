"""Throughput of on-device SimCLR augmentation against a per-image PIL pipeline.

Both sides make the two SimCLR views (crop, flip, jitter, grayscale, blur) of uint8
images and count augmented views per second:

* ``sslax``: ``jax.jit``-ed :func:`sslax.augment.two_views` on a batch, timed with
  ``block_until_ready``, median over repeats after a warm-up call;
* ``PIL``: what a torchvision-style data loader does per image in Python, here with
  PIL and numpy only: RandomResizedCrop (torchvision's sampler, bilinear resize),
  horizontal flip, colour jitter in random order (``ImageEnhance`` and a hue shift in
  PIL's HSV mode, as torchvision does for PIL images), grayscale, Gaussian blur
  (``ImageFilter.GaussianBlur``, as the MoCo and DINO code bases do), then conversion to
  float32 in [0, 1]. One process; a data loader with w workers scales it by at most w.

Usage::

    python experiments/benchmarks/augment_bench.py [--sizes 32 224] [--repeats 10]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import time

import jax
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from sslax import augment

# Input side per output side: CIFAR is augmented at its own size; ImageNet-style
# pipelines crop from images decoded at about 256 px and up.
INPUT_SIDE = {32: 32, 96: 112, 224: 256}
DEFAULT_BATCH = {32: 512, 96: 256, 224: 64}


def crop_box(rng: random.Random, height: int, width: int) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params for scale (0.08, 1), ratio (3/4, 4/3)."""
    for _ in range(10):
        area = height * width * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def shift_hue(img: Image.Image, delta: float) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    h = Image.fromarray((np.asarray(h, np.int16) + int(delta * 255)).astype(np.uint8), "L")
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def pil_view(rng: random.Random, image: np.ndarray, size: int, strength: float) -> np.ndarray:
    """One SimCLR view of one (H, W, 3) uint8 image, the way a CPU loader makes it."""
    img = Image.fromarray(image)
    top, left, h, w = crop_box(rng, *image.shape[:2])
    img = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.8:
        s = 0.8 * strength
        ops = [
            lambda x: ImageEnhance.Brightness(x).enhance(rng.uniform(1 - s, 1 + s)),
            lambda x: ImageEnhance.Contrast(x).enhance(rng.uniform(1 - s, 1 + s)),
            lambda x: ImageEnhance.Color(x).enhance(rng.uniform(1 - s, 1 + s)),
            lambda x: shift_hue(x, rng.uniform(-0.2 * strength, 0.2 * strength)),
        ]
        rng.shuffle(ops)
        for op in ops:
            img = op(img)
    if rng.random() < 0.2:
        img = img.convert("L").convert("RGB")
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
    return np.asarray(img, np.float32) / 255.0


def time_pil(images: np.ndarray, size: int, repeats: int) -> float:
    """Median seconds to make both views of every image."""
    rng = random.Random(0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        first = [pil_view(rng, image, size, 1.0) for image in images]
        second = [pil_view(rng, image, size, 1.0) for image in images]
        np.stack(first + second)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_sslax(images: np.ndarray, size: int, repeats: int) -> float:
    """Median seconds of a jitted two_views call, after a compiling warm-up call."""
    recipe = augment.simclr_recipe(size)
    images = jax.device_put(images)
    key = jax.random.key(0)
    augment.two_views(key, images, recipe).block_until_ready()
    times = []
    for step in range(repeats):
        step_key = jax.random.fold_in(key, step)
        start = time.perf_counter()
        augment.two_views(step_key, images, recipe).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--pil-images", type=int, default=128, help="images per PIL repeat")
    args = parser.parse_args()

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    print("| output px | input px | sslax batch | sslax views/s | PIL views/s, 1 process | ratio |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        side = INPUT_SIDE.get(size, size)
        batch = DEFAULT_BATCH.get(size, 64)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
        sslax_rate = 2 * batch / time_sslax(images, size, args.repeats)
        pil_images = images[: args.pil_images]
        pil_rate = 2 * len(pil_images) / time_pil(pil_images, size, max(3, args.repeats // 3))
        print(
            f"| {size} | {side} | {batch} | {sslax_rate:,.0f} | {pil_rate:,.0f} | "
            f"{sslax_rate / pil_rate:.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
