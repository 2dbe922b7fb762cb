"""Pictures of what each augmentation recipe does: originals beside their views.

Writes one PNG per (image set, recipe) into ``--out``: a row per image, its original
first, then its views. The image sets are the built-in shapes dataset (random synthetic
images if :mod:`sslax.data.shapes` is unavailable) and, if any are given, the RGB image
files on the command line (centre-cropped to squares and resized to 256 px, augmented at
224 px like ImageNet). A strength sweep of the SimCLR recipe (:func:`with_strength` at
0, 0.5, 1 and 1.5) shows the InfoMin knob.

Usage::

    python experiments/augment_grid.py --out=/tmp/grid [photo1.jpg photo2.png ...]
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from sslax import augment  # noqa: E402

BUILTIN_SIZE = 64
FILE_SIZE, FILE_CROP = 256, 224


def builtin_images(count: int) -> tuple[str, np.ndarray]:
    """(name, (count, 64, 64, 3) uint8): shapes test images, or noise blobs without them."""
    try:
        from sslax.data import shapes
    except ImportError:
        rng = np.random.default_rng(0)
        coarse = rng.integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
        resize = Image.Resampling.BICUBIC
        images = [Image.fromarray(c).resize((BUILTIN_SIZE,) * 2, resize) for c in coarse]
        return "synthetic", np.stack([np.asarray(img) for img in images])
    images, _ = shapes.load("test", image_size=BUILTIN_SIZE)
    return "shapes", images[:count]


def file_images(paths: list[str]) -> np.ndarray:
    """(len(paths), 256, 256, 3) uint8: each file centre-cropped to a square and resized."""
    out = []
    for path in paths:
        img = Image.open(path).convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side))
        out.append(np.asarray(img.resize((FILE_SIZE,) * 2, Image.Resampling.BICUBIC)))
    return np.stack(out)


def recipes(size: int) -> dict[str, augment.Recipe]:
    local = max(8, round(size * 96 / 224))
    simclr = augment.simclr_recipe(size)
    out = {
        "simclr": simclr,
        "moco_v2": augment.moco_v2_recipe(size),
        "byol": augment.byol_recipe(size),
        "dino": augment.dino_multicrop_recipe(size, local, num_local=4),
    }
    for strength in (0.0, 0.5, 1.0, 1.5):
        out[f"simclr_strength_{strength:g}"] = augment.with_strength(simclr, strength)
    return out


def draw(path: pathlib.Path, title: str, images: np.ndarray, recipe: augment.Recipe) -> None:
    """One row per image: the original, then every view of the recipe in order."""
    groups = augment.multi_crop(jax.random.key(0), images, recipe)
    n = len(images)
    columns = [("original", images)]
    for size, group in zip(recipe.sizes, groups):  # group: (N, k, size, size, 3)
        for k in range(group.shape[1]):
            label = f"view {len(columns)} ({size}px)"
            columns.append((label, np.asarray(group[:, k])))
    fig, axes = plt.subplots(
        n, len(columns), figsize=(1.3 * len(columns), 1.3 * n + 0.5), squeeze=False
    )
    for col, (label, column) in enumerate(columns):
        for row in range(n):
            ax = axes[row, col]
            ax.imshow(column[row], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(label, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for the PNGs")
    parser.add_argument("--count", type=int, default=6, help="built-in images per grid")
    parser.add_argument("images", nargs="*", help="RGB image files to augment as well")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    name, images = builtin_images(args.count)
    sets = [(name, images, BUILTIN_SIZE)]
    if args.images:
        sets.append(("files", file_images(args.images), FILE_CROP))
    for set_name, set_images, size in sets:
        for recipe_name, recipe in recipes(size).items():
            path = out / f"{set_name}_{recipe_name}.png"
            title = f"{recipe_name} on {set_name} ({set_images.shape[1]}px in, {size}px views)"
            draw(path, title, set_images, recipe)
            print(path)


if __name__ == "__main__":
    main()
