"""sslax.methods.common: EMA arithmetic and schedule, view recipes by name, apply_model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import configs
from sslax.methods import common
from sslax.models import MLPHead


def test_ema_update_is_the_seeds_worked_example_to_float32():
    # MoCo's key encoder: 0.999 x 0.40 + 0.001 x 0.50 = 0.4001, as computed in float32.
    result = common.ema_update(jnp.float32(0.40), jnp.float32(0.50), 0.999)
    assert result.dtype == jnp.float32
    assert result == np.float32(0.4001), float(result)


def test_ema_update_at_momentum_0_copies_online_and_at_1_keeps_target():
    target = jnp.array([0.40, -1.5, 3.0], jnp.float32)
    online = jnp.array([0.50, 2.0, -7.25], jnp.float32)
    np.testing.assert_array_equal(common.ema_update(target, online, 0.0), online)
    np.testing.assert_array_equal(common.ema_update(target, online, 1.0), target)


def test_ema_update_on_nested_pytrees_with_batch_stats():
    rng = np.random.default_rng(0)

    def tree():
        return {
            "params": {
                "backbone": {"conv": {"kernel": rng.normal(size=(3, 3, 3, 4))}},
                "head": {"Dense_0": {"kernel": rng.normal(size=(4, 2)), "bias": rng.normal(2)}},
            },
            "batch_stats": {"BatchNorm_0": {"mean": rng.normal(4), "var": rng.random(4) + 0.5}},
        }

    target, online = (jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree()) for _ in "ab")
    momentum = 0.99
    updated = common.ema_update(target, online, momentum)
    assert jax.tree.structure(updated) == jax.tree.structure(target)
    for new, t, o in zip(*(jax.tree.leaves(x) for x in (updated, target, online))):
        expected = momentum * np.float64(t) + (1 - momentum) * np.float64(o)
        np.testing.assert_allclose(new, expected, rtol=1e-6, atol=1e-7)
        assert new.dtype == jnp.float32 and new.shape == t.shape


def test_cosine_ema_momentum_goes_from_base_to_one_and_stays_there():
    base, total = 0.996, 1000

    def momentum(step):
        return float(common.cosine_ema_momentum(step, base=base, total_steps=total))

    np.testing.assert_allclose(momentum(0), base, rtol=1e-7)
    np.testing.assert_allclose(momentum(total // 2), 1 - (1 - base) / 2, rtol=1e-7)  # 0.998
    np.testing.assert_allclose(momentum(total // 4), 1 - (1 - base) * (2**-0.5 + 1) / 2, rtol=1e-7)
    assert momentum(total) == 1.0
    # Past total_steps the unclamped cosine would come back down to 0.998 at 1.5 x total.
    assert momentum(3 * total // 2) == 1.0 and momentum(10 * total) == 1.0
    values = [momentum(s) for s in range(0, total + 1, 50)]
    assert np.all(np.diff(values) >= 0), values


def test_cosine_ema_momentum_under_jit_with_a_traced_step():
    schedule = jax.jit(lambda step: common.cosine_ema_momentum(step, base=0.99, total_steps=10))
    np.testing.assert_allclose(schedule(jnp.int32(0)), 0.99, rtol=1e-7)
    assert float(schedule(jnp.int32(25))) == 1.0


def _recipe_config(recipe, **overrides):
    config = configs.shapes_config("simclr")
    config.update({"recipe": recipe, "image_size": 24, "crop_min_scale": 0.3, **overrides})
    return config


@pytest.mark.parametrize("name", common.RECIPES)
def test_view_recipe_by_name_at_the_configs_size_and_crop(name):
    recipe = common.view_recipe(_recipe_config(name))
    assert recipe.name == name and len(recipe.views) == 2
    for view in recipe.views:
        assert view.size == 24 and view.crop_scale == (0.3, 1.0), view


def test_view_recipes_differ_as_their_papers_do():
    simclr = common.view_recipe(_recipe_config("simclr", augment_strength=0.5, augment_blur=False))
    assert simclr.views[0] == simclr.views[1]
    assert (simclr.views[0].brightness, simclr.views[0].hue, simclr.views[0].blur_prob) == (
        0.4,
        0.1,
        0.0,
    )
    moco = common.view_recipe(_recipe_config("moco_v2"))
    assert moco.views[0] == moco.views[1] and moco.views[0].blur_prob == 0.5
    byol = common.view_recipe(_recipe_config("byol"))
    assert [v.blur_prob for v in byol.views] == [1.0, 0.1]
    assert [v.solarize_prob for v in byol.views] == [0.0, 0.2]
    assert byol.views[0].saturation == 0.2


def test_view_recipe_rejects_an_unknown_name():
    with pytest.raises(ValueError, match=r"unknown recipe 'swav'; choose one of simclr, moco_v2"):
        common.view_recipe(_recipe_config("swav"))


def test_apply_model_updates_batch_stats_only_in_train_mode():
    model = MLPHead(hidden_dims=(8,), out_dim=4)
    x = jax.random.normal(jax.random.key(0), (16, 5)) * 3.0 + 2.0
    params, batch_stats = common.init_variables(model, jax.random.key(1), x)
    stats_before = jax.tree.map(np.array, batch_stats)

    out_eval, stats_eval = common.apply_model(model, params, batch_stats, x, train=False)
    assert stats_eval is batch_stats
    expected_eval = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
    np.testing.assert_array_equal(out_eval, expected_eval)

    out_train, stats_train = common.apply_model(model, params, batch_stats, x, train=True)
    assert jax.tree.structure(stats_train) == jax.tree.structure(batch_stats)
    # Running mean after one step: 0.9 x 0 (initial) + 0.1 x the batch mean of Dense_0's output.
    hidden = x @ params["Dense_0"]["kernel"]
    np.testing.assert_allclose(
        stats_train["BatchNorm_0"]["mean"], 0.1 * hidden.mean(0), rtol=1e-5, atol=1e-6
    )
    # Batch statistics, not the running ones, normalise in train mode: outputs differ.
    assert not np.allclose(out_train, out_eval)
    # The inputs are not mutated.
    jax.tree.map(np.testing.assert_array_equal, batch_stats, stats_before)


def _tiny(method):
    config = configs.shapes_config(method)
    config.update(
        {
            "batch_size": 16,
            "image_size": 16,
            "width": 0.125,
            "proj_hidden_dim": 32,
            "proj_dim": 16,
            "total_steps": 10,
            "warmup_steps": 1,
        }
    )
    return config


# BYOL (its target network) under -m slow, for CI's time budget.
@pytest.mark.parametrize("method", ["simclr", pytest.param("byol", marks=pytest.mark.slow)])
def test_bfloat16_compute_keeps_float32_parameters_and_optimizer_state(method):
    from sslax import methods

    config = _tiny(method)
    config.compute_dtype = "bfloat16"
    m = methods.get(method).make(config)
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    batch = {"image": jnp.asarray(images), "index": jnp.arange(16, dtype=jnp.int32)}
    state = m.init(jax.random.key(0, impl="rbg"), images[:1])
    state, metrics = jax.jit(m.train_step)(state, batch, jax.random.key(1))
    float_leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert {x.dtype for x in float_leaves} == {jnp.dtype(jnp.float32)}
    assert np.isfinite(float(metrics["loss"]))
    # And the network does compute in bfloat16 (a float32 run lowers to no bf16 value at all).
    hlo = jax.jit(m.train_step).lower(state, batch, jax.random.key(1)).as_text()
    assert "bf16" in hlo


EMA_METHODS = ("byol", "moco_v2", "moco_v3", "dino", "dinov2")


@pytest.mark.parametrize(
    "name",
    [
        # 10 s each: DINO's (the teacher its official kNN reads) in the default suite, the
        # others in the slow one (CI's time budget).
        pytest.param(n, marks=pytest.mark.slow) if n in ("byol", "moco_v2", "moco_v3") else n
        for n in EMA_METHODS
        + ("simclr", "simsiam", "barlow_twins", "vicreg", "swav", "nnclr", "supcon", "mae")
    ],
)
def test_ema_encode_reads_the_moving_average_network_and_only_it(name):
    from sslax import methods

    config = configs.shapes_config(name)
    config.update(image_size=16, width=0.125, proj_hidden_dim=32, proj_dim=16)
    if name in ("dino", "dinov2"):
        config[name].update(local_size=8, out_dim=32, hidden_dim=32, bottleneck_dim=16)
    method = methods.get(name).make(config)
    if name not in EMA_METHODS:
        assert method.ema_encode is None
        return
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    state = jax.jit(method.init)(jax.random.key(0), images[:1])
    field = "teacher_params" if name in ("dino", "dinov2") else "target_params"
    moved = state.replace(**{field: jax.tree.map(lambda p: 0.5 * p, getattr(state, field))})

    @jax.jit
    def features(state, moved):
        return [f(s, images)[0] for f in (method.encode, method.ema_encode) for s in (state, moved)]

    online, online_moved, ema, ema_moved = features(state, moved)
    # The moving average starts as a copy of the online network, and only it moves here.
    np.testing.assert_array_equal(ema, online)
    np.testing.assert_array_equal(online_moved, online)
    assert not np.allclose(ema_moved, online)


def test_byol_without_stop_gradient_has_no_moving_average_network():
    from sslax import methods

    config = configs.shapes_config("byol")
    config.byol.stop_gradient = False
    assert methods.get("byol").make(config).ema_encode is None
