"""Pretraining entry point.

    python -m sslax.train [--config=experiments/configs/simclr.py] [--workdir=DIR] \
        [--config.FIELD=VALUE ...]

With no flags it pretrains SimCLR on the built-in shapes dataset, then evaluates with kNN. The
workdir (default: a new folder under ./runs/) receives orbax checkpoints, metrics.jsonl,
TensorBoard events, curves.png and results.json. A bad flag or config value ends the program
with a one-line error and exit code 2, before anything is compiled or written.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import pathlib
import sys
import time
from typing import Any, Callable

from absl import app, flags, logging
from ml_collections import config_flags

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "experiments/configs/simclr.py"


class ConfigError(ValueError):
    """A config that cannot run; reported as one line with exit code 2."""


def validate_config(config, *, num_devices: int) -> None:
    """Raises ConfigError on the first config value that cannot work. Compiles nothing."""
    from sslax import methods, models, optim
    from sslax.data import pipeline

    def need(ok: bool, message: str):
        if not ok:
            raise ConfigError(message)

    need(
        config.method in methods.METHODS,
        f"unknown method {config.method!r}; choose one of {', '.join(methods.METHODS)}",
    )
    need(
        config.model in models.MODELS,
        f"unknown model {config.model!r}; choose one of {', '.join(models.MODELS)}",
    )
    try:
        pipeline.check_dataset_name(config.dataset)
    except pipeline.DatasetError as e:
        raise ConfigError(str(e)) from None
    need(config.batch_size > 0, f"batch_size must be positive, got {config.batch_size}")
    from sslax import parallel

    try:
        mesh_shape = dict(parallel.parse_mesh_spec(config.mesh, num_devices))
    except parallel.MeshError as e:
        raise ConfigError(str(e)) from None
    batch_shards = mesh_shape.get("data", 1) * mesh_shape.get("fsdp", 1)
    need(
        config.batch_size % batch_shards == 0,
        f"batch_size {config.batch_size} does not divide by the {batch_shards} devices of the "
        f"mesh's batch axes {mesh_shape}",
    )
    need(config.total_steps > 0, f"total_steps must be positive, got {config.total_steps}")
    need(config.learning_rate > 0, f"learning_rate must be positive, got {config.learning_rate}")
    need(config.temperature > 0, f"temperature must be positive, got {config.temperature}")
    need(
        config.optimizer in optim.OPTIMIZERS,
        f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(optim.OPTIMIZERS)}",
    )
    need(
        config.lr_scaling in optim.LR_RULES,
        f"unknown lr_scaling {config.lr_scaling!r}; choose one of {', '.join(optim.LR_RULES)}",
    )
    need(config.warmup_steps >= 0, f"warmup_steps must be >= 0, got {config.warmup_steps}")
    need(config.weight_decay >= 0, f"weight_decay must be >= 0, got {config.weight_decay}")
    need(0 <= config.momentum <= 1, f"momentum must be in [0, 1], got {config.momentum}")
    need(config.image_size >= 8, f"image_size must be at least 8, got {config.image_size}")
    need(config.width > 0, f"width must be positive, got {config.width}")
    from sslax.methods import common

    need(
        config.recipe in common.RECIPES,
        f"unknown recipe {config.recipe!r}; choose one of {', '.join(common.RECIPES)}",
    )
    need(
        config.compute_dtype in common.COMPUTE_DTYPES,
        f"compute_dtype must be one of {', '.join(common.COMPUTE_DTYPES)}, "
        f"got {config.compute_dtype!r}",
    )
    need(
        0 < config.crop_min_scale <= 1,
        f"crop_min_scale must be in (0, 1], got {config.crop_min_scale}",
    )
    need(
        config.augment_strength >= 0,
        f"augment_strength must be >= 0, got {config.augment_strength}",
    )
    if config.model.startswith("vit"):
        need(
            config.patch_size > 0 and config.image_size % config.patch_size == 0,
            f"image_size {config.image_size} does not divide by patch_size {config.patch_size}",
        )
    for name in (
        "log_every",
        "checkpoint_every",
        "knn_k",
        "proj_dim",
        "proj_hidden_dim",
        "collapse_patience",
        "diagnostics_examples",
    ):
        need(config[name] > 0, f"{name} must be positive, got {config[name]}")
    need(
        config.eval_every >= 0, f"eval_every must be >= 0 (0: at the end), got {config.eval_every}"
    )
    # A method may check its own section (e.g. MoCo's queue size against the batch); local
    # crops asked of a method other than DINO would be silently ignored.
    method_check = getattr(methods.get(config.method), "check_config", None)
    for check in (method_check, methods.get("dino").check_unused_local_crops):
        try:
            if check is not None:
                check(config)
        except ValueError as e:
            raise ConfigError(str(e)) from None


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


def _fmt_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class _Logger:
    """metrics.jsonl, TensorBoard and stdout; silent on every process but 0."""

    def __init__(self, workdir: pathlib.Path, active: bool):
        self.active = active
        self.history: list[dict] = []
        if active:
            from tensorboardX import SummaryWriter

            self._jsonl = open(workdir / "metrics.jsonl", "a")
            self._tb = SummaryWriter(str(workdir / "tensorboard"))

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

    def print(self, *args):
        if self.active:
            print(*args, flush=True)

    def close(self):
        if self.active:
            self._jsonl.close()
            self._tb.close()


def _plot(history: list[dict], path: pathlib.Path):
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


class DivergenceError(FloatingPointError):
    """A non-finite loss or gradient norm: the run stops, the last good checkpoint is kept."""


def _kept(last_saved: int | None, workdir: pathlib.Path) -> str:
    if last_saved is None:
        return "no checkpoint had been saved yet"
    return f"the last good checkpoint, step {last_saved}, is kept in {workdir}"


def _check_finite(pending: list, last_saved: int | None, workdir: pathlib.Path) -> None:
    import math

    for step, metrics in pending:
        for name in ("loss", "grad_norm"):
            value = float(metrics[name])
            if not math.isfinite(value):
                raise DivergenceError(
                    f"training diverged: non-finite {name} ({value}) at step {step}; nothing "
                    f"non-finite was saved and {_kept(last_saved, workdir)}. Lower the "
                    "learning rate or add warm-up"
                )


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


class _CollapseWatch:
    """Warns once when embedding_std x sqrt(D) stays below the threshold for a while.

    1 is an even spread over the sphere, 0 every image on one point (representation collapse).
    """

    def __init__(self, config, log: "_Logger"):
        import math

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


def train_and_evaluate(
    config,
    workdir: str | pathlib.Path,
    *,
    log_hook: Callable[[int, Any], dict[str, float]] | None = None,
) -> dict:
    """Pretrains ``config.method`` in ``workdir``, resuming from its newest checkpoint if any.

    Runs on every device of every process, over the mesh ``config.mesh``. Returns the results
    dict also written to ``workdir/results.json``. ``log_hook(step, state)``, if given, runs at
    every log step on the state after that step (before it is donated to the next one) and
    returns extra host-side metrics for that step's record in ``metrics.jsonl``; experiments use
    it to measure what a method does not log, such as the drift of MoCo's key encoder.
    """
    import jax

    from sslax import parallel

    mesh = parallel.make_mesh(config.mesh)
    # The mesh in context lets a method's shard_map (SimCLR's chunked loss) find its axes.
    with jax.set_mesh(mesh):
        return _train_and_evaluate(config, pathlib.Path(workdir), mesh, log_hook)


def _train_and_evaluate(config, workdir: pathlib.Path, mesh, log_hook) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sslax import augment, checkpointing, diagnostics, eval as sslax_eval, methods, parallel
    from sslax.methods import common
    from sslax.data import pipeline

    start_time = time.time()
    workdir = pathlib.Path(workdir).resolve()
    is_chief = jax.process_index() == 0
    replicated = parallel.replicated(mesh)
    data_sharding = parallel.batch_sharding(mesh)

    method = methods.get(config.method).make(config)
    data_dir = config.data_dir or None
    train_source = pipeline.get_source(
        config.dataset, config.train_split, image_size=config.image_size, data_dir=data_dir
    )
    test_source = pipeline.get_source(
        config.dataset, config.eval_split, image_size=config.image_size, data_dir=data_dir
    )

    rng = jax.random.key(config.seed)
    init_key, step_key = jax.random.split(rng)
    sample = np.zeros((1, config.image_size, config.image_size, 3), np.uint8)
    state_shapes = jax.eval_shape(method.init, init_key, sample)
    state_shardings = parallel.state_shardings(state_shapes, mesh)
    init_state = jax.jit(method.init, out_shardings=state_shardings)(init_key, sample)

    # Restore before writing anything: a workdir of another run is refused untouched.
    config_dict = json.loads(config.to_json())
    checkpoints = checkpointing.Checkpoints(workdir / "checkpoints", max_to_keep=3)
    state = init_state
    restored = checkpoints.restore_newest(init_state, config_dict)
    if restored is not None:
        state = restored[0]
    first_step = int(state.step)

    workdir.mkdir(parents=True, exist_ok=True)
    if is_chief:
        (workdir / "config.json").write_text(config.to_json(indent=2))
    log = _Logger(workdir, is_chief)
    if restored is not None:
        log.print(f"resuming from the checkpoint at step {first_step} in {workdir}")
    signature = checkpointing.state_signature(state_shapes)

    def checkpoint_meta(step: int) -> dict:
        # The data position is the step: batches are a pure function of (seed, step).
        return {
            "step": step,
            "seed": config.seed,
            "data": {"next_step": step, "global_batch_size": config.batch_size},
            "config": config_dict,
            "signature": signature,
        }

    knn_train = pipeline.split_arrays(train_source, max_examples=config.knn_train_examples)
    knn_test = pipeline.split_arrays(test_source, max_examples=config.knn_test_examples)
    # Two augmented views of a fixed held-out subset, made once, for the geometry diagnostics.
    subset = knn_test[0][: config.diagnostics_examples]
    features_of = sslax_eval.feature_extractor(
        method.encode,
        state_shardings,
        mesh,
        largest=max(len(knn_train[0]), len(knn_test[0]), 2 * len(subset)),
    )
    recipe = common.view_recipe(config)
    views = jax.jit(
        lambda key, images: augment.two_views(
            key, images, recipe, indices=jnp.arange(len(subset), dtype=jnp.int32)
        )
    )(jax.random.key(config.seed + 1), subset)
    diagnostic_views = np.asarray(np.round(np.asarray(views) * 255.0), np.uint8)

    def evaluate(state, *, linear: bool) -> dict[str, float]:
        h_train, _ = features_of(state, knn_train[0])
        h_test, z_test = features_of(state, knn_test[0])
        _, z_views = features_of(state, diagnostic_views)
        z1, z2 = np.split(z_views, 2)
        out = {
            "knn_top1": sslax_eval.knn_top1(
                h_train,
                knn_train[1],
                h_test,
                knn_test[1],
                k=config.knn_k,
                temperature=config.knn_temperature,
            ),
            "eval_embedding_std": float(diagnostics.embedding_std(z_test)),
            "alignment": float(diagnostics.alignment(z1, z2)),
            "uniformity": float(diagnostics.uniformity(z1)),
            "effective_rank": float(diagnostics.effective_rank(z1)),
        }
        if linear:
            probe = sslax_eval.linear_probe(h_train, knn_train[1], h_test, knn_test[1])
            out["linear_top1"] = probe["top1"]
        return out

    def flat_pixels(images):
        x = images.reshape(len(images), -1).astype(np.float32)
        return x - x.mean(axis=1, keepdims=True)

    raw_pixels_top1 = sslax_eval.knn_top1(
        flat_pixels(knn_train[0]),
        knn_train[1],
        flat_pixels(knn_test[0]),
        knn_test[1],
        k=config.knn_k,
        temperature=config.knn_temperature,
    )
    t = time.time()
    random_init = evaluate(init_state, linear=False)
    log.print(
        f"random-init network: kNN top-1 {random_init['knn_top1']:.4f} ({time.time() - t:.0f}s)"
    )

    local_rows = parallel.local_batch_rows(data_sharding, config.batch_size)
    batches = pipeline.train_batches(
        train_source,
        global_batch_size=config.batch_size,
        seed=config.seed,
        start_step=first_step,
        end_step=config.total_steps,
        rows=local_rows,
    )

    def to_global(local_batch):
        fields = {k: local_batch[k] for k in ("image", "index")}
        return parallel.global_batch(fields, local_rows, data_sharding, config.batch_size)

    train_step = jax.jit(
        method.train_step,
        donate_argnums=0,
        in_shardings=(state_shardings, data_sharding, replicated),
        out_shardings=(state_shardings, replicated),
    )
    compile_s = 0.0
    eval_results = {}
    if first_step < config.total_steps:
        first_batch = to_global(next(batches))
        t = time.time()
        train_step = train_step.lower(state, first_batch, step_key).compile()
        compile_s = time.time() - t
        log.print(
            f"compiled the train step in {compile_s:.1f}s; training steps "
            f"{first_step}..{config.total_steps} at batch {config.batch_size} on "
            f"{jax.device_count()} device(s) of {jax.process_count()} process(es), mesh "
            f"{dict(mesh.shape)}"
        )

        pending, throughput = [], []  # pending: (step, metrics) not yet fetched to the host
        interval_start, interval_first = time.time(), first_step
        train_start = time.time()
        step = first_step
        global_batch = first_batch
        preemption = _PreemptionWatch()
        all_finite = jax.jit(_all_finite)
        collapse = _CollapseWatch(config, log)
        last_saved = first_step if restored is not None else None
        try:
            while True:
                state, metrics = train_step(state, global_batch, step_key)
                step += 1
                pending.append((step, metrics))
                preempted = preemption.reached(step)
                log_now = step % config.log_every == 0 or step == config.total_steps
                save_now = (
                    step % config.checkpoint_every == 0 or step == config.total_steps or preempted
                )
                if log_now or save_now:
                    # Host fetches happen only here; every step's loss and gradient norm are
                    # checked before anything is saved, so no checkpoint holds a diverged state.
                    pending = [(s, jax.device_get(m)) for s, m in pending]
                    _check_finite(pending, last_saved, workdir)
                if log_now:
                    fetched = [m for _, m in pending]
                    pending = []
                    now = time.time()
                    images_per_s = (
                        (step - interval_first) * config.batch_size / (now - interval_start)
                    )
                    throughput.append(images_per_s)
                    record = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                    record["images_per_s"] = images_per_s
                    if log_hook is not None:
                        record.update(log_hook(step, state))
                    log.write(step, record)
                    eta = (config.total_steps - step) * (now - train_start) / (step - first_step)
                    log.print(
                        f"step {step:>{len(str(config.total_steps))}}/{config.total_steps} | "
                        f"loss {record['loss']:.4f} | emb std {record['embedding_std']:.4f} | "
                        f"{images_per_s:,.0f} img/s | ETA {_fmt_duration(eta)}"
                    )
                    collapse.update(step, record["embedding_std"])
                    interval_start, interval_first = time.time(), step
                if save_now:
                    if not bool(all_finite(state)):
                        raise DivergenceError(
                            f"training diverged: non-finite parameters or optimizer state "
                            f"after step {step}; nothing non-finite was saved and "
                            + _kept(last_saved, workdir)
                        )
                    checkpoints.save(step, state, checkpoint_meta(step))
                    last_saved = step
                if preempted:
                    checkpoints.wait_until_finished()
                    log.print(
                        f"preempted: saved the checkpoint at step {step} in {workdir}; "
                        "run the same command again to resume"
                    )
                    break
                if (config.eval_every and step % config.eval_every == 0) or (
                    step == config.total_steps
                ):
                    eval_results = evaluate(
                        state, linear=config.eval_linear_probe or step == config.total_steps
                    )
                    log.write(step, eval_results)
                    log.print(
                        f"step {step}: kNN top-1 {eval_results['knn_top1']:.4f}"
                        + (
                            f", linear top-1 {eval_results['linear_top1']:.4f}"
                            if "linear_top1" in eval_results
                            else ""
                        )
                        + f" | alignment {eval_results['alignment']:.3f}, uniformity "
                        f"{eval_results['uniformity']:.3f}, effective rank "
                        f"{eval_results['effective_rank']:.1f}"
                    )
                    interval_start = time.time()  # evaluation time is not training throughput
                if step >= config.total_steps:
                    break
                global_batch = to_global(next(batches))
        finally:
            preemption.close()
            checkpoints.wait_until_finished()
        if preemption.requested:
            checkpoints.close()
            log.close()
            return {"preempted_at_step": step, "workdir": str(workdir)}
    else:
        log.print(f"the checkpoint is already at step {first_step} >= total_steps; evaluating it")
        throughput = []
        collapse = None
        eval_results = evaluate(state, linear=True)
    checkpoints.wait_until_finished()
    checkpoints.close()

    losses_logged = [r["loss"] for r in log.history if "loss" in r]
    results = {
        "method": config.method,
        "dataset": config.dataset,
        "model": config.model,
        "steps": int(state.step),
        "batch_size": config.batch_size,
        "final_loss": losses_logged[-1] if losses_logged else None,
        "knn_top1": eval_results["knn_top1"],
        "linear_top1": eval_results.get("linear_top1"),
        "knn_top1_random_init": random_init["knn_top1"],
        "knn_top1_raw_pixels": raw_pixels_top1,
        "embedding_std": eval_results["eval_embedding_std"],
        "embedding_std_random_init": random_init["eval_embedding_std"],
        "images_per_s": float(np.median(throughput)) if throughput else None,
        "compile_s": compile_s,
        "params_checksum": params_checksum(state.params),
        "collapse_warning_step": collapse.warned_at if collapse else None,
        "wall_time_s": time.time() - start_time,
        "workdir": str(workdir),
    }
    if is_chief:
        _plot(log.history, workdir / "curves.png")
        (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log.close()
    _print_summary(results, log)
    return results


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
        ("kNN top-1, random init", fmt(results["knn_top1_random_init"], ".4f")),
        ("kNN top-1, raw pixels", fmt(results["knn_top1_raw_pixels"], ".4f")),
        ("embedding std", f"{results['embedding_std']:.4f} (collapsed: 0)"),
        ("images / s", fmt(results["images_per_s"], ",.0f")),
        ("wall time", _fmt_duration(results["wall_time_s"])),
        ("workdir", results["workdir"]),
    ]
    width = max(len(k) for k, _ in rows)
    log.print("\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows))


def _fail(message: str, code: int = 2) -> None:
    print(f"sslax.train: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, but any flag or config-override error is one line and exit code 2."""
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # flags.Error, and the KeyError/TypeError of config overrides
        message = str(e)
        if "Traceback" in message:
            # A config file's get_config() raised: ml_collections wraps the whole traceback
            # into the flag error; its last line is the exception that says what is wrong.
            head = message.split("Traceback")[0].strip()
            last = [line for line in message.splitlines() if line.strip()][-1].strip()
            message = f"{head} {last}"
        _fail(message)


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
    from sslax.data import pipeline

    from sslax import checkpointing

    try:
        train_and_evaluate(config, workdir)
    except (pipeline.DatasetError, checkpointing.IncompatibleCheckpoint) as e:
        _fail(e)  # a TFDS dataset not prepared yet; a workdir of another run
    except DivergenceError as e:
        _fail(e, code=1)


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
        "Seconds before the others give up on a process that died or never started.",
        lower_bound=1,
    )


def run() -> None:
    """The command line: flags are defined here, not at import, so importing has no effects."""
    try:
        # Loading the config file and applying --config.* overrides happens right here, when
        # the flag is defined, so a bad override surfaces as an exception of this call.
        config_flag = config_flags.DEFINE_config_file(
            "config", str(DEFAULT_CONFIG), "Config file (a get_config() module).", lock_config=True
        )
    except (KeyError, AttributeError) as e:
        field = str(e).strip("\"'")
        _fail(f"unknown config field {field!r} in a --config.{field} override")
    except Exception as e:
        _fail(e)
    workdir_flag = flags.DEFINE_string(
        "workdir", None, "Run folder; default: a new folder under ./runs/."
    )
    _define_distributed_flags()
    app.run(
        functools.partial(main, config_flag=config_flag, workdir_flag=workdir_flag),
        flags_parser=_parse_flags,
    )


if __name__ == "__main__":
    run()
