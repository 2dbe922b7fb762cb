"""SimSiam (Chen & He 2021, arXiv 2011.10566): a Siamese network with stop-gradient, no EMA.

One encoder (backbone f, projector g) and a predictor h see both views; the loss is the
negative cosine between the prediction of one view and the projection z of the other, with z
treated as a constant, averaged over the two directions: 0.5 * (D(p1, z2) + D(p2, z1)) (Eq. 3
and 4), so its value lies in [-1, 1].

Recipe (paper Sec 3 and App.; facebookresearch/simsiam):
- projector: three layers of width 2048, BN on every layer including the output (no ReLU
  there); predictor: a 2048-512-2048 bottleneck (Linear-BN-ReLU-Linear);
- SGD, momentum 0.9, weight decay 1e-4, lr 0.05 x BatchSize/256 with cosine decay, except
  that the predictor's lr is not decayed (``fixed_predictor_lr``, Sec 4.5 / the official
  ``--fix-pred-lr``); after any warm-up it stays at the peak;
- views: MoCo v2's augmentations with crop area (0.2, 1).

BatchNorm normalises both views together, over the whole global batch, as in
:mod:`sslax.methods.simclr`; the official code normalises each view's batch on its own.

``config.simsiam.stop_gradient=False`` lets the gradient flow through z as well; the paper's
Fig. 2 shows that this collapses at once to a constant output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import losses, optim
from sslax.methods import common
from sslax.models import MLPHead


def defaults() -> ml_collections.ConfigDict:
    """SimSiam's own hyperparameters at the scale of the built-in data.

    The projector is ``proj_hidden_dim`` wide for its two hidden layers and ``proj_dim`` at the
    output; the predictor bottleneck is a quarter of ``proj_dim`` as in the paper (512 of 2048).
    """
    c = ml_collections.ConfigDict()
    c.predictor_hidden_dim = 16
    c.fixed_predictor_lr = True
    c.stop_gradient = True  # False: gradients also flow through the projections z (collapses)
    return c


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    """Raises ValueError for ``config.simsiam`` values SimSiam cannot run with."""
    common.check_section(
        config,
        "simsiam",
        {
            "predictor_hidden_dim": common.AT_LEAST_ONE,
        },
    )


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The shared optimiser on {"encoder": ..., "predictor": ...} parameters.

    With ``config.simsiam.fixed_predictor_lr`` the predictor follows the same warm-up but then
    keeps the peak rate, while the encoder's rate decays along the cosine.
    """
    schedule = common.learning_rate_schedule(config)
    if not config.simsiam.fixed_predictor_lr:
        return common.optimizer(config, schedule)
    warmup_steps = optim.clipped_warmup(config.warmup_steps, config.total_steps)

    def predictor_schedule(count):
        return schedule(jnp.minimum(count, warmup_steps))

    return optax.partition(
        {
            "encoder": common.optimizer(config, schedule),
            "predictor": common.optimizer(config, predictor_schedule),
        },
        {"encoder": "encoder", "predictor": "predictor"},
    )


def _prediction_loss(p: jax.Array, z: jax.Array, stop_gradient: bool) -> jax.Array:
    if stop_gradient:
        return losses.simsiam_loss(p, z)
    # losses.simsiam_loss always treats z as a constant; the ablation needs the gradient.
    return -jnp.mean(optax.cosine_similarity(p, z, epsilon=1e-12))


def make(config: ml_collections.ConfigDict) -> common.Method:
    dtype = common.compute_dtype(config)
    model = common.encoder(
        config,
        head=MLPHead(
            hidden_dims=(config.proj_hidden_dim,) * 2,
            out_dim=config.proj_dim,
            output_norm=True,
            dtype=dtype,
        ),
    )
    predictor = MLPHead(
        hidden_dims=(config.simsiam.predictor_hidden_dim,), out_dim=config.proj_dim, dtype=dtype
    )
    schedule = common.learning_rate_schedule(config)
    tx = optimizer(config)
    recipe = common.view_recipe(config)
    stop_gradient = config.simsiam.stop_gradient

    def init(rng, images):
        encoder_key, predictor_key = jax.random.split(rng)
        encoder_params, encoder_stats = common.init_variables(model, encoder_key, images)
        predictor_vars = predictor.init(
            predictor_key, jnp.zeros((1, config.proj_dim), jnp.float32), train=False
        )
        params = {"encoder": encoder_params, "predictor": predictor_vars["params"]}
        return common.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats={"encoder": encoder_stats, "predictor": predictor_vars["batch_stats"]},
            opt_state=tx.init(params),
        )

    def train_step(state, batch, rng):
        step_key = common.step_key(rng, state.step)
        views = common.flatten_views(common.two_views(step_key, batch, recipe))

        def loss_fn(params):
            (_, z), encoder_stats = common.apply_model(
                model, params["encoder"], state.batch_stats["encoder"], views, train=True
            )
            p, predictor_stats = common.apply_model(
                predictor, params["predictor"], state.batch_stats["predictor"], z, train=True
            )
            (p1, p2), (z1, z2) = (jnp.unstack(common.per_image(x, 2), axis=1) for x in (p, z))
            loss = 0.5 * (
                _prediction_loss(p1, z2, stop_gradient) + _prediction_loss(p2, z1, stop_gradient)
            )
            return loss, (z, {"encoder": encoder_stats, "predictor": predictor_stats})

        (loss, (z, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        return new_state, common.step_metrics(loss, z, grads, schedule(state.step))

    return common.Method(
        recipe=recipe, init=init, train_step=train_step, encode=common.encoder_of(model, "encoder")
    )
