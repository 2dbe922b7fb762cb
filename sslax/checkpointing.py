"""Checkpoints that survive preemption, refuse the wrong run and never hold a diverged state.

Every checkpoint is an orbax step directory with two items: ``state``, the whole train-state
pytree (parameters, BatchNorm statistics, optimiser state, EMA targets, MoCo queue and pointer,
DINO centre, step), and ``meta``, JSON with the resolved config, the RNG seed, the data
position and the state's signature (every leaf's path, shape and dtype). The data position is
all the input pipeline needs: a batch is a pure function of (seed, step), so restoring the step
restores the data order (sslax.data.pipeline).

The directory may be local or on object storage (``gs://``; :mod:`sslax.paths`). A checkpoint
is complete only once every process has written its part: orbax commits it (renames the
temporary folder, or on GCS writes ``commit_success.txt``) after all processes reach a barrier.
On restart, a step folder that was never committed (a process died or was preempted while
saving) is moved aside to ``WORKDIR/checkpoints_incomplete/`` with a note, never restored.

:meth:`Checkpoints.restore_newest` then walks the committed steps from the newest down. A step
whose files cannot be read (a truncated or corrupted write) is moved aside to
``WORKDIR/checkpoints_unreadable/`` with a warning and the next older one is tried. A step
written by an incompatible config (other model or shapes) stops the run with a message naming
the difference; nothing in the workdir is touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from sslax import paths


class IncompatibleCheckpoint(ValueError):
    """The workdir holds checkpoints of a run that this config cannot continue."""


def state_signature(state: Any) -> list[list]:
    """``[path, shape, dtype]`` of every leaf of a state (or its eval_shape), in tree order."""
    return [
        [jax.tree_util.keystr(path), list(leaf.shape), str(leaf.dtype)]
        for path, leaf in jax.tree_util.tree_leaves_with_path(state)
    ]


def _config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def describe_mismatch(saved_meta: dict, signature: list[list], config: dict) -> str | None:
    """Why a checkpoint cannot be restored into a state of ``signature``; None if it can."""
    saved = saved_meta.get("signature")
    if saved == signature:
        return None
    if saved is None:
        problem = "it has no state signature (not an sslax checkpoint?)"
    else:
        saved_paths = {p: (s, d) for p, s, d in saved}
        problem = f"its state has {len(saved)} arrays, this config's {len(signature)}"
        for path, shape, dtype in signature:
            if path not in saved_paths:
                problem = f"it has no {path} (this config's is {shape} {dtype})"
                break
            if saved_paths[path] != (shape, dtype):
                old_shape, old_dtype = saved_paths[path]
                problem = f"its {path} is {old_shape} {old_dtype}, this config's is {shape} {dtype}"
                break
    differences = _config_differences(saved_meta.get("config", {}), config)
    if differences:
        shown = "; ".join(differences[:6])
        more = f" (and {len(differences) - 6} more)" if len(differences) > 6 else ""
        problem += f". Config differences: {shown}{more}"
    return problem


# The pieces of the traceback each aborted read prints; threads print them interleaved.
_ABORTED_READ = re.compile(
    r"Traceback \(most recent call last\):"
    r"|File \"[^\"]*asyncio/base_events\.py\", line \d+, in \w+"
    r"|self\._check_closed\(\)"
    r"|raise RuntimeError\('Event loop is closed'\)"
    r"|RuntimeError(: Event loop is closed)?"
    r"|:? ?Event loop is closed"
)


@contextlib.contextmanager
def _quiet_aborted_reads(drain_s: float = 0.5):
    """Drops the tracebacks of reads still in flight when a restore fails, keeps all else.

    When one array of a checkpoint cannot be read, orbax's restore fails and closes its event
    loop; every other array read still in flight then reports "Event loop is closed" from a
    tensorstore thread, hundreds of tracebacks that say nothing about the cause. Standard error
    is captured at the file-descriptor level while restoring; after a failure it is written
    back without those tracebacks, after a success unchanged.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            time.sleep(drain_s)  # let the aborted reads report here, not later
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            if failed:
                lines = (_ABORTED_READ.sub("", line) for line in text.splitlines())
                text = "".join(line + "\n" for line in lines if line.strip(" :\t"))
            sys.stderr.write(text)
            sys.stderr.flush()


def _free_name(folder: epath.Path, name: str) -> epath.Path:
    """``folder/name``, or ``folder/name.1``, ``.2``, ... if that is taken."""
    target, suffix = folder / name, 0
    while target.exists():
        suffix += 1
        target = folder / f"{name}.{suffix}"
    return target


class Checkpoints:
    """An orbax CheckpointManager (async, atomic, keeps the newest ``max_to_keep``) plus meta."""

    def __init__(self, directory, *, max_to_keep: int = 3):
        self.directory = paths.resolve(directory)  # orbax wants absolute paths
        self._max_to_keep = max_to_keep
        self.manager = self._open()

    def resume_hint(self) -> str:
        """Where a relaunch resumes: the newest step that every process finished writing.

        Read from storage, so it holds for a run that another process was saving when it died.
        """
        try:
            steps = ocp.step.checkpoint_steps(paths.fresh(self.directory))
        except Exception as e:  # noqa: BLE001 - the hint must never fail the caller
            return f"could not list {self.directory} ({type(e).__name__}); relaunch to resume"
        if not steps:
            return (
                f"no checkpoint in {self.directory} was finished by every process; a relaunch "
                "starts from step 0"
            )
        return (
            f"the newest checkpoint every process finished is step {max(steps)} in "
            f"{self.directory}; relaunch every process with the same flags to resume from it"
        )

    def set_aside_incomplete(self) -> list[int]:
        """Moves step folders that were never committed to ``checkpoints_incomplete/``.

        Every process calls it; process 0 moves, the others wait. Returns the steps moved.
        """
        moved = []
        if jax.process_index() == 0 and paths.fresh(self.directory).exists():
            committed = set(ocp.step.checkpoint_steps(self.directory))
            aside = self.directory.parent / f"{self.directory.name}_incomplete"
            for entry in sorted(self.directory.iterdir()):
                try:
                    step = ocp.step.step_from_checkpoint_name(entry.name)
                except ValueError:
                    continue  # not a step folder
                if step in committed and entry.name == str(step):
                    continue
                target = _free_name(aside, entry.name)
                print(
                    f"note: the checkpoint of step {step} was not finished by every process "
                    f"(the run stopped while saving it); moved it to {target}",
                    flush=True,
                )
                paths.move(entry, target)
                moved.append(step)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("sslax_set_aside_incomplete")
        if moved:
            self.manager.reload()
        return moved

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True),
            item_names=("state", "meta"),
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )

    def restore_newest(
        self, target: Any, config: dict, *, read_only: bool = False
    ) -> tuple[Any, int] | None:
        """The newest readable checkpoint as ``(state, step)``, or None when there is none.

        Unreadable steps are moved aside, or with ``read_only`` only skipped with a warning.

        Raises IncompatibleCheckpoint when the newest readable checkpoint was written by a
        config whose state differs from ``target``'s (nothing is changed on disk then).
        """
        signature = state_signature(target)
        if not read_only:
            self.set_aside_incomplete()
        for step in reversed(self.steps()):
            try:
                with _quiet_aborted_reads():
                    meta = self.manager.restore(
                        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                    ).meta
            except Exception as e:  # noqa: BLE001 - any read failure means "unreadable"
                self._set_aside(step, e, read_only)
                continue
            problem = describe_mismatch(meta, signature, config)
            if problem is not None:
                raise IncompatibleCheckpoint(
                    f"{self.directory} holds a checkpoint (step {step}) of another run: "
                    f"{problem}. Use another --workdir; nothing in this one was changed"
                )
            try:
                with _quiet_aborted_reads():
                    restored = self.manager.restore(
                        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
                    )
            except Exception as e:  # noqa: BLE001
                self._set_aside(step, e, read_only)
                continue
            return restored.state, step
        return None

    def _set_aside(self, step: int, error: Exception, read_only: bool = False) -> None:
        """Moves an unreadable step aside, so that it is neither retried nor overwritten."""
        aside = self.directory.parent / f"{self.directory.name}_unreadable"
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        where = "left it in place" if read_only else f"moved it to {aside / str(step)}"
        message = (
            f"warning: the checkpoint at step {step} cannot be read ({reason}); {where} and "
            "trying the previous one"
        )
        if jax.process_index() != 0:
            logging.warning(message)
        elif read_only:
            print(message, flush=True)
        else:
            print(message, flush=True)
            paths.move(self.directory / str(step), _free_name(aside, str(step)))
        if jax.process_count() > 1 and not read_only:
            multihost_utils.sync_global_devices(f"sslax_set_aside_{step}")
        # A failed read leaves orbax's background machinery unusable (later saves would be
        # lost silently): start a fresh manager.
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 - it is being replaced either way
            pass
        self.manager = self._open()

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
