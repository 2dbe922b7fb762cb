"""Learning-rate scaling, schedules, and optimisers with SSL's parameter masks.

LARS as in SimCLR and BYOL: biases and normalisation parameters are excluded both from weight
decay and from the trust-ratio adaptation.

>>> scaled_learning_rate(0.3, batch_size=4096, rule="linear")
4.8
>>> round(scaled_learning_rate(0.075, batch_size=4096, rule="sqrt") * 1000) / 1000
4.8
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

LR_RULES = ("linear", "sqrt", "none")
OPTIMIZERS = ("lars", "sgd", "adamw")


def scaled_learning_rate(base: float, *, batch_size: int, rule: str) -> float:
    """SimCLR's rules: base x B/256 ("linear"), base x sqrt(B) ("sqrt"), or base ("none")."""
    if rule == "linear":
        return base * batch_size / 256
    if rule == "sqrt":
        return base * math.sqrt(batch_size)
    if rule == "none":
        return base
    raise ValueError(f"lr_scaling must be one of {LR_RULES}, got {rule!r}")


def warmup_cosine(peak: float, *, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``peak``, then cosine decay to 0 at ``total_steps``.

    A warm-up that does not fit the run is clipped to it (:func:`clipped_warmup`): with
    ``warmup_steps >= total_steps`` the rate rises linearly over the whole run, reaching
    ``peak * (T - 1) / T`` at its last step, and never decays. A one-step run (T = 1) with a
    warm-up of any length therefore takes its step at rate 0; without warm-up, at ``peak``.

    >>> s = warmup_cosine(1.0, warmup_steps=25, total_steps=10)  # shorter than its warm-up
    >>> [round(float(s(t)), 2) for t in (0, 5, 9)]
    [0.0, 0.5, 0.9]
    >>> s = warmup_cosine(1.0, warmup_steps=2, total_steps=10)
    >>> [round(float(s(t)), 2) for t in (0, 1, 2, 6, 9)]
    [0.0, 0.5, 1.0, 0.5, 0.04]
    """
    warmup = clipped_warmup(warmup_steps, total_steps)
    if warmup == total_steps:  # optax's cosine refuses a decay of no steps
        return optax.linear_schedule(0.0, peak, transition_steps=warmup)
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup_steps=warmup, decay_steps=total_steps, end_value=0.0
    )


def clipped_warmup(warmup_steps: int, total_steps: int) -> int:
    """The warm-up a run of ``total_steps`` gets: ``warmup_steps``, clipped to the run.

    sslax's one rule for every warm-up (learning rate, DINO's teacher temperature, SimSiam's
    fixed predictor rate): one longer than the run ends with the run instead of failing.
    """
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(
            f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps} and {warmup_steps}"
        )
    return min(warmup_steps, total_steps)


def decay_mask(params):
    """True for weights (kernels), False for biases and normalisation scales/offsets (ndim 1)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(
    name: str, schedule: optax.Schedule, *, weight_decay: float, momentum: float = 0.9
) -> optax.GradientTransformation:
    if name == "lars":
        return optax.lars(
            schedule,
            weight_decay=weight_decay,
            weight_decay_mask=decay_mask,
            trust_coefficient=0.001,
            trust_ratio_mask=decay_mask,
            momentum=momentum,
        )
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(weight_decay, decay_mask),
            optax.sgd(schedule, momentum=momentum),
        )
    if name == "adamw":
        return optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def frozen_for(steps: int, inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Zero updates and an untouched ``inner`` state for the first ``steps`` calls.

    PyTorch's optimisers skip a parameter whose gradient is None (no update, no weight decay,
    no moments), which is how DINO freezes its last layer and SwAV its prototypes: a frozen
    parameter starts its moments and bias correction when it is released, not at step 0.
    """

    def init(params):
        return (jnp.zeros((), jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        count, inner_state = state
        new_updates, new_inner = inner.update(updates, inner_state, params)
        frozen = count < steps
        new_updates = jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u), new_updates)
        new_inner = jax.tree.map(
            lambda old, new: jnp.where(frozen, old, new), inner_state, new_inner
        )
        return new_updates, (optax.safe_increment(count), new_inner)

    return optax.GradientTransformation(init, update)
