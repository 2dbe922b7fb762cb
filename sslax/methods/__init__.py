"""Self-supervised methods, one small module each.

A method module exposes ``defaults()`` (its own hyperparameters, which become the config section
named after it) and ``make(config) -> Method``: pure functions to initialise a state pytree, to
take one training step, and to encode images for evaluation. It also exposes
``check_config(config, *, num_batch_shards=1)``, raising ValueError for values it cannot run
with on a batch split over ``num_batch_shards`` devices; :func:`sslax.configs.validate_config`
calls it before anything is compiled. The training loop (:mod:`sslax.train`) knows nothing else
about a method.
"""

from __future__ import annotations

import importlib

METHODS = (
    "simclr",
    "moco_v2",
    "moco_v3",
    "byol",
    "simsiam",
    "dino",
    "barlow_twins",
    "vicreg",
    "swav",
    "nnclr",
    "supcon",
    "mae",
    "dinov2",
)


# Methods whose encoder must be a ViT (masked patches); configs.shapes_config gives them one.
VIT_ONLY = ("mae", "dinov2")


def get(name: str):
    """The module implementing method ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return importlib.import_module(f"sslax.methods.{name}")


def embedding_dim(config) -> int:
    """D of the embeddings whose ``embedding_std`` a method logs (1/sqrt(D) when spread evenly)."""
    if config.method in ("dino", "dinov2"):
        return config[config.method].out_dim
    if config.method == "mae":  # the encoder's tokens: no projection
        from sslax.models.vit import VIT_PRESETS

        return VIT_PRESETS.get(config.model, (config.proj_dim,))[0]
    if config.method in ("barlow_twins", "vicreg"):
        return config[config.method].expander_dim
    if config.method == "simclr" and config.simclr.projection_head == "none":
        import jax
        import jax.numpy as jnp

        from sslax.methods import common

        net = common.backbone(config)
        image = jnp.zeros((1, config.image_size, config.image_size, 3))
        key = jax.random.key(0)
        h = jax.eval_shape(lambda x: net.init_with_output(key, x, train=False)[0], image)
        return h.shape[-1]
    return config.proj_dim
