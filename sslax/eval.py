"""Evaluation of frozen representations: feature extraction, weighted kNN and linear probe.

    python -m sslax.eval --workdir=DIR [--dataset=NAME] [--max_train_examples=N ...] [--factors]

loads the newest checkpoint of a run, extracts backbone features h and projector features z on
the train and held-out splits (jitted, batched and sharded over the run's mesh), and reports kNN
and linear-probe top-1 for h and for z, written to ``DIR/eval.json`` and printed as a table.
On the built-in dataset, ``--factors`` also asks which of the images' nuisances h keeps: kNN
top-1 of the background's texture, the object's position, hue and size beside its shape, for
raw pixels, the random network and the checkpoint.

The kNN classifier is DINO's (Caron et al. 2021, after Wu et al. 2018): cosine similarity to
every training feature, the k most similar vote for their label with weight
exp(similarity / temperature), and the label with the largest total wins. The linear probe is
multinomial logistic regression on frozen, normalised features, fitted by full-batch L-BFGS
(optax), its weight decay chosen on a held-out tenth of the training split.

>>> import numpy as np
>>> train = np.eye(3, dtype=np.float32); labels = np.array([0, 1, 2])
>>> float(knn_top1(train, labels, train + 0.1, labels, k=1, num_classes=3))
1.0
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def extract_features(
    forward: Callable, images: np.ndarray, *, batch_size: int = 1024, sharding=None
) -> tuple[np.ndarray, np.ndarray]:
    """Runs ``forward(images_uint8) -> (h, z)`` over a dataset in fixed-size batches.

    The last batch is padded to the batch size so that ``forward`` compiles once.

    Returns:
      h [N, C] and z [N, D] as float32 numpy arrays.
    """
    n = len(images)
    hs, zs = [], []
    for start in range(0, n, batch_size):
        chunk = images[start : start + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        x = jax.device_put(chunk, sharding) if sharding is not None else chunk
        h, z = forward(x)
        hs.append(np.asarray(h)[: batch_size - pad])
        zs.append(np.asarray(z)[: batch_size - pad])
    return np.concatenate(hs), np.concatenate(zs)


@functools.partial(jax.jit, static_argnames=("k", "num_classes", "chunk"))
def _knn_predict(train, train_labels, test, *, k, temperature, num_classes, chunk):
    train = train / jnp.maximum(jnp.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    test = test / jnp.maximum(jnp.linalg.norm(test, axis=1, keepdims=True), 1e-12)

    def predict(queries):
        sims, idx = jax.lax.top_k(queries @ train.T, k)
        votes = (
            jax.nn.one_hot(train_labels[idx], num_classes) * jnp.exp(sims / temperature)[..., None]
        )
        return jnp.argmax(votes.sum(axis=1), axis=-1)

    # Queries in chunks keep the similarity matrix at chunk x N_train.
    return jax.lax.map(predict, test.reshape(-1, chunk, test.shape[-1])).reshape(-1)


def knn_top1(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 256,
) -> float:
    """Weighted kNN top-1 accuracy of ``test_features`` against a ``train_features`` bank.

    Args:
      train_features: [N, C] memory bank.  train_labels: [N] int labels.
      test_features: [M, C] queries.  test_labels: [M] int labels.
      k: neighbours that vote.  temperature: vote weight exp(cos / temperature).
      num_classes: defaults to max label + 1.

    Returns:
      The fraction of test examples whose predicted label is right.
    """
    if len(train_features) < k:
        raise ValueError(f"kNN needs at least k={k} training features, got {len(train_features)}")
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    m = len(test_features)
    chunk = min(chunk, m)
    pad = -m % chunk
    test = np.concatenate(
        [
            np.asarray(test_features, np.float32),
            np.ones((pad, np.shape(test_features)[1]), np.float32),
        ]
    )
    pred = _knn_predict(
        jnp.asarray(train_features, jnp.float32),
        jnp.asarray(train_labels),
        jnp.asarray(test),
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk=chunk,
    )
    return float(np.mean(np.asarray(pred)[:m] == test_labels))


# --------------------------------------------------------------------------------------------
# Linear probe

WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """L2-normalise rows, then centre and scale each dimension with the training statistics."""

    def unit(x):
        x = np.asarray(x, np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    train = unit(train)
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    return [(x - mean) / std for x in (train, *map(unit, others))]


@functools.partial(jax.jit, static_argnames=("num_classes", "iterations"))
def _fit_softmax(x, y, weight_decay, *, num_classes, iterations):
    """Multinomial logistic regression: mean cross-entropy + weight_decay/2 |W|^2, by L-BFGS."""
    import optax

    params = {
        "w": jnp.zeros((x.shape[1], num_classes), jnp.float32),
        "b": jnp.zeros((num_classes,), jnp.float32),
    }

    def loss(p):
        logits = jnp.dot(x, p["w"], precision=jax.lax.Precision.HIGHEST) + p["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + 0.5 * weight_decay * jnp.sum(p["w"] ** 2)

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(_, carry):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = solver.update(grad, state, p, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(p, updates), state

    params, _ = jax.lax.fori_loop(0, iterations, step, (params, solver.init(params)))
    return params


def _accuracy(params, x, y) -> float:
    logits = np.asarray(x) @ np.asarray(params["w"]) + np.asarray(params["b"])
    return float(np.mean(logits.argmax(axis=1) == np.asarray(y)))


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    num_classes: int | None = None,
    weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
    holdout_fraction: float = 0.1,
    iterations: int = 100,
    seed: int = 0,
) -> dict:
    """Linear-probe top-1 of frozen features: the standard linear evaluation, on CPU or device.

    Features are L2-normalised and standardised with training statistics. For each weight decay,
    a softmax classifier is fitted by full-batch L-BFGS on the training split minus a random
    held-out part and scored on that part; the best weight decay is refitted on the whole
    training split and scored on the test split.

    Args:
      train_features: [N, C].  train_labels: [N] int.  test_features: [M, C].  test_labels: [M].
      num_classes: defaults to max label + 1.
      weight_decays: the sweep.  holdout_fraction: share of the training split held out.
      iterations: L-BFGS iterations per fit.  seed: picks the held-out part.

    Returns:
      ``{"top1": test accuracy, "weight_decay": the chosen one, "holdout_top1": {wd: accuracy}}``.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> labels = rng.integers(0, 4, 400)
      >>> features = np.eye(4)[labels] + 0.1 * rng.standard_normal((400, 4))
      >>> linear_probe(features[:300], labels[:300], features[300:], labels[300:])["top1"]
      1.0
    """
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    n = len(train_features)
    if n != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError("features and labels must have the same number of rows")
    if not 0 < holdout_fraction < 1 or not weight_decays:
        raise ValueError("holdout_fraction must be in (0, 1) and weight_decays non-empty")
    if n < 2:
        raise ValueError(f"the linear probe needs 2 training examples (1 held out), got {n}")
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    holdout = np.random.default_rng(seed).permutation(n)[: max(1, int(n * holdout_fraction))]
    fit = np.setdiff1d(np.arange(n), holdout)
    scores = {}
    x_fit, x_holdout = _standardise(train_features[fit], train_features[holdout])
    for wd in weight_decays:
        params = _fit_softmax(
            jnp.asarray(x_fit),
            jnp.asarray(train_labels[fit]),
            wd,
            num_classes=num_classes,
            iterations=iterations,
        )
        scores[wd] = _accuracy(params, x_holdout, train_labels[holdout])
    best = max(weight_decays, key=lambda wd: (scores[wd], wd))  # ties: the stronger decay
    x_train, x_test = _standardise(train_features, test_features)
    params = _fit_softmax(
        jnp.asarray(x_train),
        jnp.asarray(train_labels),
        best,
        num_classes=num_classes,
        iterations=iterations,
    )
    return {
        "top1": _accuracy(params, x_test, test_labels),
        "weight_decay": best,
        "holdout_top1": scores,
    }


# --------------------------------------------------------------------------------------------
# Features of a trained state, sharded like training


def feature_extractor(encode: Callable, state_shardings, mesh, *, largest: int) -> Callable:
    """``features(state, images) -> (h, z)`` numpy arrays, batches sharded over ``mesh``.

    ``encode(state, uint8 images) -> (h, z)`` is a method's encoder. Every call uses one batch
    size (so one compilation): up to 1024 images, a multiple of the batch shards, no more than
    ``largest``, the most images any call will pass. Features come back replicated, so every
    process of a multi-host run reads them whole.
    """
    from sslax import parallel

    data = parallel.batch_sharding(mesh)
    jitted = jax.jit(
        encode, in_shardings=(state_shardings, data), out_shardings=parallel.replicated(mesh)
    )
    shards = parallel.num_batch_shards(mesh)
    batch = min(max(shards, 1024 // shards * shards), -(-largest // shards) * shards)

    def features(state, images):
        def forward(x):
            return jitted(state, parallel.host_array_to_global(x, data))

        return extract_features(forward, images, batch_size=batch)

    return features


def flat_pixels(images: np.ndarray) -> np.ndarray:
    """[N, H, W, C] uint8 -> [N, H * W * C] float32 pixels less each image's mean: the baseline."""
    x = images.reshape(len(images), -1).astype(np.float32)
    return x - x.mean(axis=1, keepdims=True)


class TrainingEvaluator:
    """What a run measures on held-out data while it trains, set up once per run.

    ``evaluator(state, linear=False)`` gives kNN top-1 of h (``knn_top1``), the embedding std
    of z on the held-out images (``eval_embedding_std``), the alignment, uniformity and effective
    rank of z on two augmented views of the first ``diagnostics_examples`` held-out images
    (views made once, from key ``seed + 1``, so every evaluation sees the same ones), and with
    ``linear`` the linear-probe top-1 of h (``linear_top1``) and, given ``ema_encode`` (the
    method's moving-average network), that network's kNN top-1 (``knn_top1_ema``). kNN and the
    probe train on the first ``knn_train_examples`` images of the training split and test on
    the first ``knn_test_examples`` of the held-out one.
    """

    def __init__(
        self,
        config,
        encode: Callable,
        state_shardings,
        mesh,
        train_source,
        test_source,
        ema_encode: Callable | None = None,
    ):
        from sslax import augment
        from sslax.data import pipeline
        from sslax.methods import common

        self._k, self._temperature = config.knn_k, config.knn_temperature
        workers = pipeline.workers_for(train_source, config.data_workers)
        self._train = pipeline.split_arrays(
            train_source, max_examples=config.knn_train_examples, workers=workers
        )
        self._test = pipeline.split_arrays(
            test_source, max_examples=config.knn_test_examples, workers=workers
        )
        subset = self._test[0][: config.diagnostics_examples]
        largest = max(len(self._train[0]), len(self._test[0]), 2 * len(subset))
        self._features = feature_extractor(encode, state_shardings, mesh, largest=largest)
        self._ema_features = (
            feature_extractor(ema_encode, state_shardings, mesh, largest=largest)
            if ema_encode
            else None
        )
        recipe = common.view_recipe(config)
        indices = jnp.arange(len(subset), dtype=jnp.int32)
        views = jax.jit(lambda key, x: augment.two_views(key, x, recipe, indices=indices))(
            jax.random.key(config.seed + 1), subset
        )
        # Image-major (N, 2, ...) flattened: rows 2i and 2i + 1 are image i's views.
        flat = np.asarray(views).reshape(-1, *views.shape[2:])
        self._views = np.asarray(np.round(flat * 255.0), np.uint8)

    def __call__(self, state, *, linear: bool = False) -> dict[str, float]:
        from sslax import diagnostics

        (train_images, train_labels), (test_images, test_labels) = self._train, self._test
        h_train, _ = self._features(state, train_images)
        h_test, z_test = self._features(state, test_images)
        _, z_views = self._features(state, self._views)
        z1, z2 = z_views[0::2], z_views[1::2]
        out = {
            "knn_top1": self._knn(h_train, h_test),
            "eval_embedding_std": float(diagnostics.embedding_std(z_test)),
            "alignment": float(diagnostics.alignment(z1, z2)),
            "uniformity": float(diagnostics.uniformity(z1)),
            "effective_rank": float(diagnostics.effective_rank(z1)),
        }
        if linear:
            out["linear_top1"] = linear_probe(h_train, train_labels, h_test, test_labels)["top1"]
        if linear and self._ema_features is not None:
            (h_train, _), (h_test, _) = (
                self._ema_features(state, x) for x in (train_images, test_images)
            )
            out["knn_top1_ema"] = self._knn(h_train, h_test)
        return out

    def _knn(self, train_features, test_features) -> float:
        """kNN top-1 of features of the kNN train and test images, with the config's k and tau."""
        (_, train_labels), (_, test_labels) = self._train, self._test
        return knn_top1(
            train_features,
            train_labels,
            test_features,
            test_labels,
            k=self._k,
            temperature=self._temperature,
        )

    def raw_pixels(self) -> dict[str, float]:
        """kNN and linear-probe top-1 of mean-centred raw pixels: what a representation must beat.

        Returns ``{"knn_top1": ..., "linear_top1": ...}``, measured as for the network's h.
        """

        (train_images, train_labels), (test_images, test_labels) = self._train, self._test
        train, test = flat_pixels(train_images), flat_pixels(test_images)
        return {
            "knn_top1": self._knn(train, test),
            "linear_top1": linear_probe(train, train_labels, test, test_labels)["top1"],
        }


def factor_scores(
    features: dict, factors: dict, *, k: int = 20, temperature: float = 0.07
) -> dict[str, dict[str, float]]:
    """kNN top-1 of each factor of variation from each feature set: what a representation keeps.

    Args:
      features: ``{name: (train [N, C], test [M, C])}``, e.g. raw pixels, the random network,
        the trained one.
      factors: ``{"train": {factor: [N] int}, "test": {factor: [M] int}}``, the class among them.

    Returns:
      ``{name: {factor: top-1}}``, with the config's kNN; a factor of n values has chance
      about 1/n.
    """
    return {
        name: {
            factor: knn_top1(
                train,
                factors["train"][factor],
                test,
                factors["test"][factor],
                k=k,
                temperature=temperature,
            )
            for factor in factors["train"]
        }
        for name, (train, test) in features.items()
    }


def scores(features: dict, labels: dict, *, k: int = 20, temperature: float = 0.07) -> dict:
    """kNN and linear-probe top-1 of h and z: ``features[split][kind]``, ``labels[split]``."""
    out = {}
    for kind in ("h", "z"):
        train, test = features["train"][kind], features["test"][kind]
        out[f"knn_top1_{kind}"] = knn_top1(
            train, labels["train"], test, labels["test"], k=k, temperature=temperature
        )
        probe = linear_probe(train, labels["train"], test, labels["test"])
        out[f"linear_top1_{kind}"] = probe["top1"]
        out[f"linear_weight_decay_{kind}"] = probe["weight_decay"]
    return out


# --------------------------------------------------------------------------------------------
# The command line


class EvalError(ValueError):
    """A workdir or flag the evaluation cannot work with; one line, exit code 2."""


def evaluate_checkpoint(
    workdir,
    *,
    dataset: str | None = None,
    train_split: str | None = None,
    eval_split: str | None = None,
    data_dir: str | None = None,
    max_train_examples: int | None = None,
    max_test_examples: int | None = None,
    factors: bool = False,
) -> dict:
    """Evaluates the newest checkpoint in ``workdir``; writes and returns ``eval.json``'s dict.

    With ``factors`` (the built-in dataset only), ``results["factors"]`` also holds kNN top-1 on
    h of the shape and of each nuisance of :data:`sslax.data.shapes.FACTORS`, for raw pixels,
    the randomly initialised network and the checkpoint (:func:`factor_scores`).
    """
    import json

    from ml_collections import ConfigDict

    from sslax import checkpointing, parallel, paths, train
    from sslax.data import pipeline

    try:
        workdir = paths.resolve(workdir)
    except ValueError as e:
        raise EvalError(e) from None
    config_path, checkpoint_dir = workdir / "config.json", workdir / "checkpoints"
    if not config_path.is_file() or not checkpoint_dir.is_dir():
        raise EvalError(f"{workdir} is not a training workdir (no config.json or checkpoints/)")
    config_dict = json.loads(config_path.read_text())
    config = ConfigDict(config_dict)
    dataset = dataset or config.dataset
    train_split = train_split or config.train_split
    eval_split = eval_split or config.eval_split
    data_dir = data_dir if data_dir is not None else (config.data_dir or None)
    if factors and dataset != pipeline.BUILTIN:
        raise EvalError(
            f"--factors needs the built-in dataset {pipeline.BUILTIN!r}, whose nuisances are "
            f"known per image, not {dataset!r}"
        )
    try:
        sources = {}
        for split, name in (("train", train_split), ("test", eval_split)):
            sources[split] = pipeline.get_source(
                dataset,
                name,
                image_size=config.image_size,
                data_dir=data_dir,
                crop_fraction=config.get("crop_fraction", 0.875),
                dct_downscale=config.get("dct_downscale", True),
                classes=getattr(sources.get("train"), "classes", None),
            )
    except pipeline.DatasetError as e:
        raise EvalError(str(e)) from None
    train_size = min(len(sources["train"]), max_train_examples or len(sources["train"]))
    if train_size < max(config.knn_k, 2):
        raise EvalError(
            f"kNN needs the run's knn_k = {config.knn_k} training images and the linear probe 2, "
            f"but {train_size} would be read (split {train_split!r} of "
            f"{len(sources['train'])}, --max_train_examples {max_train_examples})"
        )

    try:
        mesh = parallel.make_mesh(config.mesh)
    except parallel.MeshError as e:
        # The run's mesh was sized for another machine. Inference needs no model sharding to
        # give the same features, so split the data over whatever devices are here.
        mesh = parallel.make_mesh(parallel.DEFAULT_MESH)
        print(f"evaluating on mesh {dict(mesh.shape)}: the run's does not fit here ({e})")
    with jax.set_mesh(mesh):
        program = train.build_program(config, mesh)
        # The network the run started from: the restore target, and --factors' random init.
        initial = program.init(train.run_keys(config.seed)[0])
        store = checkpointing.Checkpoints(checkpoint_dir)
        try:
            restored = store.restore_newest(initial, config_dict, read_only=True)
        except checkpointing.IncompatibleCheckpoint as e:
            raise EvalError(str(e)) from None
        finally:
            store.close()
        if restored is None:
            raise EvalError(f"{checkpoint_dir} holds no readable checkpoint")
        state, step = restored
        limits = {"train": max_train_examples, "test": max_test_examples}
        images, labels = {}, {}
        workers = pipeline.workers_for(sources["train"], config.get("data_workers", -1))
        for split, source in sources.items():
            images[split], labels[split] = pipeline.split_arrays(
                source, max_examples=limits[split], workers=workers
            )
        largest = max(len(x) for x in images.values())
        features_of = feature_extractor(
            program.method.encode, program.state_shardings, mesh, largest=largest
        )
        features = {}
        for split in images:
            h, z = features_of(state, images[split])
            features[split] = {"h": h, "z": z}
        if factors:
            per_set = {
                "raw pixels": [flat_pixels(images[split]) for split in images],
                "random init": [features_of(initial, images[split])[0] for split in images],
                "trained": [features[split]["h"] for split in images],
            }
    results = {
        "checkpoint_step": step,
        "method": config.method,
        "dataset": dataset,
        "train_split": train_split,
        "eval_split": eval_split,
        "train_examples": len(labels["train"]),
        "test_examples": len(labels["test"]),
        **scores(features, labels, k=config.knn_k, temperature=config.knn_temperature),
    }
    if factors:
        truth = _shapes_factors(labels, {"train": train_split, "test": eval_split}, config)
        results["factors"] = factor_scores(
            per_set, truth, k=config.knn_k, temperature=config.knn_temperature
        )
    if jax.process_index() == 0:
        paths.write_text(workdir / "eval.json", json.dumps(results, indent=2) + "\n")
    return results


def _shapes_factors(labels: dict, split_names: dict, config) -> dict:
    """``{split: {factor: [N] int}}``: the class (the shape) and the nuisances of the images read.

    ``split_arrays`` reads the first N images of a split, so the first N factors go with them.
    """
    from sslax.data import shapes

    out = {}
    for split, split_labels in labels.items():
        nuisances = shapes.load_factors(split_names[split], image_size=config.image_size)
        out[split] = {
            "shape": split_labels,
            **{name: values[: len(split_labels)] for name, values in nuisances.items()},
        }
    return out


def format_table(results: dict) -> str:
    """The printed summary: one row per feature, kNN and linear-probe columns."""
    lines = [
        f"{results['method']} at step {results['checkpoint_step']}, {results['dataset']}: "
        f"{results['train_examples']:,} train / {results['test_examples']:,} test images",
        "",
        f"  {'features':<22} {'kNN top-1':>10} {'linear top-1':>13}",
    ]
    for kind, name in (("h", "h (backbone)"), ("z", "z (projection head)")):
        lines.append(
            f"  {name:<22} {results[f'knn_top1_{kind}']:>10.4f} "
            f"{results[f'linear_top1_{kind}']:>13.4f}"
        )
    if "factors" in results:
        from sslax.data import shapes

        names = ["shape", *shapes.FACTORS]
        chances = [1 / shapes.NUM_CLASSES] + [1 / len(v) for v in shapes.FACTORS.values()]
        lines += ["", "  kNN top-1 of each factor of the images, from h:"]
        lines.append(f"  {'':<14}" + "".join(f"{name:>12}" for name in names))
        for row, scores_ in [("chance", dict(zip(names, chances))), *results["factors"].items()]:
            lines.append(f"  {row:<14}" + "".join(f"{scores_[name]:>12.3f}" for name in names))
    return "\n".join(lines)


def _use_tuned_xla_flags_for(workdir: str) -> None:
    """sslax.runtime's XLA:CPU flags for the run's model, before any JAX computation."""
    import json

    from sslax import paths, runtime

    try:
        model = json.loads((paths.resolve(workdir) / "config.json").read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        model = None  # evaluate_checkpoint reports the unreadable workdir
    runtime.use_tuned_xla_flags(model)


def main(argv=None) -> None:
    import sys

    from absl import app, flags, logging

    flags.DEFINE_string("workdir", None, "A training run's workdir.", required=True)
    flags.DEFINE_string("dataset", None, "Dataset to evaluate on (default: the run's).")
    flags.DEFINE_string("train_split", None, "kNN bank / probe training split.")
    flags.DEFINE_string("eval_split", None, "Held-out split.")
    flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
    flags.DEFINE_integer(
        "max_train_examples", None, "Use only this many training images.", lower_bound=1
    )
    flags.DEFINE_integer(
        "max_test_examples", None, "Use only this many test images.", lower_bound=1
    )
    flags.DEFINE_bool(
        "factors",
        False,
        "Built-in dataset: also kNN top-1 of each nuisance (background, position, hue, size) "
        "beside the shape, for raw pixels, the random network and the checkpoint.",
    )

    def fail(message):
        print(f"sslax.eval: error: {' '.join(str(message).split())}", file=sys.stderr)
        sys.exit(2)

    def run(args):
        if len(args) > 1:
            fail(f"unexpected arguments {args[1:]}")
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        f = flags.FLAGS
        _use_tuned_xla_flags_for(f.workdir)
        try:
            results = evaluate_checkpoint(
                f.workdir,
                dataset=f.dataset,
                train_split=f.train_split,
                eval_split=f.eval_split,
                data_dir=f.data_dir,
                max_train_examples=f.max_train_examples,
                max_test_examples=f.max_test_examples,
                factors=f.factors,
            )
        except EvalError as e:
            fail(e)
        if jax.process_index() == 0:
            print(format_table(results))
            print(f"\nwritten to {f.workdir}/eval.json")

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            fail(e)

    app.run(run, argv=argv, flags_parser=parse)


if __name__ == "__main__":
    main()
