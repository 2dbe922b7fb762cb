"""VICReg (Bardes, Ponce and LeCun 2022, arXiv 2105.04906): variance-invariance-covariance.

Backbone f, then an expander of three Dense layers of equal width (BatchNorm + ReLU on the two
hidden ones; 8192 wide in the paper). The loss on the raw expander outputs z1, z2 has three
terms: invariance (mean squared distance between the views' z), variance (a hinge keeping the
standard deviation of every dimension over the batch at 1 or more, the term that prevents
collapse) and covariance (decorrelating the dimensions). No negatives, no predictor, no target
network. Views follow the official code's asymmetric BYOL recipe (``recipe="byol"`` in the
configs); LARS at base rate 0.2 x B/256 for every parameter, as in the official code.

As in the official code each view goes through the network on its own, so every BatchNorm
layer normalises a view with that view's statistics.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from sslax import losses
from sslax.methods import common
from sslax.models import MLPHead


def defaults() -> ml_collections.ConfigDict:
    """VICReg's own hyperparameters at the shapes scale (paper values in the comments)."""
    c = ml_collections.ConfigDict()
    c.expander_dim = 256  # width of all three expander layers; paper 8192
    c.sim_coeff = 25.0  # invariance weight lambda
    c.std_coeff = 25.0  # variance weight mu
    c.cov_coeff = 1.0  # covariance weight nu
    # False sets std_coeff to 0. Invariance alone is minimised by a constant z, and the
    # covariance term only penalises correlations, which a shrinking z also drives to 0.
    c.variance = True
    return c


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    """Raises ValueError for ``config.vicreg`` values VICReg cannot run with."""
    common.check_section(
        config,
        "vicreg",
        {
            "expander_dim": common.AT_LEAST_ONE,
            "sim_coeff": common.NON_NEGATIVE,
            "std_coeff": common.NON_NEGATIVE,
            "cov_coeff": common.NON_NEGATIVE,
        },
    )
    common.check_batch_size(
        config, "vicreg", 2, "its variance and covariance terms are taken over the batch"
    )


def encoder(config: ml_collections.ConfigDict):
    """The backbone and the three-layer expander of ``config.vicreg.expander_dim``.

    The last Dense keeps its bias (the official code has none); every term of the loss is
    unchanged by a shift common to both views, so that bias never receives a gradient.
    """
    width = config.vicreg.expander_dim
    head = MLPHead(hidden_dims=(width, width), out_dim=width, dtype=common.compute_dtype(config))
    return common.encoder(config, head=head)


def loss_terms(z1: jax.Array, z2: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Unweighted terms of the loss: invariance, variance and covariance.

    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance (for the
    metrics; the step's loss comes from :func:`sslax.losses.vicreg_loss`).
    """
    invariance = jnp.mean(jnp.square(z1 - z2))

    def variance_and_covariance(z):
        centred = z - jnp.mean(z, axis=0)
        covariance = jnp.dot(centred.T, centred, precision="highest") / (z.shape[0] - 1)
        hinge = jnp.mean(jax.nn.relu(1.0 - jnp.sqrt(jnp.diagonal(covariance) + 1e-4)))
        off_diagonal = jnp.where(jnp.eye(z.shape[1], dtype=bool), 0.0, covariance)
        return hinge, jnp.sum(jnp.square(off_diagonal)) / z.shape[1]

    variance_1, covariance_1 = variance_and_covariance(z1)
    variance_2, covariance_2 = variance_and_covariance(z2)
    return invariance, (variance_1 + variance_2) / 2.0, covariance_1 + covariance_2


def objective(config: ml_collections.ConfigDict):
    """The loss on (z1, z2) that the step minimises, with ``variance`` applied."""
    section = config.vicreg
    return functools.partial(
        losses.vicreg_loss,
        sim_coeff=section.sim_coeff,
        std_coeff=section.std_coeff if section.variance else 0.0,
        cov_coeff=section.cov_coeff,
    )


def make(config: ml_collections.ConfigDict) -> common.Method:
    model = encoder(config)
    schedule = common.learning_rate_schedule(config)
    tx = common.optimizer(config, schedule)
    recipe = common.view_recipe(config)
    loss_of = objective(config)

    def train_step(state, batch, rng):
        step_key = common.step_key(rng, state.step)
        views = common.two_views(step_key, batch, recipe)

        def loss_fn(params):
            z1, z2, batch_stats = common.embed_views_separately(
                model, params, state.batch_stats, views
            )
            return loss_of(z1, z2), (z1, z2, batch_stats)

        (loss, (z1, z2, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        invariance, variance, covariance = loss_terms(z1, z2)
        z = jnp.concatenate([z1, z2])
        metrics = common.step_metrics(loss, z, grads, schedule(state.step))
        metrics.update(
            # The quantity the variance term acts on, before normalisation: 0 at collapse.
            z_std=jnp.mean(jnp.std(z, axis=0)),
            invariance=invariance,
            variance=variance,
            covariance=covariance,
        )
        return new_state, metrics

    return common.Method(
        recipe=recipe,
        init=common.state_initializer(model, tx),
        train_step=train_step,
        encode=common.encoder_of(model),
    )
