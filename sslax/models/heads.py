"""Projection heads: the small networks between the representation h and the loss's z.

SimCLR (Sec 4.2) found that putting the loss on z = g(h) rather than on h improves h by over
10 points; after pretraining g is thrown away and h is kept.

>>> import jax, jax.numpy as jnp
>>> head = MLPHead(hidden_dims=(64,), out_dim=16)
>>> v = head.init(jax.random.key(0), jnp.zeros((4, 32)), train=False)
>>> head.apply(v, jnp.zeros((4, 32)), train=False).shape
(4, 16)
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class IdentityHead(nn.Module):
    """No projection head: the loss sees z = h (SimCLR Sec 4.2's "none" ablation)."""

    @nn.compact
    def __call__(self, h, *, train: bool):
        del train
        return h.astype(jnp.float32)


class MLPHead(nn.Module):
    """Dense-BN-ReLU per hidden layer, then a last Dense (optionally followed by BN).

    Attributes:
      hidden_dims: widths of the hidden layers; () gives a linear head.
      out_dim: output width.
      output_norm: BatchNorm on the output (SimCLR v1 code, SimSiam's projector).
      dtype: computation dtype.
    """

    hidden_dims: Sequence[int]
    out_dim: int
    output_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, *, train: bool):
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
        )
        x = h.astype(self.dtype)
        for dim in self.hidden_dims:
            x = nn.relu(norm()(nn.Dense(dim, use_bias=False, dtype=self.dtype)(x)))
        x = nn.Dense(self.out_dim, use_bias=not self.output_norm, dtype=self.dtype)(x)
        if self.output_norm:
            # Centring off, as in SimCLR v1's output BN: z is L2-normalised by the loss anyway.
            x = norm(use_bias=False)(x)
        return x.astype(jnp.float32)
