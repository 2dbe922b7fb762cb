"""Activation rematerialisation (``remat``): what a backbone's backward pass recomputes.

By default the backward pass reads every intermediate the forward pass kept; ``remat`` keeps
fewer and recomputes the rest from them, trading FLOPs for memory. Parameters and results are
unchanged (``tests/test_remat.py`` checks losses and gradients); only the
compiled program differs. ``python -m sslax.plan`` shows the trade for a config on a topology.

- ``"none"``: keep everything (the default; fastest when it fits).
- ``"dots"``: per block (ResNet residual block, ViT transformer block), keep only the outputs
  of convolutions and matmuls; normalisations, activations and attention softmaxes are
  recomputed: a few elementwise passes, no matrix work. The choice for ViTs (ViT-S/16 SimCLR,
  batch 256 per H200: peak 23.9 -> 17.2 GiB for +4% FLOPs), not for ResNets, where XLA keeps
  less than this by itself (ResNet-50 on v5e: 14.3 -> 15.6 GiB).
- ``"blocks"``: per block, keep only its input; the whole block is recomputed in the backward
  pass: about one more forward pass of the backbone (+24 to +29% FLOPs). The choice for
  ResNets (ResNet-50 SimCLR, batch 256 per v5e chip: peak 14.3 -> 8.1 GiB for +29% FLOPs).
- ``"full"``: keep only the backbone's input; the whole backbone forward is recomputed in the
  backward pass, at once (the same extra FLOPs as ``"blocks"``). It saves memory only where
  something after the backbone peaks: the backward pass then holds all of the backbone's
  intermediates again (ResNet-50 on v5e: 14.3 -> 14.3 GiB, +32% FLOPs).

(Measured with ``python -m sslax.plan``; plan your own config, the trade depends on the model,
the batch and the compiler.)

Every mode also keeps a ResNet's BatchNorm statistics (:func:`keep_reductions`): recomputing
them would repeat their cross-device all-reduces.

Remat lifts functions ``fn(module, x)`` that make their submodules where they run, rather than
Module classes, so every parameter keeps its path: checkpoints do not depend on the mode.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
from jax import lax

REMAT = ("none", "dots", "blocks", "full")


def check(remat: str) -> None:
    if remat not in REMAT:
        raise ValueError(f"remat must be one of {', '.join(REMAT)}, got {remat!r}")


def keep_reductions(prim, *_, **__) -> bool:
    """A ``jax.checkpoint`` policy that keeps the outputs of sums over an axis.

    In a ResNet these are BatchNorm's batch statistics: a few numbers per channel, which with a
    batch sharded over devices XLA sums with a cross-device all-reduce. Recomputing them would
    run those all-reduces a second time (measured on v5e:4x4: 150 all-reduces a step instead of
    102); keeping them costs almost no memory.
    """
    return prim is lax.reduce_sum_p


def rematted(
    fn: Callable, remat: str, *, per_block: bool, dots_policy: Any = None, keep: Any = None
) -> Callable:
    """``fn(module, x)`` under :func:`flax.linen.remat` where ``remat`` asks for it.

    ``per_block``: ``fn`` is one block (rematted under "dots" and "blocks") rather than the
    whole backbone (rematted under "full"). ``dots_policy`` is the ``jax.checkpoint`` policy
    that keeps a block's convolution and matmul outputs, for "dots"; ``keep`` a policy of what
    every mode keeps besides (:func:`keep_reductions` for BatchNorm networks).
    """
    check(remat)
    policies = [p for p in (dots_policy if remat == "dots" else None, keep) if p is not None]
    policy = None
    if policies:
        policy = (
            policies[0]
            if len(policies) == 1
            else jax.checkpoint_policies.save_from_both_policies(*policies)
        )
    if (per_block and remat in ("dots", "blocks")) or (not per_block and remat == "full"):
        return nn.remat(fn, policy=policy)
    return fn
