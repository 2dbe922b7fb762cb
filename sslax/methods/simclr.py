"""SimCLR (Chen et al. 2020, arXiv 2002.05709): InfoNCE between two views of every image.

Both views go through one encoder (backbone f, projection head g); the loss on z = g(f(x))
treats view i and view i+N as positives and every other view in the global batch as a
negative. BatchNorm sees all 2N views at once, over the whole global batch.

With ``simclr.loss_chunk_size`` set, the loss runs under :func:`jax.shard_map` over the batch
axes of the mesh in context: each device gathers every view once and walks its own anchors'
similarities in tiles, so no device ever holds the ``[2N, 2N]`` matrix (batches of many
thousands of images). Without a mesh in context it tiles on one device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from sslax import losses, parallel
from sslax.methods import common
from sslax.models import heads


def defaults() -> ml_collections.ConfigDict:
    """SimCLR's own settings beyond the shared ``temperature`` and projector."""
    c = ml_collections.ConfigDict()
    # 0: the dense loss; > 0: tiles of this many views per device (must divide each
    # device's 2N/devices views), memory linear in the batch.
    c.loss_chunk_size = 0
    # The ablation of Sec 4.2: "mlp" (the paper's g, proj_hidden_dim -> proj_dim), "linear"
    # (one Dense to proj_dim) or "none" (the loss on h itself).
    c.projection_head = "mlp"
    return c


PROJECTION_HEADS = ("mlp", "linear", "none")


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    if config.simclr.projection_head not in PROJECTION_HEADS:
        raise ValueError(
            f"simclr.projection_head must be one of {', '.join(PROJECTION_HEADS)}, got "
            f"{config.simclr.projection_head!r}"
        )
    chunk = config.simclr.loss_chunk_size
    if chunk < 0 or (chunk and (2 * config.batch_size) % chunk):
        raise ValueError(
            f"simclr.loss_chunk_size must be 0 (dense) or divide the 2 x batch_size = "
            f"{2 * config.batch_size} views, got {chunk}"
        )
    local_views = 2 * config.batch_size // num_batch_shards
    if chunk and local_views % chunk:
        raise ValueError(
            f"simclr.loss_chunk_size {chunk} must divide the {local_views} views per device "
            f"(2 x batch_size {config.batch_size} over {num_batch_shards} devices)"
        )


def global_info_nce(z1, z2, *, temperature: float, chunk_size: int):
    """The global-batch InfoNCE loss, tiled ``chunk_size`` views at a time on each device."""
    axes, shards = parallel.batch_shards_in_context()
    if not axes:
        return losses.info_nce(z1, z2, temperature=temperature, chunk_size=chunk_size)
    local_views = 2 * z1.shape[0] // shards
    if z1.shape[0] % shards or local_views % chunk_size:
        raise ValueError(
            f"simclr.loss_chunk_size {chunk_size} must divide the {local_views} views per device "
            f"(2 x batch {z1.shape[0]} over {shards} devices)"
        )

    def local_loss(a, b):
        return losses.info_nce(a, b, temperature=temperature, axis_name=axes, chunk_size=chunk_size)

    return jax.shard_map(local_loss, in_specs=(P(axes), P(axes)), out_specs=P())(z1, z2)


def projection_head(config: ml_collections.ConfigDict):
    """The head named by ``simclr.projection_head``; None is common.encoder's MLP default."""
    if config.simclr.projection_head == "linear":
        return heads.MLPHead(
            hidden_dims=(), out_dim=config.proj_dim, dtype=common.compute_dtype(config)
        )
    if config.simclr.projection_head == "none":
        return heads.IdentityHead()
    return None


def make(config: ml_collections.ConfigDict) -> common.Method:
    model = common.encoder(config, projection_head(config))
    schedule = common.learning_rate_schedule(config)
    tx = common.optimizer(config, schedule)
    recipe = common.view_recipe(config)
    temperature = config.temperature
    chunk_size = config.simclr.loss_chunk_size

    def train_step(state, batch, rng):
        step_key = common.step_key(rng, state.step)
        views = common.two_views(step_key, batch, recipe)

        def loss_fn(params):
            (_, z), updated = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                common.flatten_views(views),
                train=True,
                mutable=["batch_stats"],
            )
            z1, z2 = jnp.unstack(common.per_image(z, 2), axis=1)
            if chunk_size:
                loss = global_info_nce(z1, z2, temperature=temperature, chunk_size=chunk_size)
            else:
                loss = losses.info_nce(z1, z2, temperature=temperature)
            return loss, (z, updated["batch_stats"])

        (loss, (z, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        return new_state, common.step_metrics(loss, z, grads, schedule(state.step))

    return common.Method(
        recipe=recipe,
        init=common.state_initializer(model, tx),
        train_step=train_step,
        encode=common.encoder_of(model),
    )
