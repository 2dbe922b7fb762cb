"""DINO: one short run checked piece by piece, the optimiser's schedules, and the collapse study.

Tiny models throughout: ResNet-18 at width 1/8 on 16 px shapes (batch 32), two global crops and
two 8 px local crops, a head of K = 256 prototypes. Every run shares one setting, in which a
fast teacher (momentum 0.98) and a high learning rate (5e-3 at batch 32) make the collapse
study visible in 300 steps; the runs differ only in the anti-collapse switches and the seed.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sslax import configs, train
from sslax.data import shapes
from sslax.methods import common, dino
from sslax.models import last_layer_mask


K = 256
LOG_K = math.log(K)
FROZEN_STEPS = 5
RUN_STEPS = 300


def _config(**dino_overrides):
    config = configs.shapes_config("simclr")
    config.method = "dino"
    config.dino = dino.defaults()
    config.update(
        {
            "image_size": 16,
            "width": 0.125,
            "batch_size": 32,
            "optimizer": "adamw",
            "learning_rate": 0.04,  # x 32/256: 5e-3
            "warmup_steps": 2,
            "weight_decay": 0.04,
            # The schedules' horizon: the runs stop at RUN_STEPS, with the learning rate and
            # the teacher momentum still near their peak and base values.
            "total_steps": 1000,
        }
    )
    config.dino.update(
        {
            "out_dim": K,
            "hidden_dim": 64,
            "bottleneck_dim": 32,
            "local_size": 8,
            "num_local": 2,
            "teacher_momentum_base": 0.98,
            "freeze_last_layer_steps": FROZEN_STEPS,
            "warmup_teacher_temp": 0.02,
            "teacher_temp": 0.04,
            "warmup_teacher_temp_steps": 10,
        }
    )
    config.dino.update(dino_overrides)
    return config


@functools.cache
def _method(**switches):
    config = _config(**switches)
    method = dino.make(config)
    return config, method, jax.jit(method.init), jax.jit(method.train_step, donate_argnums=0)


@functools.cache
def _images(seed):
    return shapes.generate(128, image_size=16, seed=seed)[0]


@functools.cache
def _initial_state(seed):
    # The switches change neither the state's layout nor its initial values, so one compiled
    # init serves every run.
    _, _, init, _ = _method()
    return jax.device_get(init(jax.random.key(seed), _images(seed)[:1]))


def _batch(images, step, batch_size=32):
    idx = (np.arange(batch_size) + step * batch_size) % len(images)
    return {"image": images[idx], "index": jnp.asarray(idx, jnp.int32)}


@functools.cache
def _run(seed, **switches):
    """RUN_STEPS jitted steps with the state donated, as train.py runs them.

    Returns the host states after 0..20 steps, every step's metrics, and the final state.
    """
    _, _, _, step = _method(**switches)
    state = jax.device_put(_initial_state(seed))
    rng = jax.random.key(seed + 1)
    states, history = [jax.device_get(state)], []
    for k in range(RUN_STEPS):
        state, metrics = step(state, _batch(_images(seed), k), rng)
        history.append({name: float(v) for name, v in metrics.items()})
        if k < 20:
            states.append(jax.device_get(state))
    return states, history, state


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _max_abs_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(_leaves(a), _leaves(b)))


def test_twenty_steps_give_finite_losses_and_spread_embeddings():
    _, history, _ = _run(0)
    losses = [h["loss"] for h in history[:20]]
    assert all(math.isfinite(x) for x in losses), losses
    # Student logits of the global crops, L2-normalised: 0 when every image gives the same
    # output (either collapse), 1/sqrt(K) = 0.0625 for isotropic directions. Measured 0.017 /
    # 0.013 / 0.014 after 20 steps for seeds 0 / 1 / 2; the collapsed runs of the study below
    # end at 0.0015-0.0023.
    std = history[19]["embedding_std"]
    assert std > 0.006, f"embedding_std {std:.4f} after 20 steps"


def test_encode_returns_the_backbone_feature_and_the_prototype_logits():
    _, _, state = _run(0)
    _, method, _, _ = _method()
    h, z = jax.jit(method.encode)(state, _images(3)[:5])
    assert h.shape == (5, 64) and z.shape == (5, K), (h.shape, z.shape)
    # Logits are cosines between the L2-normalised bottleneck and unit-norm prototypes.
    assert np.all(np.isfinite(z)) and np.max(np.abs(z)) <= 1.0 + 1e-5


def test_teacher_is_the_ema_of_the_new_student_params():
    config, _, _, _ = _method()
    states, history, _ = _run(0)
    for k in range(20):
        m = float(
            common.cosine_ema_momentum(
                k, base=config.dino.teacher_momentum_base, total_steps=config.total_steps
            )
        )
        assert history[k]["ema_momentum"] == pytest.approx(m, abs=1e-6)
        expected = jax.tree.map(
            lambda t, s, m=m: m * t + (1 - m) * s, states[k].teacher_params, states[k + 1].params
        )
        assert _max_abs_diff(expected, states[k + 1].teacher_params) < 1e-6, k
    first, last = states[0], states[20]
    assert _max_abs_diff(first.params, first.teacher_params) == 0.0
    gap = _max_abs_diff(last.params, last.teacher_params)
    assert gap > 1e-4, f"the teacher equals the student after 20 steps (gap {gap})"
    start = _max_abs_diff(first.teacher_params, last.params)
    assert gap < start, f"the teacher did not move towards the student: {gap} vs {start}"


def test_centre_starts_at_zero_and_moves_every_step():
    states, _, _ = _run(0)
    centres = [np.asarray(s.center) for s in states]
    assert not np.any(centres[0])
    moves = [float(np.max(np.abs(b - a))) for a, b in itertools.pairwise(centres)]
    assert min(moves) > 0, moves
    # A running mean of logits, which are cosines.
    assert np.max(np.abs(centres[-1])) <= 1.0


def test_last_layer_is_frozen_for_the_first_steps_then_trained():
    states, _, _ = _run(0)

    def split(state):
        mask = jax.tree.leaves(last_layer_mask(state.params))
        leaves = _leaves(state.params)
        return [x for x, m in zip(leaves, mask) if m], [x for x, m in zip(leaves, mask) if not m]

    last_0, rest_0 = split(states[0])
    assert last_0, "no last layer found"
    for k in range(1, FROZEN_STEPS + 1):
        assert all(np.array_equal(a, b) for a, b in zip(last_0, split(states[k])[0])), k
    moved = _max_abs_diff(rest_0, split(states[FROZEN_STEPS])[1])
    assert moved > 0, "the rest of the network did not train during the frozen steps"
    released = _max_abs_diff(last_0, split(states[FROZEN_STEPS + 1])[0])
    assert released > 0, "the last layer did not move once released"


def test_teacher_temperature_warms_up_linearly_then_stays():
    _, history, _ = _run(0)
    measured = [h["teacher_temp"] for h in history[:20]]
    expected = [0.02 + 0.02 * min(k / 10, 1.0) for k in range(20)]
    np.testing.assert_allclose(measured, expected, rtol=1e-6)
    config = configs.shapes_config("dino")
    assert float(dino.teacher_temperature(jnp.int32(7), config)) == pytest.approx(0.04)
    config.dino.sharpening = False
    assert float(dino.teacher_temperature(jnp.int32(7), config)) == pytest.approx(0.1)


def test_weight_decay_schedule_and_the_optimiser_that_applies_it():
    config = _config(freeze_last_layer_steps=2)
    config.total_steps = 4
    wd = dino.weight_decay_schedule(config)
    values = [float(wd(t)) for t in (0, 2, 4, 8)]
    np.testing.assert_allclose(values, [0.04, 0.22, 0.4, 0.4], rtol=1e-5)

    def lr(t):
        return 0.1 * (t + 1.0)

    tx = dino.optimizer(config, lr, wd)
    params = {
        "mlp": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
        "last_layer": {"v": jnp.full((3, 4), 2.0)},
    }
    state = tx.init(params)
    for t in range(4):
        # Zero gradients leave Adam's direction at 0: the update is the decay alone.
        updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
        decay = lr(t) * float(wd(t))
        np.testing.assert_allclose(updates["mlp"]["kernel"], -decay, rtol=1e-5)
        assert not np.any(updates["mlp"]["bias"])  # no decay on biases and norms
        frozen_expected = 0.0 if t < 2 else -2.0 * decay
        np.testing.assert_allclose(updates["last_layer"]["v"], frozen_expected, rtol=1e-5)


def test_each_gradient_tensor_is_clipped_on_its_own():
    clip = dino._clip_each_tensor(3.0)
    grads = {"a": jnp.full((4,), 10.0), "b": jnp.full((4,), 0.1)}
    clipped, _ = clip.update(grads, clip.init(grads))
    assert float(jnp.linalg.norm(clipped["a"])) == pytest.approx(3.0, rel=1e-5)
    np.testing.assert_allclose(clipped["b"], grads["b"])  # a global norm would shrink it too


def test_bad_sections_fail_validation_with_the_field_named():
    for field, value in [("center_momentum", 1.5), ("teacher_temp", 0.0), ("num_local", -1)]:
        config = _config(**{field: value})
        with pytest.raises(train.ConfigError, match=f"dino.{field}"):
            train.validate_config(config, num_devices=1)
    config = _config()
    config.update({"model": "vit_tiny", "patch_size": 16})
    with pytest.raises(ValueError, match="local_size 8 does not divide by patch_size 16"):
        dino.make(config)


def test_view_and_centring_choices_are_checked():
    for overrides, message in [
        (dict(views="simclr"), r"dino.views must be one of dino, recipe, got 'simclr'"),
        (dict(centering_mode="none"), r"dino.centering_mode must be one of centering, sinkhorn"),
        (dict(views="recipe", jitter_strength=6.0), r"dino.jitter_strength 6.0 scales DINO's"),
        (dict(sinkhorn_iters=0), r"dino.sinkhorn_iters"),
    ]:
        with pytest.raises((train.ConfigError, ValueError), match=message):
            config = _config(**overrides)
            train.validate_config(config, num_devices=1)
            dino.make(config)


def test_recipe_views_are_the_two_view_methods_views_plus_smaller_local_crops():
    config = _config(views="recipe")
    config.update({"augment_strength": 3.0, "crop_min_scale": 0.5})
    recipe = dino.recipe_of(config)
    shared = common.view_recipe(config).views
    assert recipe.views[:2] == shared and len(recipe.views) == 4
    for local in recipe.views[2:]:
        assert local.size == 8 and local.crop_scale == (dino.LOCAL_MIN_SCALE, 0.5)
        assert (local.brightness, local.hue) == (shared[0].brightness, shared[0].hue)
    # DINO's own views do not read the shared settings.
    assert dino.recipe_of(_config()).views[0].crop_scale == (0.4, 1.0)


def test_sinkhorn_targets_are_the_codes_and_centring_passes_the_logits_through():
    logits = jax.random.normal(jax.random.key(0), (2, 6, 5))
    center = jnp.full((5,), 0.5)
    same, kept = dino.teacher_targets(logits, center, 0.5, _config())
    assert same is logits and kept is center
    targets, zero = dino.teacher_targets(
        logits, center, 0.5, _config(centering_mode="sinkhorn_knopp", sinkhorn_iters=50)
    )
    assert not np.any(zero)
    codes = jax.nn.softmax((targets - zero) / 0.5, axis=-1).reshape(-1, 5)
    np.testing.assert_allclose(codes.sum(axis=1), 1.0, rtol=1e-5)
    # 50 rounds: every prototype holds an equal share of the 12 rows.
    np.testing.assert_allclose(codes.sum(axis=0), 12 / 5, rtol=1e-3)


@pytest.mark.parametrize(
    "overrides",
    [
        {"dino": {"local_size": 16}},
        {"model": "vit_tiny", "patch_size": 8},
        {"dino": {"views": "recipe", "centering_mode": "sinkhorn_knopp"}},
    ],
    ids=["local crops as large as the global ones", "vit", "recipe views, Sinkhorn-Knopp"],
)
def test_step_traces_for_equal_crop_sizes_and_for_vits(overrides):
    # Traced, not compiled: shapes and structure only.
    config = _config(**overrides.get("dino", {}))
    config.update({k: v for k, v in overrides.items() if k != "dino"})
    method = dino.make(config)
    state = jax.eval_shape(method.init, jax.random.key(0), _images(0)[:1])
    new_state, metrics = jax.eval_shape(
        method.train_step, state, _batch(_images(0), 0), jax.random.key(1)
    )
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert jax.tree.structure(state.params) == jax.tree.structure(state.teacher_params)
    assert metrics["loss"].shape == () and new_state.center.shape == (K,)


# The collapse study (paper Sec. 5.3, Fig. 7): means over the last 10 of 300 steps, measured
# for seeds 0 / 1 / 2, with log K = 5.545 and 1/K = 0.004:
#   centering off:  entropy 0.008 / 0.040 / 0.000, max prob 0.997 / 0.982 / 1.000,
#                   batch entropy 0.017 / 0.098 / 0.000 (one prototype for every image);
#   sharpening off: entropy 5.544 / 5.542 / 5.543, max prob 0.004 / 0.005 / 0.005;
#   both on:        entropy 4.18 / 4.54 / 4.37, max prob 0.143 / 0.073 / 0.099, mutual
#                   information 1.01 / 0.76 / 0.89 nats (batch entropy 5.19 / 5.29 / 5.25).
# Seed 0 of "both on" is the run the tests above inspect. The collapse tests are slow (CI's
# time budget); experiments/dino_centering.py's smoke test trains an ablation in the default
# suite, and its slow test asserts the same claims at the experiment's own small size.
SEEDS = [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]


def _summary(seed, **switches):
    _, history, _ = _run(seed, **switches)
    last = history[-10:]
    mean = {k: float(np.mean([h[k] for h in last])) for k in last[0]}
    # What the teacher's assignment tells about the image, in nats: 0 when every image gets
    # the same distribution, as in both collapses.
    mean["mutual_info"] = mean["teacher_batch_entropy"] - mean["teacher_entropy"]
    return mean


def _describe(m):
    keys = ("teacher_entropy", "teacher_batch_entropy", "teacher_max_prob", "mutual_info")
    return ", ".join(f"{k} {m[k]:.3f}" for k in keys)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_without_centering_the_teacher_collapses_to_one_prototype(seed):
    m = _summary(seed, centering=False)
    assert m["teacher_entropy"] < 0.1 and m["teacher_max_prob"] > 0.97, _describe(m)
    # One prototype for every image, not a confident but different one per image.
    assert m["teacher_batch_entropy"] < 0.25, _describe(m)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_without_sharpening_the_teacher_goes_uniform(seed):
    m = _summary(seed, sharpening=False)
    assert m["teacher_entropy"] > LOG_K - 0.02, _describe(m)


@pytest.mark.parametrize("seed", SEEDS)
def test_with_centering_and_sharpening_the_teacher_stays_in_between(seed):
    m = _summary(seed)
    assert 1.0 < m["teacher_entropy"] < LOG_K - 0.5, _describe(m)
    assert m["teacher_max_prob"] > 5 / K and m["mutual_info"] > 0.4, _describe(m)


@pytest.mark.slow
def test_a_step_sharded_over_eight_devices_matches_one_device():
    _, method, _, _ = _method()
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batch = _batch(_images(0), 0)
    sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
    rng = jax.random.key(1)
    state = _initial_state(0)
    one, m1 = jax.jit(method.train_step)(jax.device_put(state, jax.devices()[0]), batch, rng)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    eight, m8 = jax.jit(method.train_step)(state, sharded, rng)
    assert float(m8["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-4)
    assert _max_abs_diff(one.params, eight.params) < 1e-4
    np.testing.assert_allclose(eight.center, one.center, atol=1e-6)


@pytest.mark.slow
def test_vit_student_takes_the_local_crops():
    config = _config(num_local=2)
    config.update({"model": "vit_tiny", "patch_size": 8, "total_steps": 4})
    method = dino.make(config)
    state = jax.jit(method.init)(jax.random.key(0), _images(0)[:1])
    step = jax.jit(method.train_step)
    for k in range(2):
        state, metrics = step(state, _batch(_images(0), k, batch_size=8), jax.random.key(1))
        assert math.isfinite(float(metrics["loss"])), metrics
    assert jax.tree.structure(state.params) == jax.tree.structure(state.teacher_params)
