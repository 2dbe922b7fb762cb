"""MoCo v3 (Chen, Xie & He 2021, arXiv 2104.02057; facebookresearch/moco-v3).

No queue: every key of the global batch is a negative. The query encoder is backbone +
projector + predictor; the momentum encoder is an exponential moving average of backbone +
projector (parameters and BatchNorm statistics) whose momentum follows a cosine from
``momentum_base`` to 1 over training. Both views go through both encoders, and the loss is
symmetric, ctr(q1, k2) + ctr(q2, k1), where ctr is InfoNCE of each query against all keys of
the global batch (its positive at the same index), scaled by the paper's 2 tau. The EMA uses
the new query parameters at the end of the step (the official code updates at the start of
the next one; the sequence of updates is the same).

BatchNorm: global in both encoders (SyncBN, as in the official code). Unlike MoCo v2 this does
not leak: the positive key shares its batch statistics with every negative, which all come from
the same batch.

The ImageNet ResNet-50 recipe (``experiments/configs/moco_v3_imagenet.py``): projector 3 layers
Dense(4096)-BN-ReLU, Dense(4096)-BN-ReLU, Dense(256)-BN without affine; predictor Dense(4096)-
BN-ReLU-Dense(256); Dense layers without bias; temperature 1.0 (0.2 for ViT); momentum 0.99
cosine to 1; LARS lr 0.6 x B/256 at batch 4096, weight decay 1e-6, 10 warm-up epochs, cosine;
BYOL's asymmetric augmentations with crop area (0.08, 1); 100 epochs.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import diagnostics
from sslax.methods import common
from sslax.models import Encoder


def defaults() -> ml_collections.ConfigDict:
    """MoCo v3's own hyperparameters at the shapes scale (ImageNet values in the comments).

    The projector is 3 layers of the shared ``proj_hidden_dim`` (4096) into ``proj_dim`` (256);
    the temperature is the shared ``temperature`` (1.0 for ResNet, 0.2 for ViT).
    """
    c = ml_collections.ConfigDict()
    c.momentum_base = 0.99  # momentum encoder EMA at step 0, cosine to 1 at total_steps
    c.pred_hidden_dim = 256  # predictor hidden width; ImageNet 4096
    # False drops the negatives (InfoNCE's denominator), leaving the alignment term
    # -2 cos(q, k): BYOL's loss, with BYOL's other guards (predictor, momentum encoder, the
    # projector's last BatchNorm) still in place, so it need not collapse.
    c.negatives = True
    return c


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    """Raises ValueError for ``config.moco_v3`` values MoCo v3 cannot run with."""
    common.check_section(
        config,
        "moco_v3",
        {
            "momentum_base": common.UNIT_INTERVAL,
            "pred_hidden_dim": common.AT_LEAST_ONE,
        },
    )


@flax.struct.dataclass
class MoCoV3State:
    """TrainState plus the momentum encoder (backbone + projector)."""

    step: jax.Array
    params: Any  # {"encoder": backbone + projector, "predictor": ...}
    batch_stats: Any
    opt_state: Any
    target_params: Any  # momentum encoder, the structure of params["encoder"]
    target_batch_stats: Any


class MLP(nn.Module):
    """The official ``_build_mlp``: (Dense-BN-ReLU) x (layers - 1), then Dense, optionally BN.

    Dense layers have no bias; the optional last BatchNorm has no affine parameters.
    """

    num_layers: int
    hidden_dim: int
    out_dim: int
    last_bn: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        def norm(**kwargs):
            # PyTorch's BatchNorm1d defaults: running-average momentum 0.1, epsilon 1e-5.
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                dtype=self.dtype,
                **kwargs,
            )

        x = x.astype(self.dtype)
        for _ in range(self.num_layers - 1):
            x = nn.relu(norm()(nn.Dense(self.hidden_dim, use_bias=False, dtype=self.dtype)(x)))
        x = nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype)(x)
        if self.last_bn:
            x = norm(use_bias=False, use_scale=False)(x)
        return x.astype(jnp.float32)


def l2_normalize(x: jax.Array) -> jax.Array:
    """Rows scaled to unit length in float32; an all-zero row stays zero."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def contrastive_loss(q: jax.Array, k: jax.Array, temperature: float) -> jax.Array:
    r"""MoCo v3's ctr(q, k): cross-entropy of ``q_i . k_j / tau`` over all keys j, label i, x 2 tau.

    Queries and keys are L2-normalised; keys are constants (stop-gradient). Called on global
    arrays, so the negatives are the keys of every device. The 2 tau factor (official code)
    makes the gradient's scale independent of tau to first order.

    >>> q = jnp.eye(2)
    >>> round(float(contrastive_loss(q, q, 1.0)), 4)  # 2 * -log(e / (e + 1))
    0.6265
    """
    q = l2_normalize(q)
    k = jax.lax.stop_gradient(l2_normalize(k))
    logits = jnp.dot(q, k.T, precision=jax.lax.Precision.HIGHEST) / temperature
    # The label logit q_i . k_i from the rows themselves: the diagonal of a matrix whose rows
    # are sharded over devices would be gathered to every device.
    positives = jnp.sum(q * k, axis=-1) / temperature
    cross_entropy = jax.nn.logsumexp(logits, axis=-1) - positives
    return 2.0 * temperature * jnp.mean(cross_entropy)


def make(config: ml_collections.ConfigDict) -> common.Method:
    section = config.moco_v3
    dtype = common.compute_dtype(config)
    encoder = Encoder(
        backbone=common.backbone(config),
        head=MLP(3, config.proj_hidden_dim, config.proj_dim, last_bn=True, dtype=dtype),
    )
    predictor = MLP(2, section.pred_hidden_dim, config.proj_dim, last_bn=False, dtype=dtype)
    schedule = common.learning_rate_schedule(config)
    tx = common.optimizer(config, schedule)
    recipe = common.view_recipe(config)
    temperature = config.temperature

    def ctr(q, k):
        if section.negatives:
            return contrastive_loss(q, k, temperature)
        return -2.0 * jnp.mean(jnp.sum(l2_normalize(q) * l2_normalize(k), axis=-1))

    def init(rng, images):
        encoder_key, predictor_key = jax.random.split(rng)
        enc_params, enc_stats = common.init_variables(encoder, encoder_key, images)
        z = jnp.zeros((images.shape[0], config.proj_dim), jnp.float32)
        pred_variables = predictor.init(predictor_key, z, train=False)
        pred_params, pred_stats = pred_variables["params"], pred_variables["batch_stats"]
        params = {"encoder": enc_params, "predictor": pred_params}
        return MoCoV3State(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats={"encoder": enc_stats, "predictor": pred_stats},
            opt_state=tx.init(params),
            # The momentum encoder starts as a copy of backbone + projector (official code).
            target_params=jax.tree.map(jnp.copy, enc_params),
            target_batch_stats=jax.tree.map(jnp.copy, enc_stats),
        )

    def train_step(state, batch, rng):
        step_key = common.step_key(rng, state.step)
        views = common.two_views(step_key, batch, recipe)
        x1, x2 = jnp.unstack(views, axis=1)

        def momentum_keys(x):
            # The momentum encoder's own running statistics are not kept; target_batch_stats
            # follow the query encoder's by EMA.
            (_, k), _ = common.apply_model(
                encoder, state.target_params, state.target_batch_stats, x, train=True
            )
            return jax.lax.stop_gradient(k)

        k1, k2 = momentum_keys(x1), momentum_keys(x2)

        def loss_fn(params):
            # One view at a time, as the official code calls the encoders, so BatchNorm
            # statistics are per view and the running averages are updated twice.
            stats = state.batch_stats
            (_, z1), enc_stats = common.apply_model(
                encoder, params["encoder"], stats["encoder"], x1, train=True
            )
            p1, pred_stats = common.apply_model(
                predictor, params["predictor"], stats["predictor"], z1, train=True
            )
            (_, z2), enc_stats = common.apply_model(
                encoder, params["encoder"], enc_stats, x2, train=True
            )
            p2, pred_stats = common.apply_model(
                predictor, params["predictor"], pred_stats, z2, train=True
            )
            loss = ctr(p1, k2) + ctr(p2, k1)
            return loss, (p1, {"encoder": enc_stats, "predictor": pred_stats})

        (loss, (p1, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        params = new_state.params
        momentum = common.cosine_ema_momentum(
            state.step, base=section.momentum_base, total_steps=config.total_steps
        )
        new_state = new_state.replace(
            target_params=common.ema_update(state.target_params, params["encoder"], momentum),
            target_batch_stats=common.ema_update(
                state.target_batch_stats, batch_stats["encoder"], momentum
            ),
        )
        metrics = {
            "loss": loss,
            # Of the queries: in training mode the projections z cannot collapse, as their
            # last BatchNorm standardises every dimension over the batch.
            "embedding_std": diagnostics.embedding_std(p1),
            "positive_cosine": jnp.mean(jnp.sum(l2_normalize(p1) * l2_normalize(k2), axis=-1)),
            "ema_momentum": momentum,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state.step),
        }
        return new_state, metrics

    return common.Method(
        recipe=recipe,
        init=init,
        train_step=train_step,
        encode=common.encoder_of(encoder, "encoder"),
        ema_encode=common.encoder_of(encoder, **common.TARGET_FIELDS),
    )
