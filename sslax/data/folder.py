"""Image folders in the ImageFolder convention: ``PATH/<split>/<class>/<image>``.

``dataset="folder:PATH"`` reads ``PATH/<train_split>`` and ``PATH/<eval_split>``. Classes are
the sorted subfolder names of the training split, labels their positions; an evaluation split
may hold a subset of them. Images are the files whose extension, in any case, is one of
:data:`sslax.data.images.IMAGE_EXTENSIONS`, found recursively under each class folder in sorted
order, so the index is the same on every host and every run. Other files are ignored.

Indexing a million files takes seconds; the result is cached under ``$SSLAX_CACHE`` (default
``~/.cache/sslax``) and reused while no folder of the split has changed (any file added,
removed or renamed changes its folder's modification time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import numpy as np

from sslax.data import images

PREFIX = "folder:"
_CACHE_VERSION = 1


class FolderError(ValueError):
    """A folder dataset that cannot be read: missing, empty, or with unknown classes."""


@dataclasses.dataclass(frozen=True)
class FolderSplit:
    """One split's files: ``paths[i]`` (bytes, relative to ``root``) has label ``labels[i]``."""

    root: str
    paths: np.ndarray  # bytes ('S') array, relative to root: compact to pickle to workers
    labels: np.ndarray  # int32
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> str:
        return os.path.join(self.root, os.fsdecode(self.paths[index]))


def _class_folders(split_dir: pathlib.Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and e.name[0] != ".")


def _walk(class_dir: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Image files under ``class_dir`` (sorted, recursive) and every folder's mtime."""
    files, stamps = [], []
    for folder, subfolders, names in os.walk(class_dir, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if d[0] != ".")
        stamps.append((folder, os.stat(folder).st_mtime_ns))
        files.extend(os.path.join(folder, n) for n in sorted(names) if images.is_image_file(n))
    return files, stamps


def _cache_file(split_dir: pathlib.Path) -> pathlib.Path:
    cache = pathlib.Path(os.environ.get("SSLAX_CACHE", "~/.cache/sslax")).expanduser()
    digest = hashlib.sha1(str(split_dir).encode()).hexdigest()[:16]
    return cache / "folders" / f"{digest}.npz"


def _load_cached(cache_file: pathlib.Path, split_dir: pathlib.Path):
    try:
        with np.load(cache_file, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            if meta["version"] != _CACHE_VERSION or meta["split_dir"] != str(split_dir):
                return None
            if any(os.stat(f).st_mtime_ns != t for f, t in meta["stamps"]):
                return None
            return saved["paths"], saved["labels"], tuple(meta["classes"])
    except (OSError, KeyError, ValueError):  # absent, unreadable, or a folder has gone
        return None


def _index(split_dir: pathlib.Path, classes: tuple[str, ...]):
    paths, labels = [], []
    stamps = [(str(split_dir), os.stat(split_dir).st_mtime_ns)]
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        files, folder_stamps = _walk(str(class_dir))
        stamps.extend(folder_stamps)
        paths.extend(os.fsencode(os.path.relpath(f, split_dir)) for f in files)
        labels.extend([label] * len(files))
    return np.array(paths, dtype=bytes), np.array(labels, np.int32), stamps


def index_split(
    root: str | os.PathLike, split: str, classes: tuple[str, ...] | None = None
) -> FolderSplit:
    """The files of ``root/split``; ``classes``: the training split's (None: this split's own).

    Raises FolderError, in one line, for a missing split, a split with no images, or class
    folders that are not among ``classes``.
    """
    root = pathlib.Path(root).expanduser().resolve()
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(e.name for e in os.scandir(root) if e.is_dir()) if root.is_dir() else None
        where = f"found {', '.join(found) or 'no split folders'}" if found is not None else ""
        raise FolderError(
            f"folder dataset {root}: no split folder {split!r}"
            + (f" ({where})" if where else " (the folder does not exist)")
        )
    own = tuple(_class_folders(split_dir))
    if classes is None:
        classes = own
    else:
        unknown = [c for c in own if c not in classes]
        if unknown:
            raise FolderError(
                f"folder dataset {root}: split {split!r} has {len(unknown)} class folder(s) that "
                f"the training split lacks: {', '.join(unknown[:5])}"
                + (" ..." if len(unknown) > 5 else "")
            )
    cache_file = _cache_file(split_dir)
    cached = _load_cached(cache_file, split_dir)
    if cached is not None and cached[2] == tuple(classes):
        paths, labels, _ = cached
    else:
        paths, labels, stamps = _index(split_dir, tuple(classes))
        meta = {
            "version": _CACHE_VERSION,
            "split_dir": str(split_dir),
            "classes": list(classes),
            "stamps": stamps,
        }
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, paths=paths, labels=labels, meta=np.array(json.dumps(meta)))
            os.replace(tmp, cache_file)
        except OSError:  # a read-only home: index again next time
            pass
    if len(paths) == 0:
        raise FolderError(
            f"folder dataset {root}: split {split!r} has no images (expected "
            f"{split}/<class>/<image> with extensions {', '.join(images.IMAGE_EXTENSIONS)})"
        )
    return FolderSplit(str(split_dir), paths, labels, tuple(classes))
