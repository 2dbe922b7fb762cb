"""Input pipelines: the built-in dataset, image folders and TFDS datasets, served through grain.

Dataset names: ``"shapes"`` (built in, see :mod:`sslax.data.shapes`), ``"folder:PATH"`` (the
ImageFolder convention ``PATH/<split>/<class>/<image>``, see :mod:`sslax.data.folder`), or
``"tfds:NAME"`` for any prepared TFDS image dataset (``tfds:cifar10``, ``tfds:imagenet2012``...),
read with ``tfds.data_source`` from ArrayRecord files: no TensorFlow needed to read. A folder's
PATH and a TFDS ``data_dir`` may be on object storage, ``gs://BUCKET/...`` (see
:mod:`sslax.data.folder` and :func:`check_tfds_data_dir`).

Training batches are addressed by step: the global batch of step t holds examples
``t*B .. t*B+B-1`` of a seeded, per-epoch reshuffled order, and process p of P reads only its
contiguous slice of that batch. A batch is therefore a pure function of (seed, step), whatever
the number of processes or decoding workers, and resuming at step t needs no iterator state.

Two kinds of source:

* Fixed-size images (the built-in dataset, CIFAR-like TFDS sets) go to the device as uint8
  ``"image"`` [L, S, S, 3] and are cropped and augmented there (:mod:`sslax.augment`).
* Photos of every size (folders, TFDS sets whose image shape is unknown, such as
  ``imagenet2012``) are decoded once per example on the host, which cuts every view's random
  resized crop from the original image (:class:`sslax.data.images.TrainCrops`) and sends
  ``"crops_<S>"`` uint8 [L, k, S, S, 3]; the device flips, colours, blurs and solarizes them.
  Decoding runs in ``workers`` grain worker processes. A file that does not decode is
  replaced by the next record that does (deterministically), counted in the batch's
  ``"skipped"`` and named in its ``"bad_files"``, which :func:`warn_bad_files` reports once
  per file in the training process. Evaluation images are resized and centre-cropped
  (:class:`sslax.data.images.EvalImage`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import sys
from typing import Any, Callable, Iterator, Sequence

import grain
import numpy as np

from sslax.data import folder, images, shapes

BUILTIN = "shapes"
TFDS_PREFIX = "tfds:"
FOLDER_PREFIX = folder.PREFIX
# Fields of a training batch that stay on the host: the device gets the images and indices.
HOST_FIELDS = ("label", "skipped", "bad_files")
# A record that does not decode is replaced by the next one; this many failing in a row means
# the data, not a file, is broken.
MAX_CONSECUTIVE_BAD = 64
# Object-storage reads in flight per batch-making process: a GET costs tens of milliseconds of
# latency and little CPU, so they overlap.
FETCH_THREADS = 32


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


class EncodedImages:
    """Photos of every size, as encoded bytes: a folder split or a TFDS split read undecoded.

    ``record(i)`` is record i's (file bytes, label) and ``describe(i)`` how a warning names it.
    Indexing it (``source[i]``) gives the evaluation form, ``{"image": uint8 [S, S, 3],
    "label": int32}``, with a bad record replaced.
    """

    variable_size = True

    def __init__(
        self,
        name: str,
        size: int,
        reader,
        eval_image: images.EvalImage,
        classes: tuple[str, ...] | None = None,
    ):
        self.name, self._size, self._reader = name, size, reader
        self.eval_image, self.classes = eval_image, classes

    def __len__(self) -> int:
        return self._size

    def record(self, index: int) -> tuple[bytes, int]:
        return self._reader.record(index)

    def records(self, indices) -> dict[int, tuple[bytes, int]]:
        """Records ``indices`` fetched together where each read is a request to object storage
        (up to ``FETCH_THREADS`` at once, where one at a time would wait out each request's
        latency); ``{}`` for local files, read one by one as they are decoded."""
        if not getattr(self._reader, "remote", False):
            return {}
        indices = list(dict.fromkeys(int(i) for i in indices))
        with concurrent.futures.ThreadPoolExecutor(min(FETCH_THREADS, len(indices))) as pool:
            return dict(zip(indices, pool.map(self._reader.record, indices)))

    def describe(self, index: int) -> str:
        return self._reader.describe(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label, bad = decode_or_replace(self, int(index), self.eval_image)
        return {"image": image, "label": np.int32(label), "bad_files": np.str_("\n".join(bad))}


@dataclasses.dataclass(frozen=True)
class _FolderReader:
    """Picklable (for worker processes): record i of a folder split."""

    split: folder.FolderSplit

    @property
    def remote(self) -> bool:
        return folder.is_url(self.split.root)

    def record(self, index: int) -> tuple[bytes, int]:
        try:
            data = self.split.read(index)  # a local file, or an object on gs:// (one GET)
        except OSError:  # unreadable: handled as a bad image (skipped and counted)
            data = b""
        return data, int(self.split.labels[index])

    def describe(self, index: int) -> str:
        return self.split.path(index)


def decode_or_replace(
    source: EncodedImages, index: int, decode: Callable[[bytes], Any], fetched=None
):
    """``decode`` of the bytes of the first record of index, index + 1, ... that decodes.

    Returns (decoded, label of the record used, ``FILE<tab>why`` of each record skipped). The
    replacement depends only on the index; a run of bad records this long is an error.
    ``fetched``: records already read (:meth:`EncodedImages.records`), by index.
    """
    n = len(source)
    bad = []
    for skipped in range(min(MAX_CONSECUTIVE_BAD, n)):
        record = (index + skipped) % n
        data, label = fetched[record] if fetched and record in fetched else source.record(record)
        try:
            return decode(data), label, bad
        except images.DecodeError as e:
            bad.append(f"{source.describe(record)}\t{e}")
    raise DatasetError(
        f"{source.name}: {min(MAX_CONSECUTIVE_BAD, n)} records in a row from record {index} "
        "do not decode as images"
    )


_warned: set[str] = set()


def warn_bad_files(bad_files: np.ndarray) -> None:
    """One warning line on stderr per undecodable file, the first time this process sees it.

    ``bad_files``: a batch's per-example strings of ``FILE<tab>why`` lines (empty: none).
    """
    for lines in bad_files:
        for line in str(lines).splitlines():
            name, why = line.split("\t", 1)
            if name not in _warned:
                _warned.add(name)
                print(
                    f"warning: skipping {name}: {why} (replaced by the next image)", file=sys.stderr
                )
    sys.stderr.flush()


@dataclasses.dataclass(frozen=True)
class _TfdsReader:
    """Picklable (for worker processes): record i of a TFDS split, its image undecoded."""

    source: Any
    name: str

    def record(self, index: int) -> tuple[bytes, int]:
        record = self.source[index]
        return record["image"], int(record["label"])

    def describe(self, index: int) -> str:
        return f"{self.name} record {index}"


def _tfds_encoded(name: str, split: str, data_dir, eval_image) -> EncodedImages:
    import tensorflow_datasets as tfds

    undecoded = tfds.data_source(
        name[len(TFDS_PREFIX) :],
        split=split,
        data_dir=data_dir,
        download=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    reader = _TfdsReader(undecoded, f"{name}[{split}]")
    return EncodedImages(name, len(undecoded), reader, eval_image)


# The first array_record whose reader opens gs:// paths (riegeli's GcsReader); older ones open
# local files only.
ARRAY_RECORD_READS_GCS = (0, 8, 3)


def check_tfds_data_dir(data_dir: str | None) -> None:
    """Raises DatasetError, in one line, where TFDS's records in a gs:// data_dir cannot be read.

    TFDS reads a ``gs://`` data_dir's metadata through etils.epath (gcsfs; without TensorFlow)
    and the records with array_record's C++ reader, which opens ``gs://`` (from 0.8.3) with
    Google's C++ storage client. That client takes Application Default Credentials only (no
    anonymous fallback, unlike gcsfs), retries a missing metadata server for 15 minutes
    rather than failing, and finds an emulator through ``CLOUD_STORAGE_EMULATOR_ENDPOINT``,
    not gcsfs's ``STORAGE_EMULATOR_HOST``. These are checked here, before any record is read.
    """
    where = data_dir or os.environ.get("TFDS_DATA_DIR", "")
    if not where.startswith("gs://"):
        return
    import re
    from importlib import metadata

    version = metadata.version("array_record")
    if tuple(int(part) for part in re.findall(r"\d+", version)[:3]) < ARRAY_RECORD_READS_GCS:
        raise DatasetError(
            f"TFDS data_dir {where}: array_record {version} reads ArrayRecord files from local "
            "disk only; gs:// needs array_record>="
            + ".".join(map(str, ARRAY_RECORD_READS_GCS))
            + " (pip install -U array_record), or copy the dataset to a local data_dir"
        )
    if os.environ.get("CLOUD_STORAGE_EMULATOR_ENDPOINT"):
        return
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        raise DatasetError(
            f"TFDS data_dir {where}: STORAGE_EMULATOR_HOST points gcsfs (TFDS's metadata) at "
            f"{os.environ['STORAGE_EMULATOR_HOST']}, but array_record's GCS client (the records) "
            "reads CLOUD_STORAGE_EMULATOR_ENDPOINT, which is not set: set it to the same endpoint"
        )
    import warnings

    import google.auth
    import google.auth.exceptions

    try:
        with warnings.catch_warnings():  # user credentials without a quota project: fine here
            warnings.simplefilter("ignore")
            google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError as e:
        why = " ".join(str(e).split())[:200]
        raise DatasetError(
            f"TFDS data_dir {where}: array_record reads gs:// records with Google's C++ storage "
            f"client, which needs Application Default Credentials and finds none ({why}); run "
            "`gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS, or run "
            "on a Google Cloud VM (without credentials it would retry for 15 minutes)"
        ) from None


def check_dataset_name(name: str) -> None:
    """Raises DatasetError for a name that cannot refer to any dataset. Loads nothing."""
    if name == BUILTIN:
        return
    if name.startswith(FOLDER_PREFIX) and name[len(FOLDER_PREFIX) :]:
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
        f"unknown dataset {name!r}; use {BUILTIN!r} (built in), 'folder:PATH' (PATH/<split>/"
        "<class>/<image>) or 'tfds:NAME' (e.g. tfds:cifar10)"
    )


@functools.lru_cache(maxsize=16)
def has_variable_size(name: str, data_dir: str | None = None) -> bool:
    """Whether dataset ``name`` holds photos of every size, whose crops the host cuts.

    Folders always; a TFDS dataset when its image feature has no fixed height or width (read
    from the builder's code, so no data is needed: a plan compiles without it).
    """
    check_dataset_name(name)
    if name.startswith(FOLDER_PREFIX):
        return True
    if not name.startswith(TFDS_PREFIX):
        return False
    import tensorflow_datasets as tfds

    shape = tfds.builder(name[len(TFDS_PREFIX) :], data_dir=data_dir).info.features["image"].shape
    return shape is not None and (shape[0] is None or shape[1] is None)


def get_source(
    name: str,
    split: str,
    *,
    image_size: int,
    data_dir: str | None = None,
    crop_fraction: float = 0.875,
    classes: tuple[str, ...] | None = None,
    dct_downscale: bool = True,
):
    """A grain random-access source of split ``split`` of dataset ``name``.

    Fixed-size data gives ``{"image": uint8 [S, S, 3], "label": int32}`` records. Photos of
    every size give an :class:`EncodedImages` (``variable_size``), whose records are cropped for
    training by :func:`train_batches` and evaluated as ``crop_fraction`` centre crops.
    ``classes``: a folder's training classes, when ``split`` is an evaluation split;
    ``dct_downscale``: JPEGs of photos may be decoded at 1/2 to 1/8 scale for evaluation.
    """
    check_dataset_name(name)
    if name == BUILTIN:
        return ArraySource(*shapes.load(split, image_size=image_size))
    eval_image = images.EvalImage(image_size, crop_fraction, dct_downscale)
    if name.startswith(FOLDER_PREFIX):
        try:
            files = folder.index_split(name[len(FOLDER_PREFIX) :], split, classes)
        except folder.FolderError as e:
            raise DatasetError(str(e)) from None
        return EncodedImages(name, len(files), _FolderReader(files), eval_image, files.classes)
    import tensorflow_datasets as tfds

    tfds_name = name[len(TFDS_PREFIX) :]
    check_tfds_data_dir(data_dir)
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
    if has_variable_size(name, data_dir):
        return _tfds_encoded(name, split, data_dir, eval_image)
    return _FixedSizeImages(source, name, image_size)


def example_order(source, seed: int):
    """``order[i]``: the record of the run's example ``i``, a seeded shuffle per epoch.

    Fixed-size data keeps grain's index shuffle, whose every lookup is a small computation.
    Photos, where lookups run at thousands per second per host, take each epoch's
    permutation from numpy's Philox keyed by (seed, epoch), drawn once per epoch and process
    (1.3 M records: about 50 ms and 10 MB), then looked up for free.
    """
    if getattr(source, "variable_size", False):
        return _EpochPermutations(len(source), seed)
    return grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat()


class _EpochPermutations:
    def __init__(self, num_records: int, seed: int):
        self._n, self._seed = num_records, seed
        # The last two epochs' permutations: a batch may straddle two epochs, and the threads
        # of one process may be on either side of the boundary (dict reads and writes are
        # atomic, so no thread sees a half-made entry).
        self._epochs: dict[int, np.ndarray] = {}

    def __getitem__(self, example: int) -> int:
        epoch, position = divmod(int(example), self._n)
        permutation = self._epochs.get(epoch)
        if permutation is None:
            key = np.array([self._seed, epoch], np.uint64)
            permutation = np.random.Generator(np.random.Philox(key=key)).permutation(self._n)
            self._epochs = {e: p for e, p in self._epochs.items() if e == epoch - 1}
            self._epochs[epoch] = permutation
        return int(permutation[position])


@dataclasses.dataclass
class _LocalBatch:
    """Step -> this process's rows of that step's global batch (picklable for workers)."""

    source: Any
    rows: np.ndarray
    global_batch_size: int
    seed: int
    crops: images.TrainCrops | None

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        if not hasattr(self, "_order"):  # built where it runs, in the worker process
            self._order = example_order(self.source, self.seed)
        indices = step * self.global_batch_size + self.rows
        if self.crops is None:
            records = [self.source[self._order[int(i)]] for i in indices]
            return {
                "image": np.stack([r["image"] for r in records]),
                "label": np.array([r["label"] for r in records], np.int32),
                "index": indices.astype(np.int32),
            }
        # Crops go straight into the batch. (Allocating it in grain's shared memory would save
        # grain's copy, but the batches a worker holds when stopped would then leak.)
        shapes = self.crops.shapes().items()
        batch = {key: np.empty((len(indices), *shape), np.uint8) for key, shape in shapes}
        labels, bad = [], []
        fetched = self.source.records([self._order[int(i)] for i in indices])
        for row, i in enumerate(indices):
            slots = {key: batch[key][row] for key, _ in shapes}
            _, label, bad_files = decode_or_replace(
                self.source,
                self._order[int(i)],
                lambda data: self.crops.write(data, int(i), slots),
                fetched,
            )
            labels.append(label)
            bad.append(bad_files)
        batch.update(
            label=np.array(labels, np.int32),
            index=indices.astype(np.int32),
            skipped=np.array([len(b) for b in bad], np.int32),
            bad_files=np.array(["\n".join(b) for b in bad], dtype=str),
        )
        return batch


def _in_processes(dataset: grain.IterDataset, workers: int) -> grain.IterDataset:
    """``dataset`` computed in ``workers`` grain processes, each a slice of its elements."""
    from absl import flags

    # grain reads absl flags when it starts workers; a library caller may not have parsed any.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    # The workers hand batches over in shared memory, freed when the last array using it is.
    return dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))


def close(iterator) -> None:
    """Stops ``iterator``'s worker processes and frees its shared memory before returning.

    grain frees a batch's shared memory in a background thread pool; waiting for it here
    keeps a process that ends soon after from leaving segments behind (and Python's
    resource_tracker from warning about them).
    """
    if hasattr(iterator, "close"):
        iterator.close()
    try:
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray
    except ImportError:  # another grain layout: its own clean-up at exit applies
        return
    pool = getattr(SharedMemoryArray, "_del_thread_pool", None)
    if pool is not None:
        SharedMemoryArray._del_thread_pool = None  # grain makes a new one when it needs one
        pool.close()
        pool.join()


def workers_for(source, data_workers: int) -> int:
    """Decoding worker processes for ``source``: ``data_workers``, or for -1 (from the machine)
    the cores this process may use less one for the training process, when the source decodes
    photos, and none for in-memory arrays."""
    if data_workers >= 0:
        return data_workers
    if not getattr(source, "variable_size", False):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)


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
    crops: images.TrainCrops | None = None,
    workers: int = 0,
    num_threads: int | None = None,
    prefetch: int = 4,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of the global training batches for steps [start_step, end_step).

    The process reads ``rows`` of every global batch (positions in ``0..B-1``, as
    :func:`sslax.parallel.local_batch_rows` gives them for its devices) or, without ``rows``,
    the contiguous slice ``p*L .. p*L+L-1``, L = B / P, of process p of P.

    Yields dicts with "label" int32 [L] and "index" int32 [L], the global example index
    t*B + row that seeds each example's augmentation, and the images: "image" uint8
    [L, S, S, 3] for a fixed-size source, or, for a ``variable_size`` source (which needs
    ``crops``), "crops_<S>" uint8 [L, k, S, S, 3] per view size, "skipped" int32 [L] (records
    skipped as undecodable before each example's image) and "bad_files" str [L] (their
    ``FILE<tab>why`` lines, for :func:`warn_bad_files`).

    ``workers`` > 0 builds batches in that many grain worker processes, each making whole
    batches one at a time (``num_threads``, default 1: a process per core, as PyTorch's
    DataLoader workers); 0 builds them in ``num_threads`` (default 2) threads of this process.
    The batches are the same.
    """
    if num_threads is None:
        num_threads = 1 if workers > 0 else 2
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
    variable = getattr(source, "variable_size", False)
    if variable and crops is None:
        raise ValueError("a source of variable-size images needs crops (images.TrainCrops)")
    local_batch = _LocalBatch(source, rows, global_batch_size, seed, crops if variable else None)
    steps = grain.MapDataset.range(start_step, end_step).map(local_batch)
    batches = steps.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    )
    if workers > 0:
        batches = _in_processes(batches, workers)
    return iter(batches)


def split_arrays(
    source, *, max_examples: int | None = None, batch_size: int = 256, workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``max_examples`` records of a split, in order, as (images, labels) arrays.

    Photos of every size come resized and centre-cropped (``source.eval_image``), decoded in
    ``workers`` processes (0: threads of this one).
    """
    if isinstance(source, ArraySource):
        return source.images[:max_examples], source.labels[:max_examples]
    n = len(source) if max_examples is None else min(max_examples, len(source))
    batches = grain.MapDataset.source(source).slice(slice(0, n)).batch(batch_size)
    batches = batches.to_iter_dataset(grain.ReadOptions(num_threads=4))
    if workers > 0:
        batches = _in_processes(batches, workers)
    images_, labels = [], []
    iterator = iter(batches)
    for batch in iterator:
        images_.append(batch["image"])
        labels.append(batch["label"])
        if "bad_files" in batch:
            warn_bad_files(batch["bad_files"])
    close(iterator)
    return np.concatenate(images_), np.concatenate(labels)
