"""Backbones, heads and optimiser masks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sslax import optim
from sslax.models import Encoder, MLPHead, backbone_from_config


def _param_count(model, shape):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    return sum(np.prod(p.shape) for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize(
    "name, expected",
    [
        # torchvision's resnet18 / resnet50 without the final fc layer.
        ("resnet18", 11_689_512 - 513_000),
        ("resnet50", 25_557_032 - 2_049_000),
    ],
)
def test_resnet_parameter_counts_match_the_reference_architectures(name, expected):
    assert _param_count(backbone_from_config(name), (1, 224, 224, 3)) == expected


@pytest.mark.parametrize("stem, size, out", [("imagenet", 64, 512), ("cifar", 32, 512)])
def test_stems_and_output_width(stem, size, out):
    net = backbone_from_config("resnet18", width=1.0, stem=stem)
    shape = jax.eval_shape(
        lambda: net.init_with_output(jax.random.key(0), jnp.zeros((2, size, size, 3)), train=False)[
            0
        ]
    )
    assert shape.shape == (2, out)


def test_encoder_returns_h_and_z_and_updates_batch_stats_in_training():
    model = Encoder(
        backbone_from_config("resnet18", width=0.125, stem="cifar"),
        MLPHead(hidden_dims=(32,), out_dim=8),
    )
    x = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    (h, z), updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert h.shape == (4, 64) and z.shape == (4, 8)
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(updated["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="unknown model 'resnet19'"):
        backbone_from_config("resnet19")


def test_lars_excludes_biases_and_norms_from_decay_and_adaptation():
    params = {"kernel": jnp.ones((3, 3)), "bias": jnp.ones((3,)), "scale": jnp.ones((3,))}
    mask = optim.decay_mask(params)
    assert mask == {"kernel": True, "bias": False, "scale": False}
    tx = optim.make_optimizer("lars", optax.constant_schedule(1.0), weight_decay=0.5, momentum=0.0)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    # With zero gradients only weight decay moves anything: the kernel, not bias or scale.
    assert float(jnp.abs(updates["kernel"]).sum()) > 0
    assert (
        float(jnp.abs(updates["bias"]).sum()) == 0 and float(jnp.abs(updates["scale"]).sum()) == 0
    )


def test_warmup_cosine_schedule_endpoints():
    schedule = optim.warmup_cosine(2.0, warmup_steps=10, total_steps=110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(2.0)
    assert float(schedule(60)) == pytest.approx(1.0, rel=1e-5)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-6)


def test_learning_rate_scaling_rules():
    assert optim.scaled_learning_rate(0.3, batch_size=512, rule="linear") == pytest.approx(0.6)
    assert optim.scaled_learning_rate(0.075, batch_size=256, rule="sqrt") == pytest.approx(1.2)
    assert optim.scaled_learning_rate(0.1, batch_size=999, rule="none") == 0.1
    with pytest.raises(ValueError, match="lr_scaling"):
        optim.scaled_learning_rate(0.1, batch_size=8, rule="cubic")
