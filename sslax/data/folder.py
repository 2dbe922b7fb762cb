"""Image folders in the ImageFolder convention: ``PATH/<split>/<class>/<image>``.

``dataset="folder:PATH"`` reads ``PATH/<train_split>`` and ``PATH/<eval_split>``. Classes are
the sorted subfolder names of the training split, labels their positions; an evaluation split
may hold a subset of them. Images are the files whose extension, in any case, is one of
:data:`sslax.data.images.IMAGE_EXTENSIONS`, found recursively under each class folder in sorted
order (a folder's files, then its subfolders), so the index is the same on every host and every
run. Other files, and folders whose name starts with a dot, are ignored.

PATH is a local folder or the URL of one on object storage, ``gs://BUCKET/imagenet`` (any
``SCHEME://`` that ``etils.epath`` serves: fsspec with gcsfs for ``gs://``; its credentials are
Google's Application Default Credentials, its emulator ``STORAGE_EMULATOR_HOST``). A store's
index and bytes are the same as those of the same tree on disk. The decoding workers read each
file with one GET (fsspec's ``cat_file``) from a filesystem instance of their own process, made
after any fork; a file that cannot be read, after gcsfs's retries, is skipped like an
undecodable one.

Indexing a million local files takes seconds; the result is cached under ``$SSLAX_CACHE``
(default ``~/.cache/sslax``) and reused while no folder of the split has changed (any file
added, removed or renamed changes its folder's modification time).

Object storage has no folders, hence no modification times, and the only sound check that
nothing changed is listing every object again, which is the indexing itself (ImageNet's
1.28 M objects: about 1,300 list requests, made 32 class folders at a time). A ``gs://`` index
is therefore cached on its URL (and emulator endpoint) and reused as it is: training data on a
bucket is written once, and a run resumed days later must see the same index. Each process
that reuses one says so in a line on stderr, with the time it was listed. The split's class
folders are listed at every start (one request), so a class folder added or removed is always
noticed and the split indexed again; ``SSLAX_REFRESH_INDEX=1`` lists every split again (local
ones too), as does deleting the cache. An object deleted since the listing is skipped like an
undecodable file; one added is not seen until the index is refreshed. Hosts that list a
changing bucket at different times can hold different indexes: refresh the index on every host
together, or keep a dataset's objects unchanged.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import posixpath
import re
import sys
import time

import numpy as np

from sslax.data import images

PREFIX = "folder:"
_CACHE_VERSION = 1
REFRESH_ENV = "SSLAX_REFRESH_INDEX"  # "1": list every split again, ignoring the cached index
# Class folders of a store listed at once: requests in flight on gcsfs's one event-loop thread.
_LISTING_THREADS = 32
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


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

    def read(self, index: int) -> bytes:
        """File ``index``'s bytes; OSError, whatever the store's error, when it cannot be read."""
        return read_bytes(self.path(index))


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names object storage (``gs://...``) rather than a local file."""
    return _URL.match(os.fspath(path)) is not None


def _filesystem(url: str):
    """The fsspec filesystem (gcsfs for ``gs://``) that ``etils.epath`` reads ``url`` with, and
    ``url`` as that filesystem names it (``BUCKET/...``).

    fsspec keeps one instance per process and makes a new one in a forked child, whereas
    epath's own cached instance raises "This class is not fork-safe" there.
    """
    import fsspec

    return fsspec.core.url_to_fs(url)


def read_bytes(path: str) -> bytes:
    """The bytes of a local file or a stored object (one GET); OSError if it cannot be read."""
    if not is_url(path):
        with open(path, "rb") as f:
            return f.read()
    try:
        fs, name = _filesystem(path)
        return fs.cat_file(name)
    except OSError:
        raise
    except Exception as e:  # gcsfs's HttpError, aiohttp's and google-auth's errors
        raise OSError(f"{path}: {type(e).__name__}: {e}") from e


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


def _url_folders(fs, path: str) -> list[str] | None:
    """The sorted subfolder names of ``path`` (as ``fs`` names it, listed afresh); None if
    nothing is stored under it."""
    try:
        entries = fs.ls(path, detail=True, refresh=True)
    except FileNotFoundError:
        return None
    path = path.rstrip("/")
    names = (e["name"].rstrip("/") for e in entries if e["type"] == "directory")
    return sorted(posixpath.basename(n) for n in names if n != path)


def _url_walk(fs, class_dir: str) -> list[str]:
    """The image files under ``class_dir`` (as ``fs`` names it), relative to it, in the order
    of :func:`_walk`.

    One recursive listing (pages of 1,000 objects), not one request per subfolder.
    """
    # gcsfs would keep every object's entry in its listings cache: GBs for ImageNet.
    options = {"update_cache": False} if "gs" in fs.protocol else {}
    prefix = class_dir.rstrip("/") + "/"
    files = []
    for name in fs.find(class_dir, detail=True, **options):
        parts = name[len(prefix) :].split("/")
        if (
            name.startswith(prefix)
            and images.is_image_file(parts[-1])
            and not any(p[:1] == "." for p in parts[:-1])
        ):
            files.append(parts)
    # os.walk's order: a folder's files (sorted), then each subfolder's (in sorted order).
    files.sort(key=lambda parts: [(1, p) for p in parts[:-1]] + [(0, parts[-1])])
    return ["/".join(parts) for parts in files]


def _url_index(fs, split_dir: str, classes: tuple[str, ...], present: list[str]):
    label_of = {name: label for label, name in enumerate(classes)}
    present = [name for name in present if name in label_of]
    paths, labels = [], []
    with concurrent.futures.ThreadPoolExecutor(min(_LISTING_THREADS, len(present) or 1)) as pool:
        listings = pool.map(lambda name: _url_walk(fs, f"{split_dir}/{name}"), present)
        for name, files in zip(present, listings):
            paths.extend(f"{name}/{f}".encode() for f in files)
            labels.extend([label_of[name]] * len(files))
    return np.array(paths, dtype=bytes), np.array(labels, np.int32)


def _cache_file(split_dir: pathlib.Path | str) -> pathlib.Path:
    cache = pathlib.Path(os.environ.get("SSLAX_CACHE", "~/.cache/sslax")).expanduser()
    key = str(split_dir)
    if is_url(key):  # the same URL on another endpoint (an emulator) is another folder
        key += " " + os.environ.get("STORAGE_EMULATOR_HOST", "")
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache / "folders" / f"{digest}.npz"


def _load_cached(cache_file: pathlib.Path, split_dir: pathlib.Path | str, folders: list[str]):
    """The cached (paths, labels, classes, meta) of ``split_dir``, if still valid, else None."""
    if os.environ.get(REFRESH_ENV, "") not in ("", "0"):
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            if meta["version"] != _CACHE_VERSION or meta["split_dir"] != str(split_dir):
                return None
            if meta.get("folders", folders) != folders:  # a class folder added or removed
                return None
            if any(os.stat(f).st_mtime_ns != t for f, t in meta["stamps"]):
                return None
            return saved["paths"], saved["labels"], tuple(meta["classes"]), meta
    except (OSError, KeyError, ValueError):  # absent, unreadable, or a folder has gone
        return None


def _save_cached(cache_file: pathlib.Path, paths, labels, meta) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, paths=paths, labels=labels, meta=np.array(json.dumps(meta)))
        os.replace(tmp, cache_file)
    except OSError:  # a read-only home: index again next time
        pass


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
    folders that are not among ``classes``; on a store, also for one that cannot be listed.
    """
    if is_url(root):
        return _index_url_split(os.fspath(root).rstrip("/"), split, classes)
    root = pathlib.Path(root).expanduser().resolve()
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(e.name for e in os.scandir(root) if e.is_dir()) if root.is_dir() else None
        where = f"found {', '.join(found) or 'no split folders'}" if found is not None else ""
        raise FolderError(
            f"folder dataset {root}: no split folder {split!r}"
            + (f" ({where})" if where else " (the folder does not exist)")
        )
    own = _class_folders(split_dir)
    classes = _check_classes(root, split, own, classes)
    cache_file = _cache_file(split_dir)
    cached = _load_cached(cache_file, split_dir, own)
    if cached is not None and cached[2] == classes:
        paths, labels = cached[:2]
    else:
        paths, labels, stamps = _index(split_dir, classes)
        meta = {
            "version": _CACHE_VERSION,
            "split_dir": str(split_dir),
            "classes": list(classes),
            "folders": own,
            "stamps": stamps,
        }
        _save_cached(cache_file, paths, labels, meta)
    return _split(root, split, str(split_dir), paths, labels, classes)


def _check_classes(root, split: str, own: list[str], classes) -> tuple[str, ...]:
    if classes is None:
        return tuple(own)
    unknown = [c for c in own if c not in classes]
    if unknown:
        raise FolderError(
            f"folder dataset {root}: split {split!r} has {len(unknown)} class folder(s) that "
            f"the training split lacks: {', '.join(unknown[:5])}"
            + (" ..." if len(unknown) > 5 else "")
        )
    return tuple(classes)


def _split(root, split: str, split_dir: str, paths, labels, classes) -> FolderSplit:
    if len(paths) == 0:
        raise FolderError(
            f"folder dataset {root}: split {split!r} has no images (expected "
            f"{split}/<class>/<image> with extensions {', '.join(images.IMAGE_EXTENSIONS)})"
        )
    return FolderSplit(split_dir, paths, labels, classes)


def _index_url_split(root: str, split: str, classes: tuple[str, ...] | None) -> FolderSplit:
    """:func:`index_split` of a folder on object storage (see the module's docstring)."""
    split_dir = f"{root}/{split}"
    try:
        fs, root_path = _filesystem(root)
        own = _url_folders(fs, f"{root_path}/{split}")
        found = _url_folders(fs, root_path) if own is None else None
    except Exception as e:  # no such protocol, credentials, permissions, the network
        raise _cannot_list(root, split_dir, e) from e
    if own is None:
        where = f"found {', '.join(found) or 'no split folders'}" if found is not None else ""
        raise FolderError(
            f"folder dataset {root}: no split folder {split!r}"
            + (f" ({where})" if where else " (the folder does not exist)")
        )
    own = [name for name in own if name[0] != "."]
    classes = _check_classes(root, split, own, classes)
    cache_file = _cache_file(split_dir)
    cached = _load_cached(cache_file, split_dir, own)
    if cached is not None and cached[2] == classes:
        paths, labels, _, meta = cached
        listed = meta.get("listed")
        when = time.strftime(", listed %Y-%m-%d %H:%M UTC", time.gmtime(listed)) if listed else ""
        print(
            f"sslax: {split_dir}: reusing its index of {len(paths)} images{when}; "
            f"{REFRESH_ENV}=1 lists it again",
            file=sys.stderr,
        )
    else:
        listed = time.time()  # when the listing began: objects added later may be missing
        try:
            paths, labels = _url_index(fs, f"{root_path}/{split}", classes, own)
        except Exception as e:
            raise _cannot_list(root, split_dir, e) from e
        meta = {
            "version": _CACHE_VERSION,
            "split_dir": split_dir,
            "classes": list(classes),
            "folders": own,
            "stamps": [],  # no modification times: valid until refreshed
            "listed": listed,
        }
        _save_cached(cache_file, paths, labels, meta)
    return _split(root, split, split_dir, paths, labels, classes)


def _cannot_list(root: str, split_dir: str, e: Exception) -> FolderError:
    why = " ".join(str(e).split())[:300]
    return FolderError(
        f"folder dataset {root}: cannot list {split_dir} ({type(e).__name__}: {why})"
    )
