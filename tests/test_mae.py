"""MAE: per-image masks from the global index, an encoder that sees only the visible patches,
and a loss on the hidden ones (the loss itself: tests/test_losses.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import configs, losses, train
from sslax.methods import common, mae
from sslax.models import vit_from_name


def _config(**section):
    config = configs.shapes_config("mae")  # vit_micro on 8 px patches
    config.update(dict(batch_size=8, image_size=16))
    config.mae.update({**dict(decoder_dim=32, decoder_heads=2, decoder_depth=1), **section})
    return config


def test_patchify_orders_patches_row_major_and_values_as_the_official_code():
    images = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    patches = np.asarray(mae.patchify(images, 2))
    assert patches.shape == (2, 4, 12)
    # Patch 2 is the bottom-left 2x2 block; its values run (row, column, channel).
    np.testing.assert_array_equal(patches[1, 2], np.asarray(images)[1, 2:4, 0:2].reshape(-1))


def test_random_masking_keeps_a_fixed_share_per_image_from_its_index():
    key = jax.random.key(0)
    keep, restore, mask = mae.random_masking(key, jnp.arange(32), 16, 4)
    keep, restore, mask = map(np.asarray, (keep, restore, mask))
    assert keep.shape == (32, 4) and (mask.sum(1) == 12).all()
    for k, r, m in zip(keep, restore, mask):
        assert not m[k].any()  # the kept patches are the visible ones
        np.testing.assert_array_equal(np.sort(r), np.arange(16))  # a permutation
    # Each image's mask depends on its own index only: the same index, the same mask.
    again = np.asarray(mae.random_masking(key, jnp.arange(30, 34), 16, 4)[2])
    np.testing.assert_array_equal(again[:2], mask[30:32])
    assert len({m.tobytes() for m in mask}) > 16


def test_the_encoder_sees_only_visible_patches_and_the_loss_only_hidden_ones():
    config = _config()
    method = mae.make(config)
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    state = jax.jit(method.init)(jax.random.key(0), images[:1])
    model = mae.MAEModel(
        encoder=vit_from_name("vit_micro", patch_size=8, image_size=16),
        num_patches=4,
        patch_values=192,
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=2,
    )
    keep, restore, mask = mae.random_masking(jax.random.key(1), jnp.arange(8), 4, 1)
    x = common.images_to_float(images)

    @jax.jit
    def run(x):
        pred, encoded = model.apply({"params": state.params}, x, keep, restore, train=False)
        loss = losses.mae_loss(pred, mae.patchify(x, 8), mask)
        return pred, encoded, loss

    pred, encoded, loss = run(x)
    assert pred.shape == (8, 4, 192) and encoded.shape == (8, 1, 128)
    # Change every hidden patch: the encoder's output stays, the loss (its targets) moves.
    hidden = np.repeat(np.repeat(np.asarray(mask).reshape(8, 2, 2), 8, 1), 8, 2)[..., None]
    _, encoded_h, loss_h = run(jnp.where(hidden, 1.0 - x, x))
    np.testing.assert_array_equal(encoded_h, encoded)
    assert abs(float(loss_h) - float(loss)) > 1e-3
    # Change a visible patch: the encoding moves.
    _, encoded_v, _ = run(jnp.where(hidden, x, 1.0 - x))
    assert np.abs(np.asarray(encoded_v) - np.asarray(encoded)).max() > 1e-3


def test_evaluation_features_are_the_mean_patch_token_and_the_tokens_in_place():
    method = mae.make(_config())
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    state = jax.jit(method.init)(jax.random.key(0), images[:1])
    h, z = jax.jit(method.encode)(state, images)
    assert h.shape == (3, 128) and z.shape == (3, 4 * 128)
    np.testing.assert_allclose(h, np.asarray(z).reshape(3, 4, 128).mean(axis=1), atol=1e-6)
    # z keeps position: swapping two quadrants of the image moves it.
    swapped = images.copy()
    swapped[:, :8, :8], swapped[:, 8:, 8:] = images[:, 8:, 8:], images[:, :8, :8]
    _, z_swapped = jax.jit(method.encode)(state, swapped)
    assert not np.allclose(z, z_swapped, atol=1e-3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(mask_ratio=1.0), r"mae.mask_ratio must be in \(0, 1\)"),
        (dict(mask_ratio=0.9), r"mae.mask_ratio 0.9 leaves no visible patch of the 4"),
        (dict(decoder_dim=30, decoder_heads=4), r"mae.decoder_heads 4 must divide"),
    ],
)
def test_bad_configs_are_refused_in_one_line(overrides, message):
    with pytest.raises(configs.ConfigError, match=message):
        train.validate_config(_config(**overrides), num_devices=1)
