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
    """Linear warm-up from 0 to ``peak``, then cosine decay to 0 at ``total_steps``."""
    return optax.warmup_cosine_decay_schedule(
        0.0,
        peak,
        warmup_steps=min(warmup_steps, total_steps),
        decay_steps=max(total_steps, 1),
        end_value=0.0,
    )


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
