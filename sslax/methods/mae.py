"""MAE (He et al. 2022, arXiv 2111.06377): masked autoencoders.

A ViT encoder sees only a random 25% of each image's patches (``mask_ratio`` 0.75, drawn per
image from its global example index); a light transformer decoder gets the encoded visible
patches back in place, a shared learned mask token at every hidden patch, and position
embeddings, and predicts the pixels of every patch. The loss is the mean squared error on the
hidden patches only, against targets normalised per patch (:func:`sslax.losses.mae_loss`).
One view per image: a random resized crop and a flip, no colour distortion. AdamW with betas
(0.9, 0.95), as the official code.

Evaluation (kNN, linear probe) reads the encoder on the whole image: h is the mean of its patch
tokens after the final LayerNorm (MAE's "global pool" features; its CLS token gets no direct
training signal), and z every patch token, concatenated in place ([N, L * D]): features that
keep where in the image each encoding sits, which ``python -m sslax.eval`` scores beside h.

Departures from the official ``models_mae.py``: position embeddings are learned (the official
ones are fixed 2-D sin-cos tables), as are sslax's ViT's.

Metrics: ``embedding_std`` of the mean visible-patch encoding, ``masked_fraction``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import augment, losses, optim
from sslax.methods import common
from sslax.models import vit_from_name
from sslax.models.vit import VIT_PRESETS, EncoderBlock, _init


def defaults() -> ml_collections.ConfigDict:
    """MAE's own settings at the shapes scale (official: decoder 512 wide, 8 blocks, 16 heads)."""
    c = ml_collections.ConfigDict()
    c.mask_ratio = 0.75
    c.decoder_dim = 128
    c.decoder_depth = 2
    c.decoder_heads = 4
    c.norm_pix = True
    c.adam_b2 = 0.95
    return c


def num_patches(config: ml_collections.ConfigDict) -> int:
    return (config.image_size // config.patch_size) ** 2


def num_visible(config: ml_collections.ConfigDict) -> int:
    """Patches the encoder sees: int(L * (1 - mask_ratio)), as the official random_masking."""
    return int(num_patches(config) * (1 - config.mae.mask_ratio))


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    section = config.mae
    if config.model not in VIT_PRESETS:
        raise ValueError(
            f"mae needs a ViT model ({', '.join(VIT_PRESETS)}), got model "
            f"{config.model!r}: add e.g. --config.model=vit_micro --config.patch_size=8, or "
            f"start from --config=experiments/configs/mae.py"
        )
    common.check_section(
        config,
        "mae",
        {
            "mask_ratio": (lambda v: 0 < v < 1, "in (0, 1)"),
            "decoder_dim": common.AT_LEAST_ONE,
            "decoder_depth": common.AT_LEAST_ONE,
            "decoder_heads": common.AT_LEAST_ONE,
            "adam_b2": (lambda v: 0 <= v < 1, "in [0, 1)"),
        },
    )
    if section.decoder_dim % section.decoder_heads:
        raise ValueError(
            f"mae.decoder_heads {section.decoder_heads} must divide mae.decoder_dim "
            f"{section.decoder_dim}"
        )
    if num_visible(config) < 1:
        raise ValueError(
            f"mae.mask_ratio {section.mask_ratio} leaves no visible patch of the "
            f"{num_patches(config)} (image_size {config.image_size}, patch_size "
            f"{config.patch_size})"
        )
    if section.norm_pix and 3 * config.patch_size**2 < 2:
        raise ValueError("mae.norm_pix needs patches of at least 2 values")


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """[N, H, W, C] -> [N, L, p * p * C], patches row-major, values (row, column, channel), as
    the official ``patchify``.

    >>> patchify(jnp.arange(16.0).reshape(1, 4, 4, 1), 2)[0, 1].tolist()  # top-right patch
    [2.0, 3.0, 6.0, 7.0]
    """
    n, height, width, channels = images.shape
    p = patch_size
    x = images.reshape(n, height // p, p, width // p, p, channels)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, (height // p) * (width // p), p * p * channels)


def random_masking(key: jax.Array, indices: jax.Array, num_patches: int, num_keep: int):
    """Per image: a random permutation of its patches, from ``fold_in(key, index)``.

    Returns ``keep`` [N, num_keep] (the visible patches, in shuffled order), ``restore``
    [N, L] (the inverse permutation: where each patch sits in [visible, hidden]) and ``mask``
    [N, L] bool, True for hidden patches; as the official ``random_masking``.
    """

    def one(index):
        noise = jax.random.uniform(jax.random.fold_in(key, index), (num_patches,))
        shuffle = jnp.argsort(noise)
        restore = jnp.argsort(shuffle)
        return shuffle[:num_keep], restore, restore >= num_keep

    return jax.vmap(one)(indices)


class MAEModel(nn.Module):
    """Encoder (a ViT on the visible patches) and decoder (to every patch's pixels)."""

    encoder: nn.Module
    num_patches: int
    patch_values: int
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, keep, restore, *, train: bool):
        """Pixel predictions [N, L, patch_values] and the visible patches' encodings."""
        x = self.encoder(images, train=train, keep=keep, tokens=True)  # [N, 1 + L_keep, D]
        encoded = x[:, 1:]
        x = nn.Dense(self.decoder_dim, dtype=self.dtype, kernel_init=_init, name="decoder_embed")(
            x.astype(self.dtype)
        )
        n, visible = x.shape[0], x.shape[1] - 1
        token = self.param("mask_token", _init, (1, 1, self.decoder_dim), jnp.float32)
        hidden = jnp.broadcast_to(
            token.astype(x.dtype), (n, self.num_patches - visible, self.decoder_dim)
        )
        patches = jnp.concatenate([x[:, 1:], hidden], axis=1)
        patches = jnp.take_along_axis(patches, restore[..., None], axis=1)  # back in place
        x = jnp.concatenate([x[:, :1], patches], axis=1)
        pos = self.param(
            "decoder_pos_embedding", _init, (1, 1 + self.num_patches, self.decoder_dim)
        )
        x = x + pos.astype(x.dtype)
        for i in range(self.decoder_depth):
            x = EncoderBlock(
                self.decoder_heads, 4 * self.decoder_dim, dtype=self.dtype, name=f"decoder{i}"
            )(x, train=train)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="decoder_norm")(x)
        pred = nn.Dense(self.patch_values, dtype=self.dtype, kernel_init=_init, name="pred")(x)
        return pred[:, 1:].astype(jnp.float32), encoded

    def features(self, images):
        """Evaluation features of the whole image: h the mean patch token [N, D], z the patch
        tokens in place [N, L * D]."""
        patches = self.encoder(images, train=False, tokens=True)[:, 1:]
        return jnp.mean(patches, axis=1), patches.reshape(patches.shape[0], -1)


def make(config: ml_collections.ConfigDict) -> common.Method:
    check_config(config)
    section = config.mae
    dtype = common.compute_dtype(config)
    encoder = vit_from_name(
        config.model,
        patch_size=config.patch_size,
        image_size=config.image_size,
        dtype=dtype,
        remat=config.remat,
    )
    model = MAEModel(
        encoder=encoder,
        num_patches=num_patches(config),
        patch_values=3 * config.patch_size**2,
        decoder_dim=section.decoder_dim,
        decoder_depth=section.decoder_depth,
        decoder_heads=section.decoder_heads,
        dtype=dtype,
    )
    schedule = common.learning_rate_schedule(config)
    if config.optimizer == "adamw":
        tx = optax.adamw(
            schedule,
            b1=0.9,
            b2=section.adam_b2,
            weight_decay=config.weight_decay,
            mask=optim.decay_mask,
        )
    else:
        tx = common.optimizer(config, schedule)
    view = augment.ViewRecipe(
        size=config.image_size,
        crop_scale=(config.crop_min_scale, 1.0),
        jitter_prob=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
    )
    recipe = augment.Recipe("mae", (view,))
    visible, patches = num_visible(config), num_patches(config)

    def init(rng, images):
        keep, restore, _ = random_masking(rng, jnp.zeros((1,), jnp.int32), patches, visible)
        variables = model.init(rng, common.images_to_float(images), keep, restore, train=False)
        params = variables["params"]
        return common.TrainState(
            step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params)
        )

    def train_step(state, batch, rng):
        view_key, mask_key = common.split_step_key(rng, state.step)
        (views,) = common.batch_views(view_key, batch, recipe)
        images = views[:, 0]
        keep, restore, mask = random_masking(mask_key, batch["index"], patches, visible)
        target = patchify(images, config.patch_size)

        def loss_fn(params):
            pred, encoded = model.apply({"params": params}, images, keep, restore, train=True)
            loss = losses.mae_loss(pred, target, mask, norm_pix=section.norm_pix)
            return loss, encoded

        (loss, encoded), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = common.apply_gradients(state, tx, grads, state.batch_stats)
        metrics = common.step_metrics(loss, jnp.mean(encoded, axis=1), grads, schedule(state.step))
        metrics["masked_fraction"] = jnp.mean(mask.astype(jnp.float32))
        return new_state, metrics

    def encode(state, images):
        return model.apply(
            {"params": state.params}, common.images_to_float(images), method=MAEModel.features
        )

    return common.Method(
        recipe=recipe,
        init=init,
        train_step=train_step,
        encode=encode,
        view_key=common.first_of_split_step_key,
    )
