"""What every method shares: the Method interface, the encoder and optimiser from a config."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import augment, diagnostics, optim
from sslax.models import Encoder, MLPHead, backbone_from_config


@flax.struct.dataclass
class TrainState:
    """The whole training state: one pytree, donated to and returned by every step."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class Method:
    """A method's pure functions.

    recipe: the augmentation recipe of its views; the host cuts their crops from photos of
      every size (:class:`sslax.data.images.TrainCrops`).
    init: (rng, images_uint8) -> TrainState.
    train_step: (state, batch, rng) -> (state, metrics); batch holds "index" int32 [N] global
      example indices and either "image" uint8 [N, S, S, 3] (cropped on the device) or the
      host's "crops_<S>" uint8 [N, k, S, S, 3] (:func:`batch_views`); rng is the run's key
      (per-step and per-example keys are folded in from the step and the example index).
    encode: (state, images_uint8) -> (h, z), evaluation mode, no augmentation.
    ema_encode: the same for the method's moving-average network (BYOL's target, MoCo's key
      encoder, DINO's teacher); None for methods without one. Evaluated beside ``encode``:
      DINO's official kNN evaluation reads the teacher, BYOL's and MoCo's the online network.
    uses_labels: the train step reads ``batch["label"]`` int32 [N] (SupCon); the labels of
      every other method stay on the host.
    """

    recipe: augment.Recipe
    init: Callable
    train_step: Callable
    encode: Callable
    # (rng, step) -> the key the train step draws its views from; None: step_key.
    view_key: Callable | None = None
    ema_encode: Callable | None = None
    uses_labels: bool = False

    def views(self, batch: dict, rng: jax.Array, step) -> tuple[jax.Array, ...]:
        """The augmented views the train step makes of ``batch`` at ``step`` (previews)."""
        return batch_views((self.view_key or step_key)(rng, step), batch, self.recipe)


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict):
    return COMPUTE_DTYPES[config.compute_dtype]


def backbone(config: ml_collections.ConfigDict):
    return backbone_from_config(
        config.model,
        width=config.width,
        stem=config.stem,
        patch_size=config.patch_size,
        image_size=config.image_size,
        dtype=compute_dtype(config),
        remat=config.get("remat", "none"),
    )


def encoder(config: ml_collections.ConfigDict, head=None) -> Encoder:
    """Backbone + head; by default SimCLR's projector, ``proj_hidden_dim`` -> ``proj_dim``."""
    if head is None:
        head = MLPHead(
            hidden_dims=(config.proj_hidden_dim,),
            out_dim=config.proj_dim,
            dtype=compute_dtype(config),
        )
    return Encoder(backbone=backbone(config), head=head)


def apply_model(model, params, batch_stats, images, *, train: bool):
    """Runs a BatchNorm-carrying model; returns (outputs, batch_stats after the call)."""
    variables = {"params": params, "batch_stats": batch_stats}
    if not train:
        return model.apply(variables, images, train=False), batch_stats
    outputs, updated = model.apply(variables, images, train=True, mutable=["batch_stats"])
    return outputs, updated["batch_stats"]


def ema_update(target, online, momentum):
    """target <- momentum * target + (1 - momentum) * online, leaf by leaf (MoCo, BYOL, DINO).

    >>> float(ema_update(jnp.float32(0.40), jnp.float32(0.50), 0.999))  # the seed's example
    0.4000999927520752
    """
    return optax.incremental_update(online, target, step_size=1.0 - momentum)


def cosine_ema_momentum(step, *, base: float, total_steps: int):
    """BYOL's schedule: 1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2, base -> 1."""
    progress = jnp.minimum(step / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    peak = optim.scaled_learning_rate(
        config.learning_rate, batch_size=config.batch_size, rule=config.lr_scaling
    )
    return optim.warmup_cosine(
        peak, warmup_steps=config.warmup_steps, total_steps=config.total_steps
    )


def optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule):
    return optim.make_optimizer(
        config.optimizer, schedule, weight_decay=config.weight_decay, momentum=config.momentum
    )


# Rules for check_section: (test, the allowed values in words).
UNIT_INTERVAL = (lambda v: 0 <= v <= 1, "in [0, 1]")
AT_LEAST_ONE = (lambda v: v >= 1, ">= 1")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
POSITIVE = (lambda v: v > 0, "> 0")


def check_section(config: ml_collections.ConfigDict, method: str, rules: dict) -> None:
    """Raises ValueError naming the first field of ``config[method]`` that breaks its rule.

    ``rules`` maps a field to ``(test, allowed)``, e.g. ``{"ema_base": UNIT_INTERVAL}``.

    >>> c = ml_collections.ConfigDict({"byol": {"ema_base": 1.5}})
    >>> check_section(c, "byol", {"ema_base": UNIT_INTERVAL})
    Traceback (most recent call last):
    ValueError: byol.ema_base must be in [0, 1], got 1.5
    """
    section = config[method]
    for name, (ok, allowed) in rules.items():
        if not ok(section[name]):
            raise ValueError(f"{method}.{name} must be {allowed}, got {section[name]}")


def check_batch_size(config: ml_collections.ConfigDict, method: str, minimum: int, why: str):
    """Raises ValueError when the global batch is smaller than ``method`` can work with."""
    if config.batch_size < minimum:
        raise ValueError(f"{method} needs batch_size >= {minimum} ({why}), got {config.batch_size}")


RECIPES = ("simclr", "moco_v2", "byol", "crop")


def view_recipe(config: ml_collections.ConfigDict) -> augment.Recipe:
    """The two-view recipe named by ``config.recipe``, with ``crop_min_scale`` applied."""
    if config.recipe == "simclr":
        recipe = augment.simclr_recipe(
            config.image_size, strength=config.augment_strength, blur=config.augment_blur
        )
    elif config.recipe == "moco_v2":
        recipe = augment.moco_v2_recipe(config.image_size)
    elif config.recipe == "byol":
        recipe = augment.byol_recipe(config.image_size)
    elif config.recipe == "crop":
        recipe = augment.crop_recipe(config.image_size)
    else:
        raise ValueError(f"unknown recipe {config.recipe!r}; choose one of {', '.join(RECIPES)}")
    views = tuple(
        dataclasses.replace(v, crop_scale=(config.crop_min_scale, 1.0)) for v in recipe.views
    )
    return dataclasses.replace(recipe, views=views)


def step_key(rng: jax.Array, step) -> jax.Array:
    """The key of a step: the run's key folded with the step number."""
    return jax.random.fold_in(rng, step)


def split_step_key(rng: jax.Array, step) -> tuple[jax.Array, jax.Array]:
    """The step's view key and a second key, for methods that draw more than views."""
    return tuple(jax.random.split(step_key(rng, step)))


def first_of_split_step_key(rng: jax.Array, step) -> jax.Array:
    """The view key of :func:`split_step_key` (a ``Method.view_key``)."""
    return split_step_key(rng, step)[0]


def batch_views(
    key: jax.Array, batch: dict, recipe: augment.Recipe, views: tuple[int, ...] | None = None
) -> tuple[jax.Array, ...]:
    """The augmented views of a training batch, grouped by size as :func:`augment.multi_crop`.

    Fixed-size images (``batch["image"]``) are cropped on the device; photos of every size
    arrive as the host's crops (``batch["crops_<S>"]``) and are finished there
    (:func:`augment.finish_crops`). Both draw from ``key`` and the examples' global indices.
    """
    if "image" in batch:
        return augment.multi_crop(key, batch["image"], recipe, indices=batch["index"], views=views)
    crops = tuple(batch[f"crops_{size}"] for size in recipe.sizes)
    return augment.finish_crops(key, crops, recipe, indices=batch["index"], views=views)


def two_views(key: jax.Array, batch: dict, recipe: augment.Recipe) -> jax.Array:
    """(N, 2, S, S, 3) float32 views of a two-view recipe (:func:`batch_views`)."""
    (views,) = batch_views(key, batch, recipe)
    return views


def images_to_float(images: jax.Array) -> jax.Array:
    """uint8 images -> float32 in [0, 1], the range the augmentations produce."""
    return images.astype(jnp.float32) / 255.0


def init_variables(model, rng, images):
    variables = model.init(rng, images_to_float(images), train=False)
    return variables["params"], variables.get("batch_stats", {})


def flatten_views(views: jax.Array) -> jax.Array:
    """``(N, k, ...)`` views (:mod:`sslax.augment`'s image-major layout) -> the ``(N k, ...)``
    batch a network sees, row ``i k + v`` being view ``v`` of image ``i``.

    With the batch sharded over images every device keeps its own images' views: the
    reshape merges the sharded image axis with the local view axis, which moves nothing.
    """
    return views.reshape(-1, *views.shape[2:])


def per_image(outputs: jax.Array, k: int) -> jax.Array:
    """``(N k, ...)`` outputs of :func:`flatten_views`'s batch -> ``(N, k, ...)``.

    ``per_image(z, 2)[:, v]`` is the ``[N, D]`` embeddings of view ``v``, still local.
    """
    return outputs.reshape(-1, k, *outputs.shape[1:])


def embed_views_separately(model, params, batch_stats, views):
    """Runs each view of ``views`` ``(N, 2, ...)`` through ``model`` in train mode.

    One pass per view, as the official Barlow Twins and VICReg code calls the network, gives
    each view its own BatchNorm statistics; the running averages take the mean of the two
    views' statistics. Returns z1, z2 ([N, D] each) and the new batch_stats.

    The passes are an unrolled scan over the view axis, not a ``vmap``: batching a convolution
    merges the mapped axis in front of the image axis, a view-major batch that the partitioner
    can only build by gathering every view on every device. Unrolled, not a loop
    (``lax.map``): XLA:CPU ran the convolutions of a loop body 8x slower (98 against 795
    images/s for the laptop Barlow Twins step). Each pass leaves its own partial gradient; the
    TPU compiler sums them before the one all-reduce, XLA:CPU reduces each (tests/
    test_collectives.py).
    """

    def forward(carry, x):
        return carry, apply_model(model, params, batch_stats, x, train=True)

    _, ((_, z), updated) = jax.lax.scan(forward, None, jnp.swapaxes(views, 0, 1), unroll=True)
    return z[0], z[1], jax.tree.map(lambda s: jnp.mean(s, axis=0), updated)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    """Unit rows (float32), a zero row staying zero, as torch's ``F.normalize``.

    >>> l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def state_initializer(model, tx) -> Callable:
    """``init(rng, images) -> TrainState`` for methods whose state is one network."""

    def init(rng, images):
        params, batch_stats = init_variables(model, rng, images)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
        )

    return init


# Where BYOL and MoCo keep their moving-average network in the state (encoder_of's fields).
TARGET_FIELDS = {"params": "target_params", "batch_stats": "target_batch_stats"}


def encoder_of(
    model, part: str | None = None, *, params: str = "params", batch_stats: str = "batch_stats"
) -> Callable:
    """``encode(state, images) -> (h, z)`` in evaluation mode.

    ``params`` and ``batch_stats`` name the state's fields that hold ``model``'s variables
    (``"target_params"``, ``"target_batch_stats"`` for a moving-average network); ``part``
    names their entry when those fields carry more networks (``"encoder"`` beside a predictor).
    """

    def encode(state, images):
        variables = {
            "params": getattr(state, params),
            "batch_stats": getattr(state, batch_stats),
        }
        if part is not None:
            variables = {name: tree[part] for name, tree in variables.items()}
        return model.apply(variables, images_to_float(images), train=False)

    return encode


def apply_gradients(state, tx, grads, batch_stats):
    """One optimiser update: the state with new params, opt_state and batch_stats, step + 1."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )


def step_metrics(loss, embeddings, grads, learning_rate) -> dict[str, jax.Array]:
    """The metrics every method logs; methods add their own."""
    return {
        "loss": loss,
        "embedding_std": diagnostics.embedding_std(embeddings),
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": learning_rate,
    }
