"""SimCLR (Chen et al. 2020, arXiv 2002.05709): InfoNCE between two views of every image.

Both views go through one encoder (backbone f, projection head g); the loss on z = g(f(x))
treats view i and view i+N as positives and every other view in the global batch as a
negative. BatchNorm sees all 2N views at once, over the whole global batch.
"""

from __future__ import annotations

import jax
import ml_collections

from sslax import augment, losses
from sslax.methods import common


def defaults() -> ml_collections.ConfigDict:
    """SimCLR's own hyperparameters: none beyond the shared ``temperature`` and projector."""
    return ml_collections.ConfigDict()


def make(config: ml_collections.ConfigDict) -> common.Method:
    model = common.encoder(config)
    schedule = common.learning_rate_schedule(config)
    tx = common.optimizer(config, schedule)
    recipe = common.view_recipe(config)
    temperature = config.temperature

    def train_step(state, batch, rng):
        step_key = jax.random.fold_in(rng, state.step)
        views = augment.two_views(step_key, batch["image"], recipe, indices=batch["index"])
        n = batch["image"].shape[0]

        def loss_fn(params):
            (_, z), updated = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                views,
                train=True,
                mutable=["batch_stats"],
            )
            loss = losses.info_nce(z[:n], z[n:], temperature=temperature)
            return loss, (z, updated["batch_stats"])

        (loss, (z, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        return new_state, common.step_metrics(loss, z, grads, schedule(state.step))

    return common.Method(
        init=common.state_initializer(model, tx),
        train_step=train_step,
        encode=common.encoder_of(model),
    )
