"""ResNets (He et al. 2016) in Flax linen, with the ImageNet stem or the CIFAR stem.

The CIFAR stem (3x3 stride-1 convolution, no max-pool) is what SimCLR uses for 32 px images
(App. B.9). ``width`` multiplies every stage's channels, so ``width=0.25`` gives a ResNet-18 small
enough to pretrain on a laptop CPU in minutes. BatchNorm statistics are computed over whatever
batch the call sees; under ``jax.jit`` with a data-sharded batch that is the global batch
(SimCLR's global BN), since XLA inserts the cross-device reductions.

>>> import jax, jax.numpy as jnp
>>> net = ResNet(stage_sizes=(1, 1), block="basic", width=0.25, stem="cifar")
>>> variables = net.init(jax.random.key(0), jnp.zeros((2, 16, 16, 3)), train=False)
>>> net.apply(variables, jnp.zeros((2, 16, 16, 3)), train=False).shape
(2, 32)

``remat`` (:mod:`sslax.models.remat`) trades compute for memory in training; it changes neither
the parameters nor the results, only what the backward pass keeps and what it recomputes.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from sslax.models import remat as remat_lib

# "imagenet": 7x7 stride-2 convolution and max-pool; "cifar": 3x3 stride 1, no pool.
STEMS = ("imagenet", "cifar")
STAGES = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
}

# "dots" remat keeps the convolution outputs saved under this name (sslax.models.remat).
SAVED_NAME = "conv_out"
DOTS_POLICY = jax.checkpoint_policies.save_only_these_names(SAVED_NAME)


class _Block(nn.Module):
    channels: int
    strides: int
    bottleneck: bool
    norm: Any
    dtype: Any
    name_dots: bool = False  # names conv outputs for remat "dots"

    @nn.compact
    def __call__(self, x):
        def conv(*args, **kwargs):
            layer = nn.Conv(*args, use_bias=False, dtype=self.dtype, **kwargs)
            if not self.name_dots:
                return layer
            return lambda h: checkpoint_name(layer(h), SAVED_NAME)

        out_channels = self.channels * (4 if self.bottleneck else 1)
        if self.bottleneck:
            y = nn.relu(self.norm()(conv(self.channels, (1, 1))(x)))
            y = nn.relu(self.norm()(conv(self.channels, (3, 3), self.strides)(y)))
            y = conv(out_channels, (1, 1))(y)
        else:
            y = nn.relu(self.norm()(conv(self.channels, (3, 3), self.strides)(x)))
            y = conv(out_channels, (3, 3))(y)
        # Zero-init the last BN scale so each residual block starts as the identity (Goyal et al.).
        y = self.norm(scale_init=nn.initializers.zeros)(y)
        if x.shape[-1] != out_channels or self.strides != 1:
            x = self.norm()(conv(out_channels, (1, 1), self.strides)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ResNet backbone: images [N, H, W, 3] -> pooled features h [N, C].

    Attributes:
      stage_sizes: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      block: "basic" or "bottleneck".
      width: channel multiplier (64 * width channels in the first stage).
      stem: "imagenet" (7x7 stride 2 + max-pool) or "cifar" (3x3 stride 1, no pool).
      dtype: computation dtype (parameters stay float32).
      remat: what the backward pass recomputes rather than keeps: one of
        :data:`sslax.models.remat.REMAT` ("dots" keeps each block's convolution outputs).
    """

    stage_sizes: Sequence[int]
    block: str = "basic"
    width: float = 1.0
    stem: str = "imagenet"
    dtype: Any = jnp.float32
    remat: str = "none"

    @nn.compact
    def __call__(self, x, *, train: bool):
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {self.stem!r}")
        remat_lib.check(self.remat)
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
        )
        base = max(8, int(round(64 * self.width)))

        # Functions of (module, x) that make their submodules where they run, so that remat can
        # lift them; ``train`` is closed over (remat would trace an argument).
        def block(channels: int, strides: int):
            def apply(module, h):
                return _Block(
                    channels,
                    strides,
                    self.block == "bottleneck",
                    norm,
                    self.dtype,
                    name_dots=self.remat == "dots",
                )(h)

            return remat_lib.rematted(
                apply,
                self.remat,
                per_block=True,
                dots_policy=DOTS_POLICY,
                keep=remat_lib.keep_reductions,
            )

        def layers(module, x):
            x = x.astype(self.dtype)
            if self.stem == "imagenet":
                x = nn.Conv(
                    base, (7, 7), 2, padding=[(3, 3), (3, 3)], use_bias=False, dtype=self.dtype
                )(x)
                x = nn.relu(norm()(x))
                x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
            else:
                x = nn.Conv(base, (3, 3), 1, use_bias=False, dtype=self.dtype)(x)
                x = nn.relu(norm()(x))
            for i, num_blocks in enumerate(self.stage_sizes):
                for j in range(num_blocks):
                    x = block(base * 2**i, 2 if (i > 0 and j == 0) else 1)(module, x)
            return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)

        return remat_lib.rematted(
            layers, self.remat, per_block=False, keep=remat_lib.keep_reductions
        )(self, x)
