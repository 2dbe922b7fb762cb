"""DINOv2: masks for iBOT, the ViT's mask token, and one step's three terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import configs, train
from sslax.methods import dino, dinov2
from sslax.models import vit_from_name


def _config(**section):
    config = configs.shapes_config("dinov2")  # vit_micro on 8 px patches
    config.update(dict(batch_size=8, image_size=16, warmup_steps=1))
    config.dinov2.update(
        {**dict(local_size=8, num_local=1, out_dim=32, hidden_dim=32, bottleneck_dim=16), **section}
    )
    return config


def test_masks_follow_the_probability_and_ratio_range():
    section = _config().dinov2
    masks = np.asarray(dinov2.random_patch_masks(jax.random.key(0), jnp.arange(400), 100, section))
    assert masks.shape == (400, 2, 100)
    counts = masks.sum(-1).reshape(-1)
    used = counts > 0
    assert 0.4 < used.mean() < 0.6  # mask_probability 0.5
    assert counts[used].min() >= 10 and counts[used].max() <= 50  # 10-50% of the patches
    never = _config(mask_probability=0.0).dinov2
    none = dinov2.random_patch_masks(jax.random.key(0), jnp.arange(8), 100, never)
    assert not np.asarray(none).any()


def test_the_mask_token_replaces_exactly_the_masked_patches():
    net = vit_from_name("vit_micro", patch_size=4, image_size=8, mask_token=True)
    images = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    variables = net.init(jax.random.key(1), images, train=False)
    none = jnp.zeros((2, 4), bool)
    plain = net.apply(variables, images, train=False, tokens=True)
    np.testing.assert_array_equal(
        net.apply(variables, images, train=False, mask=none, tokens=True), plain
    )
    masked = none.at[0, 1].set(True)
    out = net.apply(variables, images, train=False, mask=masked, tokens=True)
    assert np.abs(np.asarray(out[0] - plain[0])).max() > 1e-4
    np.testing.assert_array_equal(out[1], plain[1])  # image 1 had no mask
    # A masked patch's content no longer matters.
    other = images.at[0, 0:4, 4:8].set(0.0)
    np.testing.assert_allclose(
        net.apply(variables, other, train=False, mask=masked, tokens=True), out, atol=1e-6
    )
    with pytest.raises(ValueError, match="mask_token=True"):
        vit_from_name("vit_micro", patch_size=4, image_size=8).apply(
            variables, images, train=False, mask=masked
        )


@pytest.mark.slow  # two compiled steps (CI's time budget)
@pytest.mark.parametrize("mode", dino.CENTERINGS)
def test_a_step_has_three_finite_terms_and_no_patch_loss_without_masks(mode):
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    batch = {"image": jnp.asarray(images), "index": jnp.arange(8, dtype=jnp.int32)}
    metrics = {}
    for probability in (1.0, 0.0):
        method = dinov2.make(_config(mask_probability=probability, centering_mode=mode))
        state = jax.jit(method.init)(jax.random.key(0), images[:1])
        _, metrics[probability] = jax.jit(method.train_step)(state, batch, jax.random.key(1))
    masked, unmasked = metrics[1.0], metrics[0.0]
    for name in ("dino_loss", "ibot_loss", "koleo_loss", "loss"):
        assert np.isfinite(float(masked[name])), name
    assert float(masked["ibot_loss"]) > 0.1 and float(masked["masked_fraction"]) > 0.05
    assert float(unmasked["ibot_loss"]) == 0.0 and float(unmasked["masked_fraction"]) == 0.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(mask_ratio_min=0.6, mask_ratio_max=0.5), r"mask_ratio_min 0.6 must be <= "),
        (dict(centering_mode="none"), r"dinov2.centering_mode must be one of"),
        (dict(use_bn_in_head=True), r"dinov2.use_bn_in_head must be False"),
        (dict(local_size=12), r"dinov2.local_size 12 does not divide by patch_size 8"),
    ],
)
def test_bad_configs_are_refused_in_one_line(overrides, message):
    with pytest.raises(configs.ConfigError, match=message):
        train.validate_config(_config(**overrides), num_devices=1)
