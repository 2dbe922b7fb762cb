"""SwAV (Caron et al. 2020, arXiv 2006.09882): swapping assignments between multiple views.

Every crop's projection z (backbone, MLP head, L2-normalised) is scored against K learnable
prototypes c_k (unit vectors: re-normalised before every step, as the official code does). The
two global crops get codes q by Sinkhorn-Knopp, an equal partition of the global batch over
the prototypes (:func:`sslax.losses.sinkhorn_knopp`, epsilon 0.05, 3 rounds); every other crop
predicts them from its own scores, softmax(z . c / tau) (:func:`sslax.losses.swav_loss`).
Clustering and representation are learned together, with no pairwise comparison of images.

Details after the official ``main_swav.py``: the prototypes are frozen for the first
``freeze_prototypes_steps`` (their gradient dropped, the optimiser untouched: their random
start stays put while the features organise); multi-crop (two global crops, ``num_local``
small ones through the same network, BatchNorm statistics per crop size); and, for small
batches, a queue of the last ``queue_size`` projections of each global crop whose scores join
the batch's in Sinkhorn-Knopp from ``queue_start_step`` on (their codes are dropped): at batch
256 an equal partition over 3000 prototypes means nothing without more samples.

Metrics: ``code_entropy`` (per-image entropy of the first crop's codes: near 0 for confident
assignments), ``prototypes_used`` (exp of the entropy of the batch's mean prediction
softmax(z . c / tau): how many prototypes the predictions spread over; 1 is collapse),
``queue_in_use``.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import augment, diagnostics, losses, optim
from sslax.methods import common
from sslax.methods.dino import MultiCropEncoder


def defaults() -> ml_collections.ConfigDict:
    """SwAV's own settings at the shapes scale (ImageNet values in swav_imagenet.py)."""
    c = ml_collections.ConfigDict()
    c.num_prototypes = 300  # official: 3000
    c.epsilon = 0.05
    c.sinkhorn_iters = 3
    c.freeze_prototypes_steps = 100  # official: one epoch (5005 steps at batch 256)
    # The queue of projections (per global crop), used from queue_start_step on; 0: no queue.
    c.queue_size = 0
    c.queue_start_step = 0
    # Multi-crop: num_local crops of local_size px, area in [local_min_scale, crop_min_scale]
    # (the global crops' lower bound); the global crops are image_size px.
    c.num_local = 4
    c.local_size = 16
    c.local_min_scale = 0.05
    return c


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    section = config.swav
    common.check_section(
        config,
        "swav",
        {
            "num_prototypes": common.AT_LEAST_ONE,
            "epsilon": common.POSITIVE,
            "sinkhorn_iters": common.AT_LEAST_ONE,
            "freeze_prototypes_steps": common.NON_NEGATIVE,
            "queue_size": common.NON_NEGATIVE,
            "queue_start_step": common.NON_NEGATIVE,
            "num_local": common.NON_NEGATIVE,
            "local_size": common.AT_LEAST_ONE,
            "local_min_scale": (lambda v: 0 < v <= 1, "in (0, 1]"),
        },
    )
    if section.queue_size % config.batch_size:
        raise ValueError(
            f"swav.queue_size {section.queue_size} must be 0 or a multiple of the global "
            f"batch_size {config.batch_size}: each step enqueues one projection per image"
        )
    if section.num_local:
        if section.local_size > config.image_size:
            raise ValueError(
                f"swav.local_size must be <= image_size {config.image_size} (local crops are "
                f"smaller), got {section.local_size}"
            )
        if section.local_min_scale > config.crop_min_scale:
            raise ValueError(
                f"swav.local_min_scale {section.local_min_scale} must be <= crop_min_scale "
                f"{config.crop_min_scale}, the local crops' largest area"
            )


@flax.struct.dataclass
class SwAVState:
    """TrainState (encoder and prototypes) plus the queue of global-crop projections."""

    step: jax.Array
    params: Any  # {"encoder": ..., "prototypes": [D, K]}
    batch_stats: Any
    opt_state: Any
    # [2, Q, D] float32 unit rows, newest first; None without a queue (orbax saves no empty
    # arrays).
    queue: jax.Array | None


def recipe_of(config: ml_collections.ConfigDict) -> augment.Recipe:
    section = config.swav
    return augment.swav_multicrop_recipe(
        config.image_size,
        section.local_size,
        section.num_local,
        strength=config.augment_strength,
        blur=config.augment_blur,
        global_scale=(config.crop_min_scale, 1.0),
        local_scale=(section.local_min_scale, config.crop_min_scale),
    )


def normalize_prototypes(params):
    """Unit prototypes (columns of the [D, K] matrix), before each step as official SwAV."""
    return {**params, "prototypes": common.l2_normalize(params["prototypes"].T).T}


def optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule):
    """``config.optimizer``, the prototypes frozen for their first steps (gradient dropped)."""
    frozen = config.swav.freeze_prototypes_steps

    def group(offset: int):
        return optim.make_optimizer(
            config.optimizer,
            lambda count: schedule(count + offset),
            weight_decay=config.weight_decay,
            momentum=config.momentum,
        )

    def labels(params):
        return {
            "encoder": jax.tree.map(lambda _: "rest", params["encoder"]),
            "prototypes": "prototypes",
        }

    return optax.multi_transform(
        {"prototypes": optim.frozen_for(frozen, group(frozen)), "rest": group(0)}, labels
    )


def make(config: ml_collections.ConfigDict) -> common.Method:
    check_config(config)
    section = config.swav
    model = MultiCropEncoder(backbone=common.backbone(config), head=common.encoder(config).head)
    schedule = common.learning_rate_schedule(config)
    tx = optimizer(config, schedule)
    recipe = recipe_of(config)
    sinkhorn = dict(epsilon=section.epsilon, num_iters=section.sinkhorn_iters)

    def init(rng, images):
        model_key, proto_key = jax.random.split(rng)
        enc_params, batch_stats = common.init_variables(model, model_key, images)
        prototypes = jax.random.normal(proto_key, (config.proj_dim, section.num_prototypes))
        params = normalize_prototypes({"encoder": enc_params, "prototypes": prototypes})
        return SwAVState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats={"encoder": batch_stats},
            opt_state=tx.init(params),
            queue=(
                jnp.zeros((2, section.queue_size, config.proj_dim), jnp.float32)
                if section.queue_size
                else None
            ),
        )

    def train_step(state, batch, rng):
        crops = common.batch_views(common.step_key(rng, state.step), batch, recipe)
        params = normalize_prototypes(state.params)
        # From queue_start_step on, and not before the queue is full of real projections.
        queue_full_step = section.queue_size // config.batch_size
        use_queue = state.step >= max(section.queue_start_step, queue_full_step)

        def loss_fn(params):
            (_, z), updated = model.apply(
                {"params": params["encoder"], "batch_stats": state.batch_stats["encoder"]},
                crops,
                train=True,
                mutable=["batch_stats"],
                method=MultiCropEncoder.multi_crop,
            )
            z = common.l2_normalize(z)  # [N, V, D]
            prototypes = params["prototypes"]
            scores = jnp.einsum("nvd,dk->vnk", z, prototypes, precision="highest")

            def loss_of(queue_scores):
                return losses.swav_loss(
                    scores, queue_scores=queue_scores, temperature=config.temperature, **sinkhorn
                )

            if section.queue_size:
                queue_scores = jnp.einsum(
                    "aqd,dk->aqk",
                    state.queue,
                    jax.lax.stop_gradient(prototypes),
                    precision="highest",
                )
                loss = jax.lax.cond(use_queue, loss_of, lambda _: loss_of(None), queue_scores)
            else:
                loss = loss_of(None)
            return loss, (z, scores, {"encoder": updated["batch_stats"]})

        (loss, (z, scores, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        new_state = common.apply_gradients(state.replace(params=params), tx, grads, batch_stats)
        queue = state.queue
        if section.queue_size:
            # Newest first, as the official code shifts its queue.
            newest = jax.lax.stop_gradient(jnp.swapaxes(z[:, :2], 0, 1))  # [2, N, D]
            queue = jnp.concatenate([newest, queue[:, : -config.batch_size]], axis=1)
        codes = losses.sinkhorn_knopp(scores[0], **sinkhorn)
        metrics = {
            "loss": loss,
            "embedding_std": diagnostics.embedding_std(z[:, 0]),
            "code_entropy": jnp.mean(diagnostics.entropy(codes)),
            "prototypes_used": jnp.exp(
                diagnostics.entropy(
                    jnp.mean(jax.nn.softmax(scores[0] / config.temperature), axis=0)
                )
            ),
            "queue_in_use": use_queue.astype(jnp.float32),
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state.step),
        }
        return new_state.replace(queue=queue), metrics

    return common.Method(
        recipe=recipe,
        init=init,
        train_step=train_step,
        encode=common.encoder_of(model, "encoder"),
    )
