"""Backbones, heads, and the (h, z) encoder that every method trains."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslax.models.heads import MLPHead
from sslax.models.resnet import STAGES, ResNet

MODELS = tuple(STAGES)


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


def backbone_from_config(model: str, *, width: float = 1.0, stem: str = "imagenet",
                         dtype: Any = jnp.float32) -> nn.Module:
  if model not in STAGES:
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
  stages, block = STAGES[model]
  return ResNet(stage_sizes=stages, block=block, width=width, stem=stem, dtype=dtype)
