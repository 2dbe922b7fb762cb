"""Folders of small photos for the tests: ``ROOT/<split>/<class>/<file>``, any size and mode."""

import io
import pathlib

import numpy as np
from PIL import Image

from sslax.data import images


def coordinate_image(height: int, width: int) -> np.ndarray:
    """Red is the row and green the column, scaled to 0..255: a view shows where it came from."""
    rows = np.round(np.linspace(0, 255, height))[:, None].repeat(width, 1)
    cols = np.round(np.linspace(0, 255, width))[None, :].repeat(height, 0)
    return np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def photo(rng: np.random.Generator, label: int) -> bytes:
    """A JPEG of random size whose colour says its class, with noise: learnable, not trivial."""
    height, width = rng.integers(20, 70, 2)
    base = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 31 + 160) % 256])
    noise = rng.normal(0, 40, (height, width, 3))
    return images.encode_jpeg(np.clip(base + noise, 0, 255).astype(np.uint8))


def write(root: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    """Writes ``{"train/cat/a.jpg": bytes, ...}`` under root; returns root."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def folder(root: pathlib.Path, per_class: dict[str, int], classes=("ant", "bee", "cow"), seed=0):
    """A folder dataset with ``per_class[split]`` photos of each class in each split."""
    rng = np.random.default_rng(seed)
    files = {
        f"{split}/{name}/{i:03d}.jpg": photo(rng, label)
        for split, count in per_class.items()
        for label, name in enumerate(classes)
        for i in range(count)
    }
    return write(root, files)


# Files a three-day run meets: each must be skipped (and counted) or ignored, never fatal.
BAD_FILES = {
    "empty.jpg": b"",
    "truncated.jpg": images.encode_jpeg(np.full((64, 64, 3), 90, np.uint8))[:300],
    "text.png": b"not an image, whatever the extension says",
}
IGNORED_FILES = {"notes.txt": b"a label file", "meta.json": b"{}", "README": b"hello"}
