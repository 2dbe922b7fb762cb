"""``remat``: the backbone's activation rematerialisation changes no parameter and no result."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import configs, methods, models
from sslax.models import ResNet, backbone_from_config


def _loss_and_grads(net, variables, images, **apply_kwargs):
    def loss(params):
        out, _ = net.apply(
            {**variables, "params": params},
            images,
            train=True,
            mutable=["batch_stats", "intermediates"],
            **apply_kwargs,
        )
        return jnp.sum(out**2)

    return jax.jit(jax.value_and_grad(loss))(variables["params"])


def _init(net, images):
    return jax.jit(lambda x: net.init(jax.random.key(0), x, train=False))(images)


def _leaves_equal(a, b):
    same_tree = jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    return same_tree and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.mark.parametrize("block", [pytest.param("basic", marks=pytest.mark.slow), "bottleneck"])
def test_resnet_remat_keeps_parameters_loss_and_gradients_bit_for_bit(block):
    images = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3))
    reference = None
    for remat in models.REMAT:
        net = ResNet(stage_sizes=(1,), block=block, width=0.125, stem="cifar", remat=remat)
        variables = _init(net, images)
        result = (variables, *_loss_and_grads(net, variables, images))
        if reference is None:
            reference = result
            continue
        assert _leaves_equal(result[0], reference[0]), remat  # same names, same initial values
        assert float(result[1]) == float(reference[1]), remat
        assert _leaves_equal(result[2], reference[2]), remat


@pytest.mark.slow  # CI's time budget; the ResNet case above stays in the default suite
def test_vit_remat_keeps_parameters_and_matches_loss_and_gradients():
    # Stochastic depth on: the recomputed blocks must draw the same masks.
    images = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3))
    kwargs = dict(patch_size=8, hidden_dim=16, depth=2, num_heads=2, mlp_dim=32, image_size=16)
    reference = None
    for remat in models.REMAT:
        net = models.ViT(**kwargs, drop_path_rate=0.3, remat=remat)
        variables = _init(net, images)
        result = (
            variables,
            *_loss_and_grads(net, variables, images, rngs={"dropout": jax.random.key(2)}),
        )
        if reference is None:
            reference = result
            continue
        assert _leaves_equal(result[0], reference[0]), remat
        # XLA fuses recomputed blocks differently: equal up to float32 rounding.
        np.testing.assert_allclose(result[1], reference[1], rtol=1e-6)
        for got, want in zip(jax.tree.leaves(result[2]), jax.tree.leaves(reference[2])):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_remat_modes_differ_in_what_the_backward_pass_recomputes():
    net = {r: backbone_from_config("resnet18", width=0.125, remat=r) for r in models.REMAT}
    images = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: net["none"].init(jax.random.key(0), images, train=False))

    def checkpoints(remat):
        def loss(variables):
            out, _ = net[remat].apply(variables, images, train=True, mutable=["batch_stats"])
            return jnp.sum(out)

        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(variables))
        return len(re.findall(r"\b(?:checkpoint|remat\w*)\[", jaxpr))

    assert checkpoints("none") == 0
    assert checkpoints("full") == 1
    assert checkpoints("blocks") == checkpoints("dots") == 8  # ResNet-18's residual blocks


def test_config_remat_reaches_the_backbone_and_a_bad_value_is_one_clear_error():
    c = configs.shapes_config("simclr")
    c.remat = "blocks"
    assert methods.common.backbone(c).remat == "blocks"
    c.remat = "everything"
    with pytest.raises(configs.ConfigError, match="unknown remat 'everything'; choose one of none"):
        configs.validate_config(c, num_devices=1)
