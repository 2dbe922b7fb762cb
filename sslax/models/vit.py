"""Vision Transformers (Dosovitskiy et al. 2021) in Flax linen, laid out as in timm and DINO.

The backbone maps images [N, H, W, 3] to the CLS token after the final LayerNorm, h [N, D].
Blocks are pre-norm (LayerNorm eps 1e-6, multi-head self-attention, GELU MLP), with optional
stochastic depth whose rate grows linearly from 0 to ``drop_path_rate`` over the blocks, as in
DINO. Position embeddings are learned for the patch grid of ``image_size`` and resized
bicubically when an input has a different grid, so a model built for 224 px global crops also
takes DINO's 96 px local crops. With ``dtype=jnp.bfloat16`` the computation runs in bfloat16
while parameters (and h) stay float32. ``remat`` (:mod:`sslax.models.remat`) trades compute for
memory in training without changing parameters or results.

>>> import jax, jax.numpy as jnp
>>> net = ViT(patch_size=8, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, image_size=32)
>>> init = jax.jit(net.init, static_argnames="train")
>>> variables = init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)
>>> variables["params"]["pos_embedding"].shape  # CLS + the 4x4 grid of 32 px inputs
(1, 17, 32)
>>> net.apply(variables, jnp.zeros((2, 16, 24, 3)), train=False).shape  # 2x3 grid: resized
(2, 32)
>>> vit_from_name("vit_small", patch_size=16).hidden_dim
384
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslax.models import remat as remat_lib

# name -> (hidden_dim, depth, num_heads, mlp_dim), as in timm / DINO; "vit_micro" is sslax's
# laptop size (the masked-patch methods on the built-in data), not a published model.
VIT_PRESETS = {
    "vit_micro": (128, 4, 4, 512),
    "vit_tiny": (192, 12, 3, 768),
    "vit_small": (384, 12, 6, 1536),
    "vit_base": (768, 12, 12, 3072),
}

_init = nn.initializers.truncated_normal(stddev=0.02)
# Remat "dots" keeps the outputs of the blocks' projections (matmuls without batch dimensions:
# q, k, v, out, fc1, fc2); layer norms, attention scores and softmax, GELU are recomputed.
DOTS_POLICY = jax.checkpoint_policies.dots_with_no_batch_dims_saveable


def interpolate_pos_embedding(pos: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Resize patch position embeddings [G_h * G_w, D] (row-major grid) to ``grid``.

    ``pos`` is a square reference grid (G_h = G_w) as stored by :class:`ViT`. Bicubic
    interpolation without antialiasing, computed in float32; the same grid is returned as is.
    (jax's cubic kernel is Keys' a = -0.5; PyTorch's bicubic, used by DINO, is a = -0.75.)
    """
    n, dim = pos.shape
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"{n} position embeddings do not form a square grid")
    if tuple(grid) == (side, side):
        return pos
    resized = jax.image.resize(
        pos.reshape(side, side, dim).astype(jnp.float32),
        (grid[0], grid[1], dim),
        method="bicubic",
        antialias=False,
    )
    return resized.reshape(grid[0] * grid[1], dim).astype(pos.dtype)


class DropPath(nn.Module):
    """Stochastic depth: zero a whole residual branch per sample with probability ``rate``.

    Kept branches are scaled by 1 / (1 - rate). Active only when ``train`` is true and
    ``rate`` > 0; draws from the 'dropout' rng.
    """

    rate: float

    @nn.compact
    def __call__(self, x, *, train: bool):
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    num_heads: int
    mlp_dim: int
    drop_path: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        norm = functools.partial(nn.LayerNorm, epsilon=1e-6, dtype=self.dtype)
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, kernel_init=_init, bias_init=nn.initializers.zeros
        )
        y = norm(name="norm1")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            kernel_init=_init,
            bias_init=nn.initializers.zeros,
            deterministic=True,
            name="attn",
        )(y)
        x = x + DropPath(self.drop_path)(y, train=train)
        y = norm(name="norm2")(x)
        y = dense(self.mlp_dim, name="fc1")(y)
        y = nn.gelu(y, approximate=False)  # PyTorch nn.GELU is the exact (erf) form.
        y = dense(x.shape[-1], name="fc2")(y)
        return x + DropPath(self.drop_path)(y, train=train)


class ViT(nn.Module):
    """Vision Transformer backbone: images [N, H, W, 3] -> CLS token h [N, hidden_dim].

    Attributes:
      patch_size: side of the square patches; must divide ``image_size`` and every input side.
      hidden_dim: token width D.
      depth: number of transformer blocks.
      num_heads: attention heads per block; must divide ``hidden_dim``.
      mlp_dim: hidden width of each block's MLP.
      dtype: computation dtype (parameters are always float32; h is returned as float32).
      image_size: reference resolution whose patch grid the position embeddings are stored for.
      drop_path_rate: stochastic-depth rate of the last block (linear from 0 over the blocks).
      remat: what the backward pass recomputes rather than keeps: one of
        :data:`sslax.models.remat.REMAT` ("dots" keeps each block's projection outputs).
      mask_token: a learned token (zeros at init, as DINOv2's) that replaces the patches a
        ``mask`` selects: masked image modelling (iBOT, DINOv2).

    Calls take, besides the images: ``mask`` [N, L] bool (needs ``mask_token``), the patches
    to replace before the position embeddings are added; ``keep`` [N, L_keep] int, the patches
    to keep (MAE's encoder sees only the visible ones; position embeddings are added first, so
    each kept patch keeps its place); ``tokens=True`` returns every token after the final
    LayerNorm, [N, 1 + L, D] with CLS first (L_keep with ``keep``), instead of the CLS token.
    """

    patch_size: int
    hidden_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    image_size: int = 224
    drop_path_rate: float = 0.0
    remat: str = "none"
    mask_token: bool = False

    def __post_init__(self):
        if (
            not isinstance(self.patch_size, int)
            or self.patch_size <= 0
            or self.image_size % self.patch_size
        ):
            raise ValueError(
                f"patch_size must be a positive divisor of image_size="
                f"{self.image_size}; got {self.patch_size!r}"
            )
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} does not divide hidden_dim={self.hidden_dim}"
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1); got {self.drop_path_rate}")
        remat_lib.check(self.remat)
        super().__post_init__()

    @nn.compact
    def __call__(self, images, *, train: bool, mask=None, keep=None, tokens: bool = False):
        n, height, width, _ = images.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"input of {height}x{width} px is not divisible by patch_size={p}")
        grid = (height // p, width // p)
        patches = grid[0] * grid[1]
        if mask is not None and (not self.mask_token or jnp.shape(mask) != (n, patches)):
            raise ValueError(
                f"mask must be [N, L] = {(n, patches)} booleans for a ViT built with "
                f"mask_token=True; got shape {jnp.shape(mask)}, mask_token={self.mask_token}"
            )
        if keep is not None and (jnp.ndim(keep) != 2 or jnp.shape(keep)[0] != n):
            raise ValueError(f"keep must be [N, L_keep] = [{n}, ...], got {jnp.shape(keep)}")

        # Functions of (module, x) that make their submodules where they run, so that remat can
        # lift them; ``train`` is closed over (remat would trace an argument).
        def block(i: int):
            rate = self.drop_path_rate * i / max(self.depth - 1, 1)

            def apply(module, x):
                return EncoderBlock(
                    self.num_heads, self.mlp_dim, drop_path=rate, dtype=self.dtype, name=f"block{i}"
                )(x, train=train)

            return remat_lib.rematted(apply, self.remat, per_block=True, dots_policy=DOTS_POLICY)

        def layers(module, images, mask, keep):
            x = nn.Conv(
                self.hidden_dim,
                (p, p),
                strides=(p, p),
                padding="VALID",
                dtype=self.dtype,
                name="patch_embed",
            )(images.astype(self.dtype))
            x = x.reshape(n, patches, self.hidden_dim)
            if self.mask_token:
                token = module.param(
                    "mask_token", nn.initializers.zeros, (1, 1, self.hidden_dim), jnp.float32
                )
                if mask is not None:
                    x = jnp.where(mask[..., None], token.astype(x.dtype), x)

            ref = self.image_size // p
            cls = module.param("cls_token", _init, (1, 1, self.hidden_dim), jnp.float32)
            # One table for CLS + the reference grid, as in timm/DINO checkpoints.
            pos = module.param(
                "pos_embedding", _init, (1, 1 + ref * ref, self.hidden_dim), jnp.float32
            )
            pos = jnp.concatenate([pos[0, :1], interpolate_pos_embedding(pos[0, 1:], grid)])
            # Kept only if 'intermediates' is mutable.
            module.sow("intermediates", "pos_embedding", pos)
            x = x + pos[None, 1:].astype(x.dtype)
            if keep is not None:
                x = jnp.take_along_axis(x, keep[..., None], axis=1)
            cls = (cls + pos[None, :1]).astype(x.dtype)
            x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, self.hidden_dim)), x], axis=1)
            for i in range(self.depth):
                x = block(i)(module, x)
            x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
            return (x if tokens else x[:, 0]).astype(jnp.float32)

        return remat_lib.rematted(layers, self.remat, per_block=False)(self, images, mask, keep)


def vit_from_name(
    name: str,
    patch_size: int = 16,
    image_size: int = 224,
    dtype: Any = jnp.float32,
    drop_path_rate: float = 0.0,
    remat: str = "none",
    mask_token: bool = False,
) -> ViT:
    """A preset ViT ("vit_tiny", "vit_small", "vit_base") with the given patch size."""
    if name not in VIT_PRESETS:
        raise ValueError(f"unknown ViT {name!r}; choose one of {', '.join(VIT_PRESETS)}")
    hidden_dim, depth, num_heads, mlp_dim = VIT_PRESETS[name]
    return ViT(
        patch_size=patch_size,
        hidden_dim=hidden_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
        dtype=dtype,
        image_size=image_size,
        drop_path_rate=drop_path_rate,
        remat=remat,
        mask_token=mask_token,
    )
