"""Backbones, heads, and the (h, z) encoder that every method trains."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslax.models.dino_head import DINOHead, last_layer_mask
from sslax.models.heads import MLPHead
from sslax.models.remat import REMAT
from sslax.models.resnet import STAGES, STEMS as RESNET_STEMS, ResNet
from sslax.models.vit import VIT_PRESETS, ViT, vit_from_name

__all__ = [
    "DINOHead",
    "Encoder",
    "MLPHead",
    "MODELS",
    "REMAT",
    "RESNET_STEMS",
    "ResNet",
    "VIT_PRESETS",
    "ViT",
    "backbone_from_config",
    "last_layer_mask",
    "vit_from_name",
]

MODELS = tuple(STAGES) + tuple(VIT_PRESETS)


class Encoder(nn.Module):
    """Backbone plus projection head: images -> (h, z).

    h is the representation kept for downstream use; z is what the loss sees.
    """

    backbone: nn.Module
    head: nn.Module

    @nn.compact
    def __call__(self, images, *, train: bool):
        h = self.backbone(images, train=train)
        return h, self.head(h, train=train)


def backbone_from_config(
    model: str,
    *,
    width: float = 1.0,
    stem: str = "imagenet",
    patch_size: int = 16,
    image_size: int = 224,
    dtype: Any = jnp.float32,
    remat: str = "none",
) -> nn.Module:
    """A backbone by name: ResNets use width and stem, ViTs patch_size and image_size.

    ``remat`` (one of :data:`REMAT`, see :mod:`sslax.models.remat`) trades compute for memory
    in training; parameters and results do not depend on it.
    """
    if model in VIT_PRESETS:
        return vit_from_name(
            model, patch_size=patch_size, image_size=image_size, dtype=dtype, remat=remat
        )
    if model not in STAGES:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    stages, block = STAGES[model]
    return ResNet(stage_sizes=stages, block=block, width=width, stem=stem, dtype=dtype, remat=remat)
