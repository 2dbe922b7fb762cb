"""SupCon (Khosla et al. 2020, arXiv 2004.11362): the supervised contrastive baseline.

SimCLR's two views, encoder and projection head, with the labels deciding the positives: every
other view of an image of the same class attracts an anchor, every view of another class
repels it (:func:`sslax.losses.supcon_loss`, the paper's "out" form). It trains through the
same loop as the self-supervised methods, so their features can be compared against what
labels teach under the same network, views and budget. The only method that reads
``batch["label"]``; labels come from the dataset (the built-in one, TFDS, or a photo folder's
class directories).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from sslax import losses, parallel
from sslax.methods import common


def defaults() -> ml_collections.ConfigDict:
    """SupCon has no settings beyond the shared ``temperature`` and projector."""
    return ml_collections.ConfigDict()


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    del config, num_batch_shards  # the shared fields are checked by validate_config


def global_supcon_loss(z: jax.Array, labels: jax.Array, *, temperature: float) -> jax.Array:
    """The loss over the global batch; under a mesh, each device's anchors against gathered
    views and labels (:func:`jax.shard_map`), so nothing else crosses devices.

    Left to the partitioner, the ``[2N, 2N]`` same-label mask was built in another layout and
    moved between devices (an all-to-all of 2 KiB per device at batch 64 on 8 devices).
    """
    axes, _ = parallel.batch_shards_in_context()
    if not axes:
        return losses.supcon_loss(z, labels, temperature=temperature)

    def local_loss(z, labels):
        return losses.supcon_loss(z, labels, temperature=temperature, axis_name=axes)

    return jax.shard_map(local_loss, in_specs=(P(axes), P(axes)), out_specs=P())(z, labels)


def make(config: ml_collections.ConfigDict) -> common.Method:
    model = common.encoder(config)
    schedule = common.learning_rate_schedule(config)
    tx = common.optimizer(config, schedule)
    recipe = common.view_recipe(config)
    temperature = config.temperature

    def train_step(state, batch, rng):
        views = common.two_views(common.step_key(rng, state.step), batch, recipe)

        def loss_fn(params):
            (_, z), updated = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                common.flatten_views(views),
                train=True,
                mutable=["batch_stats"],
            )
            loss = global_supcon_loss(
                common.per_image(z, 2), batch["label"], temperature=temperature
            )
            return loss, (z, updated["batch_stats"])

        (loss, (z, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        metrics = common.step_metrics(loss, z, grads, schedule(state.step))
        # How many positives an anchor has besides its own other view: what labels add.
        same = batch["label"][:, None] == batch["label"][None, :]
        metrics["same_class_images"] = jnp.mean(jnp.sum(same, axis=1) - 1.0).astype(jnp.float32)
        return new_state, metrics

    return common.Method(
        recipe=recipe,
        init=common.state_initializer(model, tx),
        train_step=train_step,
        encode=common.encoder_of(model),
        uses_labels=True,
    )
