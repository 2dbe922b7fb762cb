"""Input pipelines: the built-in dataset and TFDS ArrayRecord datasets, served through grain.

Dataset names: ``"shapes"`` (built in, see :mod:`sslax.data.shapes`) or ``"tfds:NAME"`` for
any prepared TFDS image dataset (``tfds:cifar10``, ``tfds:stl10``, ``tfds:imagenet2012``...),
read with ``tfds.data_source`` from ArrayRecord files: no TensorFlow needed to read.

Training batches are addressed by step: the global batch of step t holds examples
``t*B .. t*B+B-1`` of a seeded, per-epoch reshuffled order, and process p of P reads only its
contiguous slice of that batch. A batch is therefore a pure function of (seed, step), whatever
the number of processes, and resuming at step t needs no iterator state.

Images go to the device as uint8 and are augmented there (:mod:`sslax.augment`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Sequence

import grain
import numpy as np

from sslax.data import shapes

BUILTIN = "shapes"
TFDS_PREFIX = "tfds:"


class DatasetError(ValueError):
    """A dataset that is unknown, unprepared, or holds records of the wrong form."""


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """A grain random-access source over in-memory arrays."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "label": self.labels[index]}


class _FixedSizeImages:
    """Wraps a TFDS source so every record is a uint8 [S, S, 3] image and an int label.

    Records of another size are resized on the shorter side and centre-cropped (the random crop
    happens later, on the device); grayscale records are repeated to three channels. Anything
    else is refused with the dataset name and record index, rather than failing deep inside jit.
    """

    def __init__(self, source, name: str, image_size: int):
        self._source, self._name, self._size = source, name, image_size

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self._source[index]
        image = np.asarray(record.get("image") if isinstance(record, dict) else None)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
            raise DatasetError(
                f"{self._name}: record {index} has image of shape {image.shape} and dtype "
                f"{image.dtype}; expected uint8 [H, W, 1 or 3]"
            )
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        if image.shape[:2] != (self._size, self._size):
            image = _resize_centre_crop(image, self._size)
        return {"image": image, "label": np.int32(record["label"])}


def _resize_centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image  # only needed for datasets whose images are not already `size` px

    h, w = image.shape[:2]
    scale = size / min(h, w)
    resized = Image.fromarray(image).resize(
        (max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC
    )
    top, left = (resized.height - size) // 2, (resized.width - size) // 2
    return np.asarray(resized)[top : top + size, left : left + size]


def check_dataset_name(name: str) -> None:
    """Raises DatasetError for a name that cannot refer to any dataset. Loads nothing."""
    if name == BUILTIN:
        return
    if name.startswith(TFDS_PREFIX) and name[len(TFDS_PREFIX) :]:
        import tensorflow_datasets as tfds

        builder = name[len(TFDS_PREFIX) :].split("/")[0].split(":")[0]
        try:
            tfds.builder_cls(builder)
        except tfds.core.registered.DatasetNotFoundError:
            raise DatasetError(f"unknown TFDS dataset {builder!r} in dataset={name!r}") from None
        return
    raise DatasetError(
        f"unknown dataset {name!r}; use {BUILTIN!r} (built in) or 'tfds:NAME' (e.g. tfds:cifar10)"
    )


def get_source(name: str, split: str, *, image_size: int, data_dir: str | None = None):
    """A grain random-access source of {"image": uint8 [S, S, 3], "label": int32} records."""
    check_dataset_name(name)
    if name == BUILTIN:
        return ArraySource(*shapes.load(split, image_size=image_size))
    import tensorflow_datasets as tfds

    tfds_name = name[len(TFDS_PREFIX) :]
    try:
        source = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for "not prepared"; all mean the same here
        where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
        raise DatasetError(
            f"TFDS dataset {tfds_name!r} (split {split!r}) is not prepared as ArrayRecord in "
            f"{where} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Prepare it "
            f"once, in any environment with TensorFlow: `tfds build {tfds_name} "
            f"--file_format=array_record --data_dir={where}`"
        ) from e
    return _FixedSizeImages(source, name, image_size)


def train_batches(
    source,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int,
    end_step: int,
    process_index: int = 0,
    process_count: int = 1,
    rows: Sequence[int] | None = None,
    num_threads: int = 2,
    prefetch: int = 4,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of the global training batches for steps [start_step, end_step).

    The process reads ``rows`` of every global batch (positions in ``0..B-1``, as
    :func:`sslax.parallel.local_batch_rows` gives them for its devices) or, without ``rows``,
    the contiguous slice ``p*L .. p*L+L-1``, L = B / P, of process p of P.

    Yields dicts with "image" uint8 [L, S, S, 3], "label" int32 [L] and "index" int32 [L], the
    global example index t*B + row that seeds each example's augmentation.
    """
    if rows is None:
        if global_batch_size % process_count:
            raise ValueError(
                f"global batch {global_batch_size} does not divide by {process_count} processes"
            )
        local = global_batch_size // process_count
        rows = np.arange(process_index * local, (process_index + 1) * local)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or (rows < 0).any() or (rows >= global_batch_size).any():
        raise ValueError(f"rows must be positions in a batch of {global_batch_size}, got {rows}")
    examples = grain.MapDataset.source(source).seed(seed).shuffle().repeat()

    def local_batch(step: int) -> dict[str, np.ndarray]:
        indices = step * global_batch_size + rows
        records = [examples[int(i)] for i in indices]
        return {
            "image": np.stack([r["image"] for r in records]),
            "label": np.array([r["label"] for r in records], np.int32),
            "index": indices.astype(np.int32),
        }

    steps = grain.MapDataset.range(start_step, end_step).map(local_batch)
    return iter(
        steps.to_iter_dataset(
            grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
        )
    )


def split_arrays(
    source, *, max_examples: int | None = None, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``max_examples`` records of a split, in order, as (images, labels) arrays."""
    if isinstance(source, ArraySource):
        return source.images[:max_examples], source.labels[:max_examples]
    n = len(source) if max_examples is None else min(max_examples, len(source))
    batches = grain.MapDataset.source(source).slice(slice(0, n)).batch(batch_size)
    images, labels = [], []
    for batch in batches.to_iter_dataset(grain.ReadOptions(num_threads=4)):
        images.append(batch["image"])
        labels.append(batch["label"])
    return np.concatenate(images), np.concatenate(labels)
