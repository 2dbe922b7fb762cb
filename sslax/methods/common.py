"""What every method shares: the Method interface, the encoder and optimiser from a config."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import augment, optim
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

    init: (rng, images_uint8) -> TrainState.
    train_step: (state, batch, rng) -> (state, metrics); batch holds "image" uint8 [N, S, S, 3]
      and "index" int32 [N] global example indices; rng is the run's key (per-step and
      per-example keys are folded in from the step and the example index).
    encode: (state, images_uint8) -> (h, z), evaluation mode, no augmentation.
    """

    init: Callable
    train_step: Callable
    encode: Callable


def encoder(config: ml_collections.ConfigDict) -> Encoder:
    backbone = backbone_from_config(
        config.model,
        width=config.width,
        stem=config.stem,
        patch_size=config.patch_size,
        image_size=config.image_size,
    )
    head = MLPHead(hidden_dims=(config.proj_hidden_dim,), out_dim=config.proj_dim)
    return Encoder(backbone=backbone, head=head)


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


def view_recipe(config: ml_collections.ConfigDict) -> augment.Recipe:
    recipe = augment.simclr_recipe(
        config.image_size, strength=config.augment_strength, blur=config.augment_blur
    )
    views = tuple(
        dataclasses.replace(v, crop_scale=(config.crop_min_scale, 1.0)) for v in recipe.views
    )
    return dataclasses.replace(recipe, views=views)


def images_to_float(images: jax.Array) -> jax.Array:
    """uint8 images -> float32 in [0, 1], the range the augmentations produce."""
    return images.astype(jnp.float32) / 255.0


def init_variables(model, rng, images):
    variables = model.init(rng, images_to_float(images), train=False)
    return variables["params"], variables.get("batch_stats", {})
