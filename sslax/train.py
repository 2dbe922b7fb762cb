"""Pretraining entry point.

    python -m sslax.train [--config=experiments/configs/simclr.py] [--workdir=DIR] \
        [--config.FIELD=VALUE ...]

With no flags it pretrains SimCLR on the built-in shapes dataset, then evaluates with kNN. The
workdir (default: a new folder under ./runs/) receives orbax checkpoints, metrics.jsonl,
TensorBoard events, curves.png, results.json and, with ``profile_steps``, a profiler trace. A
bad flag or config value (:func:`sslax.configs.validate_config`) ends the program with a
one-line error and exit code 2, before anything is compiled or written.

A run, :func:`train_and_evaluate`, in the order it happens: the :class:`Program` of the config
(the method and its jitted step over the mesh), the data, the restore of the newest checkpoint,
the baselines (kNN on raw pixels and on the random network, :class:`sslax.eval.
TrainingEvaluator`), the compile, then the loop, :func:`_train`: a step, then logging
(:class:`_Logger`, :class:`_StepMetrics`), saving (:class:`_Saver`), a stop on preemption
(:class:`_PreemptionWatch`) and evaluation, each when it is due; :class:`_Profiler` traces the
steps asked for. Last, :func:`_results` writes results.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from absl import app, flags, logging

# The check of a config lives with the config builders; the entry point re-exports it.
from sslax.configs import ConfigError, validate_config

__all__ = [
    "ConfigError",
    "DivergenceError",
    "Program",
    "build_program",
    "params_checksum",
    "train_and_evaluate",
    "validate_config",
]

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "experiments/configs/simclr.py"


# --------------------------------------------------------------------------------------------
# The program a config runs


@dataclasses.dataclass(frozen=True)
class Program:
    """What a config runs on a mesh: its method, the state's layout, the jitted functions.

    ``init(key)`` makes the initial state, laid out over the mesh; ``step(state, batch, key)``
    is the method's train step, jitted with the state donated and sharded as ``state_shardings``,
    the batch split over the mesh's batch axes and the metrics replicated.
    """

    config: Any
    method: Any
    state_shapes: Any
    state_shardings: Any
    batch_sharding: Any
    init: Callable
    step: Callable
    host_crops: bool = False

    def batch_shapes(self) -> dict:
        """The global batch as ``jax.ShapeDtypeStruct``s: for ``jax.eval_shape`` and lowering.

        With ``host_crops`` (photos of every size) the batch holds every view's crop per view
        size, ``crops_<S>`` [B, k, S, S, 3]; otherwise the images, ``image`` [B, S, S, 3].
        A method that learns from labels (SupCon) also gets ``label`` [B].
        """
        import jax
        import jax.numpy as jnp

        size, side = self.config.batch_size, self.config.image_size

        def images(*shape):
            return jax.ShapeDtypeStruct((size, *shape, 3), jnp.uint8, sharding=self.batch_sharding)

        index = jax.ShapeDtypeStruct((size,), jnp.int32, sharding=self.batch_sharding)
        fields = {"index": index}
        if self.method.uses_labels:
            fields["label"] = index
        if not self.host_crops:
            return {"image": images(side, side), **fields}
        views = self.method.recipe.views
        counts = {s: sum(v.size == s for v in views) for s in self.method.recipe.sizes}
        return {**{f"crops_{s}": images(k, s, s) for s, k in counts.items()}, **fields}


def build_program(config, mesh) -> Program:
    """The :class:`Program` of ``config`` on ``mesh``. Traces ``init`` once; compiles nothing."""
    import flax.linen as nn
    import jax
    import numpy as np

    from sslax import methods, parallel
    from sslax.data import pipeline

    method = methods.get(config.method).make(config)
    sample = np.zeros((1, config.image_size, config.image_size, 3), np.uint8)
    state_shapes = jax.eval_shape(method.init, jax.random.key(0), sample)
    state_shardings = parallel.state_shardings(state_shapes, mesh)
    batch_sharding = parallel.batch_sharding(mesh)
    replicated = parallel.replicated(mesh)
    init = jax.jit(method.init, out_shardings=state_shardings)

    def train_step(state, batch, rng):
        with nn.intercept_methods(parallel.batch_sharded_activations):
            return method.train_step(state, batch, rng)

    return Program(
        config=config,
        method=method,
        state_shapes=state_shapes,
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        init=lambda key: init(key, sample),
        step=jax.jit(
            train_step,
            donate_argnums=0,
            in_shardings=(state_shardings, batch_sharding, replicated),
            out_shardings=(state_shardings, replicated),
        ),
        host_crops=pipeline.has_variable_size(config.dataset, config.data_dir or None),
    )


class _InputFeed:
    """The global batches of steps ``first_step..total_steps-1``, built ahead in a thread.

    This process reads its rows (:func:`sslax.data.pipeline.train_batches`, decoding in
    ``data_workers`` processes for photos) and a thread puts the next ``prefetch_batches`` on
    the devices while the current step runs. It counts what the loop reports: the records
    skipped as undecodable and the seconds the loop waited for a batch.
    """

    def __init__(self, config, program: Program, source, first_step: int):
        from sslax import parallel
        from sslax.data import images, pipeline

        rows = parallel.local_batch_rows(program.batch_sharding, config.batch_size)
        crops = images.TrainCrops.for_recipe(
            program.method.recipe, config.seed, config.dct_downscale
        )
        workers = pipeline.workers_for(source, config.data_workers)
        local_batches = pipeline.train_batches(
            source,
            global_batch_size=config.batch_size,
            seed=config.seed,
            start_step=first_step,
            end_step=config.total_steps,
            rows=rows,
            crops=crops if program.host_crops else None,
            workers=workers,
        )
        self.skipped = 0
        self.wait_s = 0.0
        uses_labels = program.method.uses_labels

        def on_devices(local):
            host_only = set(pipeline.HOST_FIELDS) - ({"label"} if uses_labels else set())
            fields = {k: v for k, v in local.items() if k not in host_only}
            skipped = int(local["skipped"].sum()) if "skipped" in local else 0
            if skipped:
                pipeline.warn_bad_files(local["bad_files"])
            batch = parallel.global_batch(fields, rows, program.batch_sharding, config.batch_size)
            return batch, skipped

        self._local = local_batches
        self._batches = _Prefetch(map(on_devices, local_batches), config.prefetch_batches)
        self._front = None

    def close(self) -> None:
        """Stops the prefetch thread and the decoding workers."""
        from sslax.data import pipeline

        self._batches.close()
        pipeline.close(self._local)

    def put_back(self, batch) -> None:
        """Makes ``batch`` (just taken, to compile the step) the next one again."""
        self._front = batch

    def __iter__(self):
        return self

    def __next__(self):
        if self._front is not None:
            batch, self._front = self._front, None
            return batch
        start = time.perf_counter()
        try:
            batch, skipped = next(self._batches)
        finally:
            self.wait_s += time.perf_counter() - start
        self.skipped += skipped
        return batch


class _Prefetch:
    """``iterator``'s items, computed ``depth`` ahead in a thread (0: none); errors re-raised.

    ``close()`` stops the thread and waits for it: a thread still inside JAX when the
    interpreter exits aborts the process (seen at a preemption stop).
    """

    def __init__(self, iterator: Iterator, depth: int):
        import queue
        import threading

        self._iterator = iterator
        self._items: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._done = object()
        self._thread = None
        if depth > 0:
            self._thread = threading.Thread(target=self._fill, daemon=True, name="sslax-input")
            self._thread.start()

    def _put(self, entry) -> bool:
        import queue

        while not self._stop.is_set():  # the consumer may stop early (preemption, an error)
            try:
                self._items.put(entry, timeout=0.5)
                return True
            except queue.Full:
                pass
        return False

    def _fill(self) -> None:
        try:
            for item in self._iterator:
                if not self._put((item, None)):
                    return
            self._put((self._done, None))
        except BaseException as e:  # handed to the consumer, which raises it as its own
            self._put((self._done, e))

    def __iter__(self):
        return self

    def __next__(self):
        if self._thread is None:
            return next(self._iterator)
        item, error = self._items.get()
        if error is not None:
            raise error
        if item is self._done:
            self._items.put((item, None))  # every later call ends too
            raise StopIteration
        return item

    def close(self, timeout_s: float = 120.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)  # at most the batch being made


def run_keys(seed: int):
    """(init key, step key) of a run: the step key is the ``rng`` of every train step."""
    import jax

    return tuple(jax.random.split(jax.random.key(seed)))


def params_checksum(params) -> str:
    """SHA-256 over the parameters' bytes in tree order: equal only for bit-identical runs.

    Collective when parameters are split over processes (fsdp): every process must call it.
    """
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not leaf.is_fully_replicated:
                leaf = multihost_utils.process_allgather(leaf, tiled=True)
            else:
                leaf = leaf.addressable_data(0)
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# What the loop reports: logs, step metrics, collapse


def _fmt_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _due(step: int, every: int, total_steps: int) -> bool:
    """Whether a ``*_every`` action runs after ``step``: every N steps and at the last step."""
    return step == total_steps or (every > 0 and step % every == 0)


class _Logger:
    """metrics.jsonl, TensorBoard and stdout; silent on every process but 0.

    The files are written through a :class:`sslax.paths.Mirror`: into the workdir itself, or,
    for a workdir on object storage, into a local staging folder copied up in the background
    (at most every ``sync_every_s`` seconds, at every checkpoint and at the end).
    """

    def __init__(self, workdir, active: bool, total_steps: int, sync_every_s: float = 30.0):
        self.active = active
        self.total_steps = total_steps
        self.history: list[dict] = []
        self._closed = False
        if active:
            from tensorboardX import SummaryWriter

            from sslax import paths

            self.files = paths.Mirror(workdir, seed=("metrics.jsonl",), sync_every_s=sync_every_s)
            local = self.files.local
            self._jsonl = open(local / "metrics.jsonl", "a")  # noqa: SIM115 - kept for the run
            self._tb = SummaryWriter(str(local / "tensorboard"))

    def sync(self, force: bool = False) -> None:
        """Copies the logs to a remote workdir when due (``force``: now, in the background)."""
        if self.active:
            self.files.sync(force=force)

    def write(self, step: int, metrics: dict[str, float]):
        record = {"step": step, **metrics}
        self.history.append(record)
        if not self.active:
            return
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in metrics.items():
            self._tb.add_scalar(name, value, step)
        self._tb.flush()
        self.files.sync()

    def train(self, step: int, record: dict[str, float], eta_s: float):
        self.write(step, record)
        self.print(
            f"step {step:>{len(str(self.total_steps))}}/{self.total_steps} | "
            f"loss {record['loss']:.4f} | emb std {record['embedding_std']:.4f} | "
            f"{record['images_per_s']:,.0f} img/s | ETA {_fmt_duration(eta_s)}"
        )

    def evaluation(self, step: int, results: dict[str, float]):
        self.write(step, results)
        linear = results.get("linear_top1")
        self.print(
            f"step {step}: kNN top-1 {results['knn_top1']:.4f}"
            + (f", linear top-1 {linear:.4f}" if linear is not None else "")
            + f" | alignment {results['alignment']:.3f}, uniformity "
            f"{results['uniformity']:.3f}, effective rank {results['effective_rank']:.1f}"
        )

    def print(self, *args):
        if self.active:
            print(*args, flush=True)

    def close(self):
        """Closes the files and copies what is left to a remote workdir (idempotent)."""
        if self.active and not self._closed:
            self._closed = True
            self._jsonl.close()
            self._tb.close()
            self.files.close()


class DivergenceError(FloatingPointError):
    """A non-finite loss or gradient norm: the run stops, the last good checkpoint is kept."""


class _StepMetrics:
    """Step metrics on their way to the host, and the training throughput.

    A step's metrics stay on the device until a log or save step fetches them all at once; each
    fetched step's loss and gradient norm must be finite. Throughput is per log interval, with
    evaluation time left out.
    """

    def __init__(self, first_step: int, batch_size: int, feed: _InputFeed):
        self._pending: list = []  # (step, metrics), fetched or not
        self._batch_size = batch_size
        self._first_step = first_step
        self._start = self._interval_start = time.time()
        self._interval_first = first_step
        self.throughput: list[float] = []
        # Input waits: the loop's seconds blocked on the next batch, per interval and in all.
        self._feed = feed
        self._wait_start = self._interval_wait = feed.wait_s
        self._timed_s = 0.0

    @property
    def input_wait_share(self) -> float | None:
        """The share of the timed training intervals spent waiting for input."""
        if not self._timed_s:
            return None
        return (self._feed.wait_s - self._wait_start) / self._timed_s

    def add(self, step: int, metrics) -> None:
        self._pending.append((step, metrics))

    def fetch(self, kept: Callable[[], str]) -> None:
        """Brings pending metrics to the host; raises DivergenceError naming ``kept()``."""
        import jax

        self._pending = [(s, jax.device_get(m)) for s, m in self._pending]
        for step, metrics in self._pending:
            for name in ("loss", "grad_norm"):
                value = float(metrics[name])
                if not math.isfinite(value):
                    raise DivergenceError(
                        f"training diverged: non-finite {name} ({value}) at step {step}; "
                        f"nothing non-finite was saved and {kept()}. Lower the learning rate "
                        "or add warm-up"
                    )

    def record(self, step: int) -> dict[str, float]:
        """The mean of every fetched step's metrics, with images_per_s; starts a new interval."""
        import numpy as np

        fetched = [m for _, m in self._pending]
        self._pending = []
        now = time.time()
        images_per_s = (
            (step - self._interval_first) * self._batch_size / (now - self._interval_start)
        )
        self.throughput.append(images_per_s)
        record = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        record["images_per_s"] = images_per_s
        record["input_wait_share"] = (self._feed.wait_s - self._interval_wait) / (
            now - self._interval_start
        )
        self._timed_s += now - self._interval_start
        self._interval_start, self._interval_first = now, step
        self._interval_wait = self._feed.wait_s
        return record

    def eta_s(self, step: int, total_steps: int) -> float:
        return (total_steps - step) * (time.time() - self._start) / (step - self._first_step)

    def pause_ends(self) -> None:
        """Time since the last call to this or :meth:`record` is not training throughput."""
        self._interval_start = time.time()


class _CollapseWatch:
    """Warns once when embedding_std x sqrt(D) stays below the threshold for a while.

    1 is an even spread over the sphere, 0 every image on one point (representation collapse).
    """

    def __init__(self, config, log: _Logger):
        from sslax import methods

        self._scale = math.sqrt(methods.embedding_dim(config))
        self._threshold = config.collapse_threshold
        self._patience = config.collapse_patience
        self._log = log
        self._below = 0
        self.warned_at = None

    def update(self, step: int, embedding_std: float) -> None:
        spread = embedding_std * self._scale
        self._below = self._below + 1 if spread < self._threshold else 0
        if self._below >= self._patience and self.warned_at is None:
            self.warned_at = step
            message = (
                f"warning: representation collapse: embedding std x sqrt(D) = {spread:.4f} has "
                f"stayed below collapse_threshold {self._threshold} for {self._below} log "
                f"intervals (step {step}); the embeddings of different images are nearly equal"
            )
            self._log.print(message)


# --------------------------------------------------------------------------------------------
# Saving, preemption, profiling


def _all_finite(state):
    """Whether every floating-point leaf of a state is finite (checked before each save)."""
    import jax
    import jax.numpy as jnp

    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(state)
        if jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


class _Saver:
    """Checkpoints with the meta a resume needs; never a state that holds a non-finite value."""

    def __init__(self, checkpoints, config, state_shapes, workdir: pathlib.Path, last_saved):
        import jax

        from sslax import checkpointing

        self._checkpoints = checkpoints
        self._config = config
        self._config_dict = json.loads(config.to_json())
        self._signature = checkpointing.state_signature(state_shapes)
        self._workdir = workdir
        self._all_finite = jax.jit(_all_finite)
        self.last_saved = last_saved

    def kept(self) -> str:
        if self.last_saved is None:
            return "no checkpoint had been saved yet"
        return f"the last good checkpoint, step {self.last_saved}, is kept in {self._workdir}"

    def save(self, step: int, state) -> None:
        if not bool(self._all_finite(state)):
            raise DivergenceError(
                f"training diverged: non-finite parameters or optimizer state after step {step}; "
                f"nothing non-finite was saved and {self.kept()}"
            )
        # The data position is the step: batches are a pure function of (seed, step).
        meta = {
            "step": step,
            "seed": self._config.seed,
            "data": {"next_step": step, "global_batch_size": self._config.batch_size},
            "config": self._config_dict,
            "signature": self._signature,
        }
        self._checkpoints.save(step, state, meta)
        self.last_saved = step

    def wait(self) -> None:
        self._checkpoints.wait_until_finished()


class _PreemptionWatch:
    """SIGTERM (a scheduler's preemption notice) asks the run to save and stop.

    One process: a signal handler notes it and the run stops after the current step. Several
    processes: JAX's preemption sync point, so that every process saves the same step.
    """

    def __init__(self):
        import signal

        import jax

        self._signal = signal
        self._multi = jax.process_count() > 1
        self.requested = False
        self._previous = None
        if not self._multi:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._note)
            except ValueError:  # not the main thread: no handler, SIGTERM keeps its default
                pass

    def _note(self, signum, frame):
        self.requested = True

    def reached(self, step: int) -> bool:
        if self._multi:
            from jax.experimental import multihost_utils

            try:
                self.requested = self.requested or multihost_utils.reached_preemption_sync_point(
                    step
                )
            except RuntimeError:  # the preemption service is disabled
                return False
        return self.requested

    def close(self):
        if self._previous is not None:
            self._signal.signal(self._signal.SIGTERM, self._previous)
            self._previous = None


class _Profiler:
    """A ``jax.profiler`` trace of the steps of ``config.profile_steps``, on process 0.

    ``(start, stop)`` traces the steps that take the state from step ``start`` to step ``stop``
    (of them, those a resumed run still takes) into ``WORKDIR/profile``: an ``.xplane.pb`` for
    TensorBoard's profile plugin and a ``.trace.json.gz`` for Perfetto. Each step is annotated
    with its number. The trace ends once the last traced step has finished on the device.
    """

    def __init__(self, profile_steps, first_step: int, workdir, log: _Logger):
        start, stop = profile_steps or (0, 0)
        self._start, self._stop = max(start, first_step), stop
        self._enabled = log.active and self._start < self._stop
        # Traced into the logs' folder (for a gs:// workdir, staging copied up with the logs).
        self._dir = log.files.local / "profile" if self._enabled else None
        self._shown = workdir / "profile"
        self._log = log
        self._tracing = False

    @contextlib.contextmanager
    def step(self, step: int):
        """Around the call of train step ``step`` (the state's step before it)."""
        import jax

        if not self._enabled or not self._start <= step < self._stop:
            yield
            return
        if step == self._start:
            jax.profiler.start_trace(str(self._dir), create_perfetto_trace=True)
            self._tracing = True
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            yield

    def after(self, step: int, outputs) -> None:
        """After ``step`` steps: ends the trace once the last traced step's outputs are ready."""
        if self._tracing and step == self._stop:
            import jax

            jax.block_until_ready(outputs)
            self.close()
            self._log.sync(force=True)
            self._log.print(
                f"profiled steps {self._start}..{self._stop} into {self._shown}: `tensorboard "
                f"--logdir {self._shown}` (Profile tab), or its perfetto_trace.json.gz in "
                "ui.perfetto.dev"
            )

    def close(self) -> None:
        if self._tracing:
            import jax

            jax.profiler.stop_trace()
            self._tracing = False


# --------------------------------------------------------------------------------------------
# A run


def train_and_evaluate(
    config,
    workdir,
    *,
    log_hook: Callable[[int, Any], dict[str, float]] | None = None,
) -> dict:
    """Pretrains ``config.method`` in ``workdir``, resuming from its newest checkpoint if any.

    Runs on every device of every process, over the mesh ``config.mesh``. ``workdir`` is a
    local folder or ``gs://BUCKET/PATH`` (:mod:`sslax.paths`). Returns the results
    dict also written to ``workdir/results.json``. ``log_hook(step, state)``, if given, runs at
    every log step on the state after that step (before it is donated to the next one) and
    returns extra host-side metrics for that step's record in ``metrics.jsonl``; experiments use
    it to measure what a method does not log, such as the drift of MoCo's key encoder.

    Raises ConfigError (before anything is compiled or written) for a config that cannot run,
    DivergenceError when training diverges.
    """
    import jax

    from sslax import parallel, paths

    validate_config(config, num_devices=jax.device_count())
    try:
        workdir = paths.resolve(workdir)
    except ValueError as e:
        raise ConfigError(f"--workdir: {e}") from None
    mesh = parallel.make_mesh(config.mesh)
    # The mesh in context lets a method's shard_map (SimCLR's chunked loss) find its axes.
    with jax.set_mesh(mesh):
        return _train_and_evaluate(config, workdir, mesh, log_hook)


def _train_and_evaluate(config, workdir, mesh, log_hook) -> dict:
    """Set-up, baselines, training and results; each a named piece below."""
    import jax

    from sslax import checkpointing, parallel, paths
    from sslax import eval as sslax_eval

    start_time = time.time()
    program = build_program(config, mesh)
    init_key, step_key = run_keys(config.seed)
    train_source, test_source = _sources(config)
    init_state = program.init(init_key)

    # Restore before writing anything: a workdir of another run is refused untouched.
    checkpoints = checkpointing.Checkpoints(workdir / "checkpoints", max_to_keep=3)
    # What a process that loses a peer says before it exits (sslax.parallel).
    parallel.set_resume_hint(checkpoints.resume_hint)
    restored = checkpoints.restore_newest(init_state, json.loads(config.to_json()))
    state = init_state if restored is None else restored[0]
    first_step = int(state.step)
    workdir.mkdir(parents=True, exist_ok=True)
    is_chief = jax.process_index() == 0
    if is_chief:
        paths.write_text(workdir / "config.json", config.to_json(indent=2))
    log = _Logger(workdir, is_chief, config.total_steps)
    try:
        if restored is not None:
            log.print(f"resuming from the checkpoint at step {first_step} in {workdir}")
        _note_clipped_warmups(config, log)

        evaluator = sslax_eval.TrainingEvaluator(
            config,
            program.method.encode,
            program.state_shardings,
            mesh,
            train_source,
            test_source,
            ema_encode=program.method.ema_encode,
        )
        t = time.time()
        raw_pixels = evaluator.raw_pixels()
        baselines = {
            "knn_top1_raw_pixels": raw_pixels["knn_top1"],
            "linear_top1_raw_pixels": raw_pixels["linear_top1"],
            **evaluator(init_state),
        }
        log.print(
            f"random-init network: kNN top-1 {baselines['knn_top1']:.4f}; raw pixels: kNN top-1 "
            f"{raw_pixels['knn_top1']:.4f}, linear top-1 {raw_pixels['linear_top1']:.4f} "
            f"({time.time() - t:.0f}s)"
        )

        if first_step < config.total_steps:
            batches = _InputFeed(config, program, train_source, first_step)
            first_batch = next(batches)
            t = time.time()
            compiled = program.step.lower(state, first_batch, step_key).compile()
            compile_s = time.time() - t
            log.print(
                f"compiled the train step in {compile_s:.1f}s; training steps "
                f"{first_step}..{config.total_steps} at batch {config.batch_size} on "
                f"{jax.device_count()} device(s) of {jax.process_count()} process(es), mesh "
                f"{dict(mesh.shape)}"
            )
            last_saved = first_step if restored is not None else None
            saver = _Saver(checkpoints, config, program.state_shapes, workdir, last_saved)
            batches.put_back(first_batch)
            try:
                outcome = _train(
                    config,
                    state,
                    first_step,
                    batches,
                    lambda state, batch: compiled(state, batch, step_key),
                    _Hooks(log=log, saver=saver, evaluator=evaluator, log_hook=log_hook),
                    workdir,
                )
            finally:
                batches.close()
            outcome.compile_s = compile_s
            if outcome.preempted:
                checkpoints.close()
                log.close()
                return {"preempted_at_step": outcome.step, "workdir": str(workdir)}
        else:
            log.print(
                f"the checkpoint is already at step {first_step} >= total_steps; evaluating it"
            )
            outcome = _Outcome(
                state=state, step=first_step, evaluation=evaluator(state, linear=True)
            )
        checkpoints.wait_until_finished()
        checkpoints.close()
        results = _results(config, outcome, baselines, log.history, start_time, workdir)
        if is_chief:
            paths.write_bytes(workdir / "curves.png", _plot(log.history))
            paths.write_text(workdir / "results.json", json.dumps(results, indent=2) + "\n")
        log.close()
        _print_summary(results, log)
        return results

    finally:
        log.close()  # a run that fails still leaves its logs in the workdir


def _sources(config):
    """The train and held-out splits; a TFDS dataset's sizes are checked against the config."""
    from sslax import configs
    from sslax.data import pipeline

    def source(split, classes=None):
        return pipeline.get_source(
            config.dataset,
            split,
            image_size=config.image_size,
            data_dir=config.data_dir or None,
            crop_fraction=config.crop_fraction,
            classes=classes,
            dct_downscale=config.dct_downscale,
        )

    train = source(config.train_split)
    test = source(config.eval_split, getattr(train, "classes", None))
    configs.check_split_sizes(config, len(train), len(test))
    return train, test


def _note_clipped_warmups(config, log: _Logger) -> None:
    """Says when a warm-up is longer than the run (it is clipped: see sslax.optim)."""
    warmups = {"warmup_steps": config.warmup_steps}
    if config.method == "dino" and config.dino.sharpening:
        warmups["dino.warmup_teacher_temp_steps"] = config.dino.warmup_teacher_temp_steps
    for field, steps in warmups.items():
        if steps > config.total_steps:
            log.print(
                f"note: {field} {steps} is longer than the run ({config.total_steps} steps): "
                "the warm-up is clipped to the run and never completes"
            )


@dataclasses.dataclass
class _Outcome:
    """Where training ended and what it measured."""

    state: Any
    step: int
    preempted: bool = False
    evaluation: dict = dataclasses.field(default_factory=dict)
    throughput: list = dataclasses.field(default_factory=list)
    input_wait_share: float | None = None
    skipped_images: int = 0
    collapse_warning_step: int | None = None
    compile_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class _Hooks:
    """What the loop hands its results to: logs, checkpoints, evaluation, an experiment's hook."""

    log: _Logger
    saver: _Saver
    evaluator: Any
    log_hook: Callable | None


def _train(
    config, state, step, batches: _InputFeed, train_step, hooks: _Hooks, workdir
) -> _Outcome:
    """The loop: a step, then logging, saving, a preemption stop and evaluation, when due."""
    log, saver, total = hooks.log, hooks.saver, config.total_steps
    step_metrics = _StepMetrics(step, config.batch_size, batches)
    collapse = _CollapseWatch(config, log)
    preemption = _PreemptionWatch()
    profiler = _Profiler(config.get("profile_steps", ()), step, workdir, log)
    evaluation = {}
    try:
        for batch in batches:
            with profiler.step(step):
                state, metrics = train_step(state, batch)
            step += 1
            profiler.after(step, (state, metrics))
            step_metrics.add(step, metrics)
            preempted = preemption.reached(step)
            log_now = _due(step, config.log_every, total)
            save_now = _due(step, config.checkpoint_every, total) or preempted
            if log_now or save_now:
                # Every step's loss and gradient norm are checked before anything is saved, so
                # no checkpoint holds a diverged state.
                step_metrics.fetch(saver.kept)
            if log_now:
                record = step_metrics.record(step)
                record["skipped_images"] = _sum_over_processes(batches.skipped)
                if hooks.log_hook is not None:
                    record.update(hooks.log_hook(step, state))
                log.train(step, record, step_metrics.eta_s(step, total))
                collapse.update(step, record["embedding_std"])
            if save_now:
                saver.save(step, state)
                log.sync(force=True)
            if preempted:
                saver.wait()
                log.print(
                    f"preempted: saved the checkpoint at step {step} in {workdir}; "
                    "run the same command again to resume"
                )
                break
            if _due(step, config.eval_every, total):
                linear = config.eval_linear_probe or step == total
                evaluation = hooks.evaluator(state, linear=linear)
                log.evaluation(step, evaluation)
                step_metrics.pause_ends()
    finally:
        profiler.close()
        preemption.close()
        saver.wait()
    return _Outcome(
        state=state,
        step=step,
        preempted=preemption.requested,
        evaluation=evaluation,
        throughput=step_metrics.throughput,
        input_wait_share=step_metrics.input_wait_share,
        skipped_images=_sum_over_processes(batches.skipped),
        collapse_warning_step=collapse.warned_at,
    )


def _sum_over_processes(count: int) -> int:
    """``count`` summed over every process (each reads its own rows); a collective, so every
    process calls it at the same step."""
    import jax
    import numpy as np

    if jax.process_count() == 1:
        return count
    from jax.experimental import multihost_utils

    return int(multihost_utils.process_allgather(np.int64(count)).sum())


def _results(config, outcome: _Outcome, baselines, history, start_time, workdir) -> dict:
    """results.json: what ran, what it measured against its baselines, and what it cost."""
    import numpy as np

    losses_logged = [r["loss"] for r in history if "loss" in r]
    evaluation = outcome.evaluation
    return {
        "method": config.method,
        "dataset": config.dataset,
        "model": config.model,
        "steps": int(outcome.state.step),
        "batch_size": config.batch_size,
        "final_loss": losses_logged[-1] if losses_logged else None,
        "knn_top1": evaluation["knn_top1"],
        "linear_top1": evaluation.get("linear_top1"),
        "knn_top1_ema": evaluation.get("knn_top1_ema"),
        "knn_top1_random_init": baselines["knn_top1"],
        "knn_top1_raw_pixels": baselines["knn_top1_raw_pixels"],
        "linear_top1_raw_pixels": baselines["linear_top1_raw_pixels"],
        "embedding_std": evaluation["eval_embedding_std"],
        "embedding_std_random_init": baselines["eval_embedding_std"],
        "images_per_s": float(np.median(outcome.throughput)) if outcome.throughput else None,
        "input_wait_share": outcome.input_wait_share,
        "skipped_images": outcome.skipped_images,
        "compile_s": outcome.compile_s,
        "params_checksum": params_checksum(outcome.state.params),
        "collapse_warning_step": outcome.collapse_warning_step,
        "wall_time_s": time.time() - start_time,
        "workdir": str(workdir),
    }


def _plot(history: list[dict]) -> bytes:
    """curves.png's bytes: each logged metric against the step."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        n
        for n in (
            "loss",
            "embedding_std",
            "knn_top1",
            "linear_top1",
            "alignment",
            "uniformity",
            "effective_rank",
            "learning_rate",
        )
        if any(n in r for r in history)
    ]
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        points = [(r["step"], r[name]) for r in history if name in r]
        ax.plot(*zip(*points), marker="o" if len(points) < 10 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()


def _print_summary(results: dict, log: _Logger):
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    rows = [
        ("method", results["method"]),
        ("dataset / model", f"{results['dataset']} / {results['model']}"),
        ("steps x batch", f"{results['steps']} x {results['batch_size']}"),
        ("final loss", fmt(results["final_loss"], ".4f")),
        ("kNN top-1 (held-out)", fmt(results["knn_top1"], ".4f")),
        ("linear probe top-1", fmt(results["linear_top1"], ".4f")),
        *(
            [("kNN top-1, EMA network", fmt(results["knn_top1_ema"], ".4f"))]
            if results["knn_top1_ema"] is not None
            else []
        ),
        ("kNN top-1, random init", fmt(results["knn_top1_random_init"], ".4f")),
        ("kNN top-1, raw pixels", fmt(results["knn_top1_raw_pixels"], ".4f")),
        ("linear top-1, raw pixels", fmt(results["linear_top1_raw_pixels"], ".4f")),
        ("embedding std", f"{results['embedding_std']:.4f} (collapsed: 0)"),
        ("images / s", fmt(results["images_per_s"], ",.0f")),
        ("wall time", _fmt_duration(results["wall_time_s"])),
        ("workdir", results["workdir"]),
    ]
    width = max(len(k) for k, _ in rows)
    log.print("\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows))


# --------------------------------------------------------------------------------------------
# The command line


def _fail(message: str, code: int = 2) -> None:
    from sslax import cli

    cli.fail("sslax.train", message, code)


def _start_distributed() -> None:
    """JAX's multi-controller runtime, from the --distributed* flags (see sslax.parallel)."""
    from sslax import parallel

    f = flags.FLAGS
    if f.coordinator_address and f.distributed != "off":
        # JAX ends the process itself if the others do not come up in time; say what it awaits.
        print(
            f"process {f.process_id} of {f.num_processes}: connecting to the coordinator at "
            f"{f.coordinator_address} (waiting up to {f.distributed_timeout_s}s for the others)",
            file=sys.stderr,
            flush=True,
        )
    try:
        parallel.initialize_distributed(
            f.distributed,
            coordinator_address=f.coordinator_address,
            num_processes=f.num_processes,
            process_id=f.process_id,
            timeout_s=f.distributed_timeout_s,
            command="sslax.train",
        )
    except ValueError as e:
        _fail(e)
    except Exception as e:  # the coordinator never answered, a peer never came up, ...
        _fail(f"could not start the distributed runtime: {type(e).__name__}: {e}", code=1)


def main(argv: list[str], config_flag, workdir_flag) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}")
    import jax

    from sslax import runtime

    try:
        config = config_flag.value
        config.method  # a config file that failed to load raises only on first use
    except Exception as e:
        _fail(f"cannot load --config: {e}")
    # Before any backend starts: XLA reads its flags once. They depend on the model.
    runtime.use_tuned_xla_flags(config.model)
    runtime.quiet_absent_tpu()
    _start_distributed()

    # orbax and grain log every save and read at INFO; the progress lines are ours.
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        validate_config(config, num_devices=jax.device_count())
    except ConfigError as e:
        _fail(e)
    if jax.process_count() > 1 and not workdir_flag.value:
        _fail("a multi-process run needs --workdir, a folder that every process sees")
    workdir = workdir_flag.value or pathlib.Path("runs") / (
        f"{config.method}-{config.dataset.replace(':', '_')}-"
        f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
    )
    from sslax import checkpointing, parallel
    from sslax.data import pipeline

    try:
        train_and_evaluate(config, workdir)
    except (ConfigError, pipeline.DatasetError, checkpointing.IncompatibleCheckpoint) as e:
        # A TFDS split too small for the evaluation; a TFDS dataset not prepared yet; a workdir
        # of another run.
        _fail(e)
    except DivergenceError as e:
        _fail(e, code=1)
    except Exception as e:
        # A collective or barrier failed because another process died: one line, no traceback,
        # and exit at once (JAX's exit handler would wait for the dead process, then abort).
        reason = parallel.lost_peer_reason(e)
        if reason is None:
            raise
        parallel.exit_for_lost_peer(reason)


def _define_distributed_flags() -> None:
    from sslax import parallel

    flags.DEFINE_enum(
        "distributed",
        "auto",
        list(parallel.DISTRIBUTED_MODES),
        "Multi-process runtime: 'auto' starts it when the three flags below are given or a "
        "SLURM/Open MPI launch of several tasks is detected; 'on' always (JAX auto-detects TPU "
        "pods and SLURM); 'off' never.",
    )
    flags.DEFINE_string(
        "coordinator_address", None, "HOST:PORT of process 0's coordination service."
    )
    flags.DEFINE_integer("num_processes", None, "Number of processes in the run.", lower_bound=1)
    flags.DEFINE_integer(
        "process_id", None, "This process's index, 0..num_processes-1.", lower_bound=0
    )
    flags.DEFINE_integer(
        "distributed_timeout_s",
        100,
        "Seconds before the others give up on a process that died or never started; they exit "
        "with code 75 and one line saying where a relaunch resumes.",
        lower_bound=1,
    )


def run() -> None:
    """The command line: flags are defined here, not at import, so importing has no effects."""
    from sslax import cli

    config_flag = cli.define_config_flag("sslax.train", str(DEFAULT_CONFIG))
    workdir_flag = flags.DEFINE_string(
        "workdir", None, "Run folder; default: a new folder under ./runs/."
    )
    _define_distributed_flags()
    app.run(
        functools.partial(main, config_flag=config_flag, workdir_flag=workdir_flag),
        flags_parser=cli.flags_parser("sslax.train"),
    )


if __name__ == "__main__":
    run()
