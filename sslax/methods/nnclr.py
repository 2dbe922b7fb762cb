"""NNCLR (Dwibedi et al. 2021, arXiv 2104.14548): positives from a support set of neighbours.

SimCLR's two views through one encoder (backbone, projector z), plus a predictor p = q(z). The
positive of view 2's prediction is not view 1 itself but the nearest neighbour of view 1's
projection in a support set Q, a FIFO queue of earlier batches' projections: an image is pulled
towards a *different* image that the network already places nearby, which brings more
semantic variation than any augmentation (paper Sec. 3). Following the paper's Algorithm 1,

    NN_1 = NN(z_1, Q),  NN_2 = NN(z_2, Q),
    loss = L(NN_1, p_2) / 2 + L(NN_2, p_1) / 2,
    L(nn, p) = cross-entropy of softmax(nn_i . p_j / tau over j) at j = i,

with every vector L2-normalised, the neighbour found by cosine similarity and treated as a
constant (no gradient reaches the queue or the neighbour), and z_1 of the batch enqueued after
the step. Under a sharded batch the neighbours of each device's rows come from the whole
(replicated) queue and the softmax runs over the global batch.

Metrics: ``neighbour_cosine`` (z_1 to its neighbour: how close the support set's best match
is) and ``neighbours_agree_rate`` (how often the two views of an image find the same
neighbour).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import diagnostics, losses
from sslax.methods import common
from sslax.models import MLPHead


def defaults() -> ml_collections.ConfigDict:
    """NNCLR's own settings at the shapes scale (paper: queue 98,304, predictor hidden 4096)."""
    c = ml_collections.ConfigDict()
    c.queue_size = 8192  # support-set rows; a multiple of the global batch
    c.pred_hidden_dim = 512
    c.proj_layers = 3  # the paper's projector: proj_layers - 1 hidden layers of proj_hidden_dim
    return c


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    section, batch = config.nnclr, config.batch_size
    common.check_section(
        config,
        "nnclr",
        {"pred_hidden_dim": common.AT_LEAST_ONE, "proj_layers": common.AT_LEAST_ONE},
    )
    if section.queue_size <= 0 or section.queue_size % batch:
        raise ValueError(
            f"nnclr.queue_size {section.queue_size} must be a positive multiple of the global "
            f"batch_size {batch}: each step enqueues one projection per image and a write must "
            f"not wrap (e.g. queue_size {max(1, section.queue_size // batch) * batch})"
        )
    common.check_batch_size(config, "nnclr", 2, "the other images of the batch are negatives")


@flax.struct.dataclass
class NNCLRState:
    """TrainState (encoder and predictor) plus the support set."""

    step: jax.Array
    params: Any  # {"encoder": ..., "predictor": ...}
    batch_stats: Any
    opt_state: Any
    queue: jax.Array  # [Q, D] float32 unit rows
    queue_ptr: jax.Array  # int32, the next row to overwrite


def nearest_neighbours(z: jax.Array, queue: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The unit row of ``queue`` with the largest cosine to each row of ``z`` (constants), and
    its index.

    >>> queue = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> rows, index = nearest_neighbours(jnp.array([[0.1, 2.0], [-3.0, 0.5]]), queue)
    >>> rows.tolist(), index.tolist()
    ([[0.0, 1.0], [-1.0, 0.0]], [1, 2])
    """
    unit = common.l2_normalize(jax.lax.stop_gradient(z))
    support = common.l2_normalize(jax.lax.stop_gradient(queue))
    index = jnp.argmax(jnp.dot(unit, support.T, precision=jax.lax.Precision.HIGHEST), axis=1)
    return jnp.take(support, index, axis=0), index


def nnclr_loss(nn: jax.Array, p: jax.Array, temperature: float) -> jax.Array:
    """Algorithm 1's L: cross-entropy of row i of ``nn . p^T / tau`` at column i.

    The positive logit is the row-wise product, not the matrix's diagonal: with the batch
    sharded, reading a diagonal would gather indices and values across devices.
    """
    nn, p = common.l2_normalize(nn), common.l2_normalize(p)
    logits = jnp.dot(nn, p.T, precision=jax.lax.Precision.HIGHEST) / temperature
    positive = jnp.sum(nn * p, axis=1) / temperature
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive)


def projector(config: ml_collections.ConfigDict) -> MLPHead:
    """The paper's projector: ``proj_layers - 1`` hidden layers, BatchNorm on the output."""
    return MLPHead(
        hidden_dims=(config.proj_hidden_dim,) * (config.nnclr.proj_layers - 1),
        out_dim=config.proj_dim,
        output_norm=True,
        dtype=common.compute_dtype(config),
    )


def make(config: ml_collections.ConfigDict) -> common.Method:
    section = config.nnclr
    dtype = common.compute_dtype(config)
    encoder = common.encoder(config, projector(config))
    predictor = MLPHead(
        hidden_dims=(section.pred_hidden_dim,), out_dim=config.proj_dim, dtype=dtype
    )
    schedule = common.learning_rate_schedule(config)
    tx = common.optimizer(config, schedule)
    recipe = common.view_recipe(config)
    temperature = config.temperature

    def init(rng, images):
        enc_key, pred_key, queue_key = jax.random.split(rng, 3)
        enc_params, enc_stats = common.init_variables(encoder, enc_key, images)
        pred_vars = predictor.init(pred_key, jnp.zeros((1, config.proj_dim)), train=False)
        params = {"encoder": enc_params, "predictor": pred_vars["params"]}
        # Random unit rows until the first queue_size / batch steps have filled it (as MoCo).
        queue = common.l2_normalize(
            jax.random.normal(queue_key, (section.queue_size, config.proj_dim))
        )
        return NNCLRState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats={"encoder": enc_stats, "predictor": pred_vars["batch_stats"]},
            opt_state=tx.init(params),
            queue=queue,
            queue_ptr=jnp.zeros((), jnp.int32),
        )

    def train_step(state, batch, rng):
        views = common.two_views(common.step_key(rng, state.step), batch, recipe)

        def loss_fn(params):
            (_, z), enc_updated = encoder.apply(
                {"params": params["encoder"], "batch_stats": state.batch_stats["encoder"]},
                common.flatten_views(views),
                train=True,
                mutable=["batch_stats"],
            )
            p, pred_updated = predictor.apply(
                {"params": params["predictor"], "batch_stats": state.batch_stats["predictor"]},
                z,
                train=True,
                mutable=["batch_stats"],
            )
            z1, z2 = jnp.unstack(common.per_image(z, 2), axis=1)
            p1, p2 = jnp.unstack(common.per_image(p, 2), axis=1)
            (nn1, index1), (nn2, index2) = (nearest_neighbours(z, state.queue) for z in (z1, z2))
            loss = (nnclr_loss(nn1, p2, temperature) + nnclr_loss(nn2, p1, temperature)) / 2
            batch_stats = {
                "encoder": enc_updated["batch_stats"],
                "predictor": pred_updated["batch_stats"],
            }
            return loss, (z1, nn1, index1 == index2, batch_stats)

        (loss, (z1, nn1, same, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        queue, queue_ptr = losses.moco_enqueue(
            state.queue, state.queue_ptr, common.l2_normalize(jax.lax.stop_gradient(z1))
        )
        metrics = {
            "loss": loss,
            "embedding_std": diagnostics.embedding_std(z1),
            "neighbour_cosine": jnp.mean(jnp.sum(common.l2_normalize(z1) * nn1, axis=1)),
            "neighbours_agree_rate": jnp.mean(same.astype(jnp.float32)),
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state.step),
        }
        return new_state.replace(queue=queue, queue_ptr=queue_ptr), metrics

    return common.Method(
        recipe=recipe,
        init=init,
        train_step=train_step,
        encode=common.encoder_of(encoder, "encoder"),
    )
