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


def global_supcon_loss(
    z: jax.Array, labels: jax.Array, *, temperature: float
) -> tuple[jax.Array, jax.Array]:
    """The loss over the global batch, and how many other images share each image's label (a
    mean). Under a mesh, each device's anchors against gathered views and labels
    (:func:`jax.shard_map`), so nothing else crosses devices.

    Left to the partitioner, ``[N, N]`` same-label masks were built in another layout and moved
    between devices (an all-to-all of 2 KiB per device at batch 64 on 8 devices).
    """
    axes, _ = parallel.batch_shards_in_context()

    def loss_and_partners(z, labels, axis_name=None):
        loss = losses.supcon_loss(z, labels, temperature=temperature, axis_name=axis_name)
        every = labels if axis_name is None else jax.lax.all_gather(labels, axis_name, tiled=True)
        partners = jnp.mean(jnp.sum(labels[:, None] == every[None, :], axis=1) - 1.0)
        return loss, partners if axis_name is None else jax.lax.pmean(partners, axis_name)

    if not axes:
        return loss_and_partners(z, labels)
    return jax.shard_map(
        lambda z, labels: loss_and_partners(z, labels, axes),
        in_specs=(P(axes), P(axes)),
        out_specs=(P(), P()),
    )(z, labels)


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
            loss, partners = global_supcon_loss(
                common.per_image(z, 2), batch["label"], temperature=temperature
            )
            return loss, (z, partners, updated["batch_stats"])

        (loss, (z, partners, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        metrics = common.step_metrics(loss, z, grads, schedule(state.step))
        # Other images of the same class in the batch, per image: the positives labels add.
        metrics["same_class_images"] = partners
        return new_state, metrics

    return common.Method(
        recipe=recipe,
        init=common.state_initializer(model, tx),
        train_step=train_step,
        encode=common.encoder_of(model),
        uses_labels=True,
    )
