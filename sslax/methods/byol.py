"""BYOL (Grill et al. 2020, arXiv 2006.07733): predict a slowly moving target, no negatives.

The online network (backbone f, projector g, predictor q) sees both views; the target network
(f', g') is an exponential moving average of the online f and g and is never trained by
gradient. The loss is 2 - 2 cos between the online prediction of one view and the target
projection of the other, computed both ways and summed (Eq. 2 and the symmetrised loss
L + L~ of Sec 3.1), so its value lies in [0, 8].

Recipe (paper Sec 3.3 and App. C; deepmind-research/byol):
- projector and predictor are Linear(4096)-BN-ReLU-Linear(256) at ImageNet scale;
- the target momentum follows tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 from
  ``ema_base`` (0.996 on ImageNet) to 1 over ``total_steps``, applied inside the step after the
  optimiser update, i.e. towards the new online parameters; BatchNorm running statistics are
  averaged the same way as the parameters;
- LARS, lr 0.2 x BatchSize/256, weight decay 1.5e-6, asymmetric views (``recipe="byol"``).

BatchNorm normalises both views together, over the whole global batch, as in
:mod:`sslax.methods.simclr`; the official code normalises each view's batch on its own.

``config.byol.stop_gradient=False`` removes BYOL's asymmetry: the targets are the online
projections themselves, with gradients flowing into them and no EMA network. That variant
collapses to a constant embedding (the seed's "diversity bar crashes to zero").
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import losses
from sslax.methods import common
from sslax.models import MLPHead


def defaults() -> ml_collections.ConfigDict:
    """BYOL's own hyperparameters at the scale of the built-in data.

    The projector is the shared ``proj_hidden_dim``/``proj_dim`` one; the predictor has the same
    shape with ``predictor_hidden_dim`` hidden units. ``ema_base`` is 0.99 rather than the
    paper's 0.996 so that the target keeps up within a few hundred steps (BYOL Table 5:
    0.99 is within 2 points of the best on ImageNet).
    """
    c = ml_collections.ConfigDict()
    c.predictor_hidden_dim = 256
    c.ema_base = 0.99
    c.stop_gradient = True  # False: targets from the online network, with gradient (collapses)
    return c


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    """Raises ValueError for ``config.byol`` values BYOL cannot run with."""
    common.check_section(
        config,
        "byol",
        {
            "ema_base": common.UNIT_INTERVAL,
            "predictor_hidden_dim": common.AT_LEAST_ONE,
        },
    )


@flax.struct.dataclass
class State:
    """:class:`common.TrainState` plus the target network (empty without stop-gradient).

    ``params`` and ``batch_stats`` hold {"encoder": backbone + projector, "predictor": ...};
    the target mirrors the encoder part only.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    target_params: Any
    target_batch_stats: Any


def _prediction_loss(p: jax.Array, target: jax.Array, stop_gradient: bool) -> jax.Array:
    if stop_gradient:
        return losses.byol_loss(p, target)
    # losses.byol_loss always treats its target as a constant; the ablation needs the gradient.
    return jnp.mean(2.0 - 2.0 * optax.cosine_similarity(p, target, epsilon=1e-12))


def make(config: ml_collections.ConfigDict) -> common.Method:
    dtype = common.compute_dtype(config)
    model = common.encoder(
        config,
        head=MLPHead(hidden_dims=(config.proj_hidden_dim,), out_dim=config.proj_dim, dtype=dtype),
    )
    predictor = MLPHead(
        hidden_dims=(config.byol.predictor_hidden_dim,), out_dim=config.proj_dim, dtype=dtype
    )
    schedule = common.learning_rate_schedule(config)
    tx = common.optimizer(config, schedule)
    recipe = common.view_recipe(config)
    stop_gradient = config.byol.stop_gradient
    ema_base = config.byol.ema_base
    total_steps = config.total_steps

    def init(rng, images):
        encoder_key, predictor_key = jax.random.split(rng)
        encoder_params, encoder_stats = common.init_variables(model, encoder_key, images)
        predictor_vars = predictor.init(
            predictor_key, jnp.zeros((1, config.proj_dim), jnp.float32), train=False
        )
        params = {"encoder": encoder_params, "predictor": predictor_vars["params"]}
        batch_stats = {"encoder": encoder_stats, "predictor": predictor_vars["batch_stats"]}
        target_params, target_stats = {}, {}
        if stop_gradient:
            # The target starts as the online encoder, copied so that donating the state never
            # hands one buffer over twice.
            target_params, target_stats = jax.tree.map(jnp.copy, (encoder_params, encoder_stats))
        return State(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            target_params=target_params,
            target_batch_stats=target_stats,
        )

    def train_step(state, batch, rng):
        step_key = common.step_key(rng, state.step)
        views = common.flatten_views(common.two_views(step_key, batch, recipe))

        if stop_gradient:
            # Training-mode BN, as for the online network; the target's own running statistics
            # are dropped because they follow the online ones by EMA below.
            (_, target_z), _ = common.apply_model(
                model, state.target_params, state.target_batch_stats, views, train=True
            )

        def loss_fn(params):
            (_, z), encoder_stats = common.apply_model(
                model, params["encoder"], state.batch_stats["encoder"], views, train=True
            )
            p, predictor_stats = common.apply_model(
                predictor, params["predictor"], state.batch_stats["predictor"], z, train=True
            )
            t = target_z if stop_gradient else z
            (p1, p2), (t1, t2) = (jnp.unstack(common.per_image(x, 2), axis=1) for x in (p, t))
            loss = _prediction_loss(p1, t2, stop_gradient) + _prediction_loss(p2, t1, stop_gradient)
            return loss, (z, {"encoder": encoder_stats, "predictor": predictor_stats})

        (loss, (z, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        params = new_state.params
        metrics = common.step_metrics(loss, z, grads, schedule(state.step))
        if stop_gradient:
            momentum = common.cosine_ema_momentum(
                state.step, base=ema_base, total_steps=total_steps
            )
            new_state = new_state.replace(
                target_params=common.ema_update(state.target_params, params["encoder"], momentum),
                target_batch_stats=common.ema_update(
                    state.target_batch_stats, batch_stats["encoder"], momentum
                ),
            )
            metrics["ema_momentum"] = momentum
        return new_state, metrics

    return common.Method(
        recipe=recipe,
        init=init,
        train_step=train_step,
        encode=common.encoder_of(model, "encoder"),
        ema_encode=common.encoder_of(model, **common.TARGET_FIELDS) if stop_gradient else None,
    )
