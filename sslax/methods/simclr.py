"""SimCLR (Chen et al. 2020, arXiv 2002.05709): InfoNCE between two views of every image.

Both views go through one encoder (backbone f, projection head g); the loss on z = g(f(x))
treats view i and view i+N as positives and every other view in the global batch as a
negative. BatchNorm sees all 2N views at once, over the whole global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import augment, diagnostics, losses
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

    def init(rng, images):
        params, batch_stats = common.init_variables(model, rng, images)
        return common.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
        )

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
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        metrics = {
            "loss": loss,
            "embedding_std": diagnostics.embedding_std(z),
            "grad_norm": optax.global_norm(grads),
            "learning_rate": schedule(state.step),
        }
        return new_state, metrics

    def encode(state, images):
        return model.apply(
            {"params": state.params, "batch_stats": state.batch_stats},
            common.images_to_float(images),
            train=False,
        )

    return common.Method(init=init, train_step=train_step, encode=encode)
