"""Barlow Twins (Zbontar et al. 2021, arXiv 2103.03230): redundancy reduction between two views.

Backbone f, then an expander of three Dense layers of equal width (BatchNorm + ReLU on the two
hidden ones; 8192 wide in the paper). Each dimension of z1 and z2 is standardised over the
global batch and their cross-correlation matrix C is pushed towards the identity: the diagonal
makes each feature invariant to the augmentations, the off-diagonal term (weight lambda)
decorrelates the features so that they do not all encode the same thing. No negatives, no
predictor, no target network. Views follow the official code's asymmetric BYOL recipe
(``recipe="byol"`` in the configs).

As in the official code each view goes through the network on its own, so every BatchNorm
layer normalises a view with that view's statistics. LARS with a separate, smaller learning
rate for biases and BatchNorm parameters (``bias_lr_ratio``: 0.0048 / 0.2 in the paper).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sslax import losses
from sslax.methods import common
from sslax.models import MLPHead


def defaults() -> ml_collections.ConfigDict:
    """Barlow Twins' own hyperparameters at the shapes scale (paper values in the comments)."""
    c = ml_collections.ConfigDict()
    c.expander_dim = 256  # width of all three expander layers; paper 8192
    # Weight of the D(D-1) off-diagonal terms against the D diagonal ones: 1/D at D = 256,
    # close to the paper's 5.1e-3 (which it uses at D = 8192).
    c.lambd = 1.0 / 256
    # False sets lambd to 0: only the diagonal remains. The loss's own standardisation still
    # keeps every feature from becoming constant, so what goes is the decorrelation: nothing
    # stops all features from encoding the same few directions (dimensional collapse).
    c.redundancy_reduction = True
    # Learning rate of biases and BatchNorm parameters relative to that of the weights.
    c.bias_lr_ratio = 0.0048 / 0.2
    return c


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    """Raises ValueError for ``config.barlow_twins`` values Barlow Twins cannot run with."""
    common.check_section(
        config,
        "barlow_twins",
        {
            "expander_dim": common.AT_LEAST_ONE,
            "lambd": common.NON_NEGATIVE,
            "bias_lr_ratio": common.NON_NEGATIVE,
        },
    )
    common.check_batch_size(
        config, "barlow_twins", 2, "its loss standardises each feature over the batch"
    )


def encoder(config: ml_collections.ConfigDict):
    """The backbone and the three-layer expander of ``config.barlow_twins.expander_dim``.

    The last Dense keeps its bias (the official code has none); the loss standardises every
    dimension, so that bias never receives a gradient.
    """
    width = config.barlow_twins.expander_dim
    head = MLPHead(hidden_dims=(width, width), out_dim=width, dtype=common.compute_dtype(config))
    return common.encoder(config, head=head)


def loss_terms(z1: jax.Array, z2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Unweighted terms of the loss: sum_i (1 - C_ii)^2 and sum_{i != j} C_ij^2.

    loss = on_diagonal + lambd * off_diagonal (for the metrics; the step's loss comes from
    :func:`sslax.losses.barlow_twins_loss`).
    """

    def standardise(z):
        centred = z - jnp.mean(z, axis=0)
        return centred * jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=0) + 1e-5)

    c = jnp.dot(standardise(z1).T, standardise(z2), precision="highest") / z1.shape[0]
    diagonal = jnp.eye(c.shape[0], dtype=bool)
    on_diagonal = jnp.sum(jnp.square(1.0 - jnp.diagonal(c)))
    off_diagonal = jnp.sum(jnp.square(jnp.where(diagonal, 0.0, c)))
    return on_diagonal, off_diagonal


def objective(config: ml_collections.ConfigDict):
    """The loss on (z1, z2) that the step minimises, with ``redundancy_reduction`` applied."""
    section = config.barlow_twins
    lambd = section.lambd if section.redundancy_reduction else 0.0
    return functools.partial(losses.barlow_twins_loss, lambd=lambd)


def _optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule):
    """The shared optimiser, at ``bias_lr_ratio`` times the rate for 1-D parameters."""
    ratio = config.barlow_twins.bias_lr_ratio
    return optax.multi_transform(
        {
            "weights": common.optimizer(config, schedule),
            "biases": common.optimizer(config, lambda step: ratio * schedule(step)),
        },
        lambda params: jax.tree.map(lambda p: "weights" if np.ndim(p) > 1 else "biases", params),
    )


def make(config: ml_collections.ConfigDict) -> common.Method:
    model = encoder(config)
    schedule = common.learning_rate_schedule(config)
    tx = _optimizer(config, schedule)
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
        on_diagonal, off_diagonal = loss_terms(z1, z2)
        metrics = common.step_metrics(loss, jnp.concatenate([z1, z2]), grads, schedule(state.step))
        metrics.update(on_diagonal=on_diagonal, off_diagonal=off_diagonal)
        return new_state, metrics

    return common.Method(
        recipe=recipe,
        init=common.state_initializer(model, tx),
        train_step=train_step,
        encode=common.encoder_of(model),
    )
