"""MoCo v2 (Chen, Fan, Girshick & He 2020, arXiv 2003.04297; facebookresearch/moco).

Momentum contrast (He et al. 2020, arXiv 1911.05722). A query encoder f_q (backbone + MLP head)
is trained by the optimiser; a key encoder f_k is an exponential moving average of it
(parameters and BatchNorm statistics) and gets no gradients. The query q = f_q(view 1) of an
image is contrasted with its key k = f_k(view 2) and with a FIFO queue of K keys of earlier
batches: InfoNCE over K + 1 logits (:func:`sslax.losses.moco_info_nce`). After the update the
batch's normalised keys replace the oldest queue rows. All of it happens inside one jitted step:
forward passes, loss, optimiser update, EMA of the key encoder with the new query parameters,
enqueue. Under a sharded batch the keys array is the global one, so every device enqueues the
keys of every device and the queue stays replicated.

The ImageNet recipe (``experiments/configs/moco_v2_imagenet.py``): ResNet-50, head
Dense(2048)-ReLU-Dense(128) (no BatchNorm in the head), temperature 0.2, momentum 0.999, queue
65,536, SGD lr 0.03 x B/256 at batch 256, weight decay 1e-4, cosine schedule, 200 epochs, the
MoCo v2 augmentations (crop area (0.2, 1), jitter, grayscale, blur).

BatchNorm in the key encoder: keys are computed with batch statistics, as in the official
code, but over ``shuffle_bn_groups`` disjoint random subsets of the global batch rather than
over all of it. This is MoCo's shuffling BN (Sec. 3.3), which the official code gets by
shuffling the batch across its 8 GPUs before their per-GPU BatchNorm. sslax's BatchNorm is
global, and global BN does not remove the leak shuffling BN guards against: a query and its
positive key would be normalised with statistics of the same images while every queued
negative was normalised with those of an earlier batch, so the statistics alone tell the query
which key is its positive (K. He, facebookresearch/moco#46: "SyncBN is not sufficient in the
case of MoCo"). Eval-mode BatchNorm in the key encoder would remove the leak too, but it
normalises with running averages that trail the current weights (the key encoder's are an EMA
of the query encoder's, themselves an EMA over earlier steps), which MoCo never does; grouped
batch statistics keep the official arithmetic. ``shuffle_bn_groups=1`` gives plain global BN
(SyncBN, MoCo v3's choice), for ablations. The query encoder keeps the training loop's global
BN.

Cost across devices: none beyond global BN's. The groups are dealt from the whole batch
(:func:`grouped`), so no image, view or key moves between devices to form them; the key
encoder's BatchNorm all-reduces ``shuffle_bn_groups`` sets of statistics instead of one (2 x
groups x channels floats per layer: 1.6 MiB per step for ResNet-50 with 8 groups,
against the 100 MiB gradient all-reduce). The official code gathers every GPU's images to
shuffle them and scatters the keys back. The price is on the device instead: the key encoder
runs one group at a time, ``shuffle_bn_groups`` forward passes of ``batch / groups`` images
each (smaller matrix work per pass than one pass over the batch).
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import diagnostics, losses
from sslax.methods import common


def defaults() -> ml_collections.ConfigDict:
    """MoCo v2's own hyperparameters at the shapes scale (ImageNet values in the comments).

    The head sizes are the shared ``proj_hidden_dim``/``proj_dim`` (2048/128 on ImageNet) and
    the temperature is the shared ``temperature`` (0.2).
    """
    c = ml_collections.ConfigDict()
    # Key encoder EMA; ImageNet 0.999 over 1M steps. A few hundred steps need a faster key
    # encoder, or the keys stay those of the random initialisation for most of the run.
    c.momentum = 0.99
    # Negatives; ImageNet 65,536. A multiple of the global batch size (one key per image per
    # step); 16 batches of 256 here, about a fifth of the shapes training set.
    c.queue_size = 4096
    # Number of random groups the key encoder's BatchNorm normalises over (the official
    # 8 GPUs); 1 is global BatchNorm, which leaks (module docstring).
    c.shuffle_bn_groups = 8
    c.symmetric = False  # also contrast f_q(view 2) with f_k(view 1), averaging the two losses
    # The anti-collapse switch: False drops the negatives (InfoNCE's denominator), leaving only
    # the alignment term -cos(q, k) / temperature, which a constant encoder minimises.
    c.negatives = True
    return c


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    """Raises ValueError when ``config.moco_v2`` cannot work with the global batch size."""
    section, batch = config.moco_v2, config.batch_size
    if section.queue_size <= 0 or section.queue_size % batch:
        raise ValueError(
            f"moco_v2.queue_size {section.queue_size} must be a positive multiple of the global "
            f"batch_size {batch}: each step enqueues one key per image and a write must not wrap "
            f"(e.g. queue_size {max(1, section.queue_size // batch) * batch})"
        )
    if not 0.0 <= section.momentum <= 1.0:
        raise ValueError(f"moco_v2.momentum must be in [0, 1], got {section.momentum}")
    groups = section.shuffle_bn_groups
    if groups < 1 or batch % groups or batch // groups < 2:
        raise ValueError(
            f"moco_v2.shuffle_bn_groups {groups} must divide the global batch_size {batch} "
            f"into groups of at least 2 images (BatchNorm of one image is constant)"
        )


@flax.struct.dataclass
class MoCoV2State:
    """TrainState plus the key encoder and the queue of negative keys."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    target_params: Any  # key encoder
    target_batch_stats: Any
    queue: jax.Array  # [K, D] float32 unit rows
    queue_ptr: jax.Array  # int32, the next row to overwrite


class ProjectionHead(nn.Module):
    """MoCo v2's MLP head: Dense-ReLU-Dense with biases and no BatchNorm (official code)."""

    hidden_dim: int
    out_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, *, train: bool):
        del train  # no BatchNorm: same in both modes
        x = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype)(h.astype(self.dtype)))
        return nn.Dense(self.out_dim, dtype=self.dtype)(x).astype(jnp.float32)


def query_encoder(config: ml_collections.ConfigDict):
    """The architecture shared by the query and the key encoder: images -> (h, z)."""
    head = ProjectionHead(
        hidden_dim=config.proj_hidden_dim,
        out_dim=config.proj_dim,
        dtype=common.compute_dtype(config),
    )
    return common.encoder(config, head=head)


def l2_normalize(x: jax.Array) -> jax.Array:
    """Rows scaled to unit length in float32; an all-zero row stays zero."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def grouped(fn, x: jax.Array, groups: int, key: jax.Array) -> jax.Array:
    """``fn`` applied to ``groups`` disjoint random subsets of the rows of ``x``, in row order.

    Shuffling BN for one (global) batch, with batch statistics per group. The rows are dealt
    like cards: each run of ``groups`` consecutive rows gives one row to every group, in an
    order drawn from ``key``. Every group thus takes its rows from the whole batch, and which
    group a row joins depends on ``key`` and its row only, never on the devices.

    Why dealt rather than drawn from one permutation of the batch: with the batch sharded
    over devices no row has to move. Each device computes its own rows' share of every
    group's statistics and only those statistics cross devices, in the all-reduce that
    global BatchNorm needs anyway (``groups`` times as many numbers). The official code
    instead gathers the whole batch of images on every GPU to shuffle it, and sends the
    keys back.
    """
    if groups == 1:
        return fn(x)
    hands = x.reshape(x.shape[0] // groups, groups, *x.shape[1:])
    # order[t, g]: the row of run t that group g gets; a random permutation per run.
    order = jnp.argsort(jax.random.uniform(key, hands.shape[:2]), axis=1)

    def along_runs(a, index):
        return jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=1)

    # One group at a time: a vmap over groups would, for a convolution, merge the group axis
    # in front of the row axis, a layout the partitioner builds by gathering every row.
    out = jax.lax.map(fn, jnp.swapaxes(along_runs(hands, order), 0, 1))
    out = along_runs(jnp.swapaxes(out, 0, 1), jnp.argsort(order, axis=1))
    return out.reshape(x.shape[0], *out.shape[2:])


def make(config: ml_collections.ConfigDict) -> common.Method:
    check_config(config)
    section = config.moco_v2
    model = query_encoder(config)
    schedule = common.learning_rate_schedule(config)
    tx = common.optimizer(config, schedule)
    recipe = common.view_recipe(config)
    temperature, momentum = config.temperature, section.momentum
    groups, symmetric, negatives = section.shuffle_bn_groups, section.symmetric, section.negatives

    def forward(params, batch_stats, images):
        """Train-mode (batch statistics) projections and the updated running statistics."""
        (_, z), updated = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        return z, updated.get("batch_stats", {})

    def init(rng, images):
        model_key, queue_key = jax.random.split(rng)
        params, batch_stats = common.init_variables(model, model_key, images)
        # Random unit rows, as the official code starts: an all-zero queue would give K
        # identical negatives at cosine 0 until the first K / B steps have overwritten it.
        queue = l2_normalize(jax.random.normal(queue_key, (section.queue_size, config.proj_dim)))
        return MoCoV2State(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            # The key encoder starts as a copy of the query encoder (official code).
            target_params=jax.tree.map(jnp.copy, params),
            target_batch_stats=jax.tree.map(jnp.copy, batch_stats),
            queue=queue,
            queue_ptr=jnp.zeros((), jnp.int32),
        )

    def contrast(q, k, queue):
        if negatives:
            return losses.moco_info_nce(q, k, queue, temperature=temperature)
        return -jnp.mean(jnp.sum(l2_normalize(q) * l2_normalize(k), axis=-1)) / temperature

    def train_step(state, batch, rng):
        view_key, shuffle_key = common.split_step_key(rng, state.step)
        views = common.two_views(view_key, batch, recipe)
        view1, view2 = jnp.unstack(views, axis=1)
        shuffle_keys = jax.random.split(shuffle_key)

        def keys_of(view, key):
            # The key encoder's own running statistics are not kept: they would be those of
            # the groups; target_batch_stats follow the query encoder's by EMA instead.
            z = grouped(
                lambda x: forward(state.target_params, state.target_batch_stats, x)[0],
                view,
                groups,
                key,
            )
            return jax.lax.stop_gradient(l2_normalize(z))

        k2 = keys_of(view2, shuffle_keys[1])
        k1 = keys_of(view1, shuffle_keys[0]) if symmetric else None

        def loss_fn(params):
            q1, batch_stats = forward(params, state.batch_stats, view1)
            loss = contrast(q1, k2, state.queue)
            if symmetric:
                q2, batch_stats = forward(params, batch_stats, view2)
                loss = (loss + contrast(q2, k1, state.queue)) / 2
            return loss, (q1, batch_stats)

        (loss, (q1, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        params = new_state.params
        target_params = common.ema_update(state.target_params, params, momentum)
        queue, queue_ptr = losses.moco_enqueue(state.queue, state.queue_ptr, k2)
        new_state = new_state.replace(
            target_params=target_params,
            target_batch_stats=common.ema_update(state.target_batch_stats, batch_stats, momentum),
            queue=queue,
            queue_ptr=queue_ptr,
        )
        metrics = {
            "loss": loss,
            "embedding_std": diagnostics.embedding_std(q1),
            # How well queries find their keys, and how far the key encoder trails the query
            # encoder (relative L2 distance of the parameters; 0 at momentum 0). Both come
            # free; an output-space comparison of the two encoders would cost a forward pass.
            "positive_cosine": jnp.mean(jnp.sum(l2_normalize(q1) * k2, axis=-1)),
            "key_distance": optax.tree.norm(jax.tree.map(jnp.subtract, target_params, params))
            / optax.tree.norm(params),
            "queue_ptr": queue_ptr,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state.step),
        }
        return new_state, metrics

    return common.Method(
        recipe=recipe,
        init=init,
        train_step=train_step,
        encode=common.encoder_of(model),
        ema_encode=common.encoder_of(model, **common.TARGET_FIELDS),
        view_key=common.first_of_split_step_key,
    )
