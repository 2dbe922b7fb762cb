"""DINO's projection head (Caron et al. 2021, facebookresearch/dino).

An MLP (Dense-GELU for each hidden layer, optionally with BatchNorm, then Dense to a bottleneck),
an L2 normalisation of the bottleneck, and a weight-normalised last linear layer without bias:
column j of the effective weight is g_j * v_j / ||v_j||. With ``norm_last_layer=True`` (DINO's
default) g is fixed to 1, so v is the layer's only parameter and every column has unit norm.
DINO freezes the last layer during the first epoch; :func:`last_layer_mask` marks its
parameters for the optimiser.

>>> import jax, jax.numpy as jnp
>>> head = DINOHead(out_dim=16, hidden_dim=32, bottleneck_dim=8)
>>> params = head.init(jax.random.key(0), jnp.ones((4, 24)), train=False)["params"]
>>> head.apply({"params": params}, jnp.ones((4, 24)), train=False).shape
(4, 16)
>>> sorted(params["last_layer"])
['v']
>>> last_layer_mask(params)["last_layer"]["v"], last_layer_mask(params)["mlp_0"]["kernel"]
(True, False)
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LAST_LAYER = "last_layer"

_init = nn.initializers.truncated_normal(stddev=0.02)


def l2_normalize(x, axis=-1, eps=1e-12):
    """x / max(||x||, eps), as torch.nn.functional.normalize."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


class WeightNormDense(nn.Module):
    """Bias-free Dense whose kernel [in, out] is g * v / ||v||, normalised per output unit.

    Attributes:
      features: output width.
      learn_scale: learn g (initialised to 1); otherwise g is fixed to 1 and not a parameter.
      dtype: computation dtype (the kernel is normalised in float32).
    """

    features: int
    learn_scale: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        v = self.param("v", _init, (x.shape[-1], self.features), jnp.float32)
        kernel = l2_normalize(v, axis=0)
        if self.learn_scale:
            kernel = kernel * self.param("g", nn.initializers.ones, (self.features,), jnp.float32)
        return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))


class DINOHead(nn.Module):
    """DINO head: h [N, in] -> logits [N, out_dim].

    Attributes:
      out_dim: number of prototypes K (65536 in DINO).
      hidden_dim: width of the MLP's hidden layers.
      bottleneck_dim: width of the L2-normalised bottleneck.
      num_layers: Dense layers in the MLP (>= 1; 1 maps straight to the bottleneck).
      use_bn: BatchNorm after each hidden Dense (DINO uses it for ResNets, not ViTs).
      norm_last_layer: fix the weight-norm scale g to 1 (not a parameter).
      dtype: computation dtype; logits are returned as float32.
    """

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_layers: int = 3
    use_bn: bool = False
    norm_last_layer: bool = True
    dtype: Any = jnp.float32

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1; got {self.num_layers}")
        super().__post_init__()

    @nn.compact
    def __call__(self, h, *, train: bool):
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, kernel_init=_init, bias_init=nn.initializers.zeros
        )
        x = h.astype(self.dtype)
        for i in range(self.num_layers - 1):
            x = dense(self.hidden_dim, name=f"mlp_{i}")(x)
            if self.use_bn:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=0.9,
                    epsilon=1e-5,
                    dtype=self.dtype,
                    name=f"bn_{i}",
                )(x)
            x = nn.gelu(x, approximate=False)
        x = dense(self.bottleneck_dim, name=f"mlp_{self.num_layers - 1}")(x)
        x = l2_normalize(x.astype(jnp.float32))
        x = WeightNormDense(
            self.out_dim, learn_scale=not self.norm_last_layer, dtype=self.dtype, name=LAST_LAYER
        )(x)
        return x.astype(jnp.float32)


def last_layer_mask(params: Any) -> Any:
    """Pytree of bools like ``params``: True for leaves inside a DINOHead's last layer.

    Works on the head's own params or on any tree that contains them (an Encoder's params,
    a ``{"params": ...}`` dict), since it looks for the ``"last_layer"`` key on each leaf's path.
    Use it with e.g. ``optax.masked(optax.set_to_zero(), mask)`` to freeze the layer.
    """

    def in_last_layer(path, _):
        return any(getattr(k, "key", None) == LAST_LAYER for k in path)

    return jax.tree_util.tree_map_with_path(in_last_layer, params)
