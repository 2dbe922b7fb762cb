"""Workdirs on a local disk or on object storage (``gs://BUCKET/PATH``), through one path type.

Every file a run, ``sslax.eval``, ``sslax.plan`` or the preview writes or reads goes through
:func:`resolve`, an ``etils.epath.Path``: a local folder is an ordinary path, ``gs://`` goes
through gcsfs (orbax writes its checkpoints there with tensorstore). Object storage differs from
a disk in three ways that matter here, and this module absorbs them:

- An object cannot be appended to, and every write is a whole upload. Files that grow during a
  run (``metrics.jsonl``, TensorBoard events, profiler traces) are written to a local staging
  folder and copied up by :class:`Mirror`: in a background thread, at most every
  ``sync_every_s`` seconds and when the run saves or ends.
- Writes fail transiently. A failed copy is retried at the next sync (the staging folder keeps
  everything), so a flaky bucket delays the logs but never fails a step or loses a checkpoint;
  orbax's checkpoint writes have tensorstore's own retries. A one-off write (``config.json``,
  ``results.json``, ``eval.json``, ``curves.png``, ``plan.json``) is retried
  ``WRITE_ATTEMPTS`` times with backoff (:func:`write_bytes`) before it raises.
- There are no directories: ``mkdir`` is a no-op there and a folder exists once it holds a file.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time

from etils import epath

WRITE_ATTEMPTS = 4  # one-off writes: tries before giving up (1 + 2 + 4 s of backoff)


def is_remote(path) -> bool:
    """Whether ``path`` names object storage (``gs://``, ``s3://``, ...) rather than a disk."""
    return "://" in os.fspath(path)


def resolve(path) -> epath.Path:
    """``path`` as an epath: local ones made absolute (orbax wants that), remote ones as given.

    >>> str(resolve("gs://bucket/run/"))
    'gs://bucket/run'
    >>> resolve("runs/x").is_absolute()
    True
    """
    text = os.fspath(path)
    if text.startswith("gs://") and not text[len("gs://") :].split("/", 1)[0]:
        raise ValueError(f"{text!r} names no bucket: write gs://BUCKET/PATH")
    if is_remote(text):
        return epath.Path(text.rstrip("/"))
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def fresh(path: epath.Path) -> epath.Path:
    """``path``, with the listings gcsfs cached for this process forgotten.

    gcsfs caches directory listings and forgets them only on its own writes; orbax writes
    checkpoints with tensorstore, past that cache, so a listing of them must start afresh.
    """
    if is_remote(path):
        from etils.epath import backend

        backend.fsspec_backend.fs(os.fspath(path)).invalidate_cache()
    return path


def _retrying(action, what: str, attempts: int = WRITE_ATTEMPTS):
    for attempt in range(attempts):
        try:
            return action()
        except OSError as e:  # gcsfs and fsspec raise OSError subclasses for HTTP failures
            if attempt == attempts - 1:
                raise OSError(f"could not write {what} after {attempts} attempts: {e}") from e
            time.sleep(2**attempt)


def write_bytes(path: epath.Path, data: bytes) -> None:
    """Writes one file whole (retried on transient errors); the parent folder is made."""

    def write():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    _retrying(write, str(path))


def write_text(path: epath.Path, text: str) -> None:
    write_bytes(path, text.encode())


def move(source: epath.Path, target: epath.Path) -> None:
    """Moves a file or folder to ``target`` (whose parent is made): a rename on a disk.

    On object storage a folder is only a prefix, so it is copied object by object and the
    originals deleted (epath's rename wants the target's folder to exist, which a prefix
    never does before it holds an object).
    """
    if not is_remote(source):
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        return
    from etils.epath import backend

    fs = backend.fsspec_backend.fs(os.fspath(source))  # epath's own, so its listings stay true
    fs.copy(os.fspath(source), os.fspath(target), recursive=True)
    fs.rm(os.fspath(source), recursive=True)
    fs.invalidate_cache()


class Mirror:
    """Files that grow during a run: written locally, copied to a remote workdir now and then.

    ``local`` is where to write them. For a local workdir that is the workdir itself and
    :meth:`sync` does nothing. For a remote one it is a staging folder, seeded with the files
    of ``seed`` that already exist remotely (``metrics.jsonl`` of the run being resumed, so
    that it goes on growing), and every :meth:`sync` copies what changed since the last one.
    """

    def __init__(self, workdir: epath.Path, *, seed: tuple[str, ...] = (), sync_every_s=30.0):
        self.remote = workdir
        self._active = is_remote(workdir)
        self._sync_every_s = sync_every_s
        self._last_sync = time.monotonic()
        self._uploaded: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failures = 0
        if not self._active:
            self.local = workdir
            return
        self.local = epath.Path(tempfile.mkdtemp(prefix="sslax-workdir-"))
        for name in seed:
            remote = workdir / name
            if remote.exists():
                (self.local / name).write_bytes(remote.read_bytes())
                self._note_uploaded(name)

    def _note_uploaded(self, name: str) -> None:
        stat = os.stat(self.local / name)
        self._uploaded[name] = (stat.st_size, stat.st_mtime_ns)

    def _changed(self) -> list[str]:
        changed = []
        for root, _, files in os.walk(self.local):
            for file in files:
                name = os.path.relpath(os.path.join(root, file), self.local)
                stat = os.stat(os.path.join(root, file))
                if self._uploaded.get(name) != (stat.st_size, stat.st_mtime_ns):
                    changed.append(name)
        return sorted(changed)

    def _copy_changed(self) -> None:
        with self._lock:
            for name in self._changed():
                try:
                    before = os.stat(self.local / name)
                    (self.remote / name).parent.mkdir(parents=True, exist_ok=True)
                    (self.remote / name).write_bytes((self.local / name).read_bytes())
                except OSError as e:  # kept locally; the next sync tries again
                    self.failures += 1
                    print(
                        f"warning: could not copy {name} to {self.remote} ({e}); retrying at "
                        "the next sync",
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
                self._uploaded[name] = (before.st_size, before.st_mtime_ns)

    def sync(self, *, force: bool = False) -> None:
        """Starts a background copy of what changed: when due (or ``force``) and none runs."""
        if not self._active:
            return
        due = force or time.monotonic() - self._last_sync >= self._sync_every_s
        if not due or (self._thread is not None and self._thread.is_alive()):
            return
        self._last_sync = time.monotonic()
        self._thread = threading.Thread(target=self._copy_changed, daemon=True, name="sslax-sync")
        self._thread.start()

    def close(self) -> None:
        """Copies everything that is left (waiting for it), then removes the staging folder."""
        if not self._active:
            return
        if self._thread is not None:
            self._thread.join()
        self._copy_changed()
        if self._changed():
            self._copy_changed()  # one more try for what failed; what still fails stays local
        if self._changed():
            print(
                f"warning: some logs could not be copied to {self.remote}; they are kept in "
                f"{self.local}",
                file=sys.stderr,
                flush=True,
            )
            return
        shutil.rmtree(self.local, ignore_errors=True)
