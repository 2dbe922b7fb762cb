"""MoCo v2 and v3: the momentum encoder's EMA, the queue, keys from every device, short runs.

Every run uses the configs of ``experiments/configs`` shrunk to a tiny ResNet-18 (width 1/8,
16 px, batch 16) on the built-in shapes. Each compiled step is shared by several tests; the
states are initialised from an "rbg" key, whose initialisers compile about 4x faster on CPU
than threefry's (the training steps themselves use the ordinary threefry key).
"""

import importlib.util
import itertools
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sslax import augment
from sslax.data import shapes
from sslax.methods import common, moco_v2, moco_v3


CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "configs"
B, K, STEPS = 16, 48, 20  # K = 3 batches, so the queue wraps around after step 2
TINY = {
    "batch_size": B,
    "image_size": 16,
    "width": 0.125,
    "total_steps": STEPS,
    "warmup_steps": 2,  # the learning rate of step 0 is exactly 0
    "proj_hidden_dim": 32,
    "proj_dim": 16,
}
RNG = jax.random.key(1)


class Run(NamedTuple):
    config: Any
    method: Any
    step: Any  # the jitted train step
    states: list  # states[t] is the state before step t
    metrics: list  # metrics[t] of step t


def _config(name, **section):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    config_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config_file)
    config = config_file.get_config()
    with config.unlocked():
        config.update(TINY)
        if name == "moco_v2":
            config.moco_v2.symmetric = False  # the paper's loss; the laptop config's is symmetric
        config[name].update(section)
    return config


def _init(method):
    return jax.jit(method.init)(jax.random.key(0, impl="rbg"), np.zeros((1, 16, 16, 3), np.uint8))


@pytest.fixture(scope="module")
def images():
    return shapes.generate(B * STEPS, image_size=16, seed=0)[0]


def _batch(images, t):
    return {
        "image": jnp.asarray(images[t * B : (t + 1) * B]),
        "index": jnp.arange(t * B, (t + 1) * B, dtype=jnp.int32),
    }


def _run(step, state, images, steps):
    states, metrics = [state], []
    for t in range(steps):
        state, m = step(state, _batch(images, t), RNG)
        states.append(state)
        metrics.append(jax.device_get(m))
    return states, metrics


def _leaf(tree, path):
    for name in path:
        tree = tree[name]
    return tree


# --------------------------------------------------------------------------------------------
# MoCo v2
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v2(images):
    """The default path (shuffling BN over 2 groups) with the paper's key momentum 0.999."""
    config = _config("moco_v2", queue_size=K, shuffle_bn_groups=2, momentum=0.999)
    method = moco_v2.make(config)
    step = jax.jit(method.train_step)
    states, metrics = _run(step, _init(method), images, STEPS)
    return Run(config, method, step, states, metrics)


def test_v2_seed_ema_example_through_the_train_step(v2, images):
    # One weight of the query encoder at 0.50, its key-encoder copy at 0.40, momentum 0.999:
    # 0.999 * 0.40 + 0.001 * 0.50 = 0.4001. Step 0 has learning rate 0, so the query weight
    # stays 0.50 and the key weight must land on the seed's number.
    step, states = v2.step, v2.states
    path = ("head", "Dense_1", "bias")
    state = states[0]
    params = jax.tree.map(jnp.copy, state.params)
    target = jax.tree.map(jnp.copy, state.target_params)
    _leaf(params, path[:-1])[path[-1]] = jnp.full_like(_leaf(params, path), 0.50)
    _leaf(target, path[:-1])[path[-1]] = jnp.full_like(_leaf(target, path), 0.40)
    new, metrics = step(state.replace(params=params, target_params=target), _batch(images, 0), RNG)
    assert float(metrics["learning_rate"]) == 0.0
    np.testing.assert_array_equal(_leaf(new.params, path), 0.50)
    np.testing.assert_allclose(_leaf(new.target_params, path), 0.4001, rtol=0, atol=1e-7)
    # Every other key weight started equal to its query weight, and so stays equal to it.
    expected = jax.tree.map(jnp.copy, new.params)
    _leaf(expected, path[:-1])[path[-1]] = _leaf(new.target_params, path)
    for key, want in zip(jax.tree.leaves(new.target_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(key, want, rtol=0, atol=1e-7)
    # The running BatchNorm statistics follow with the same momentum, towards the new ones.
    for old_k, new_k, new_q in zip(
        jax.tree.leaves(state.target_batch_stats),
        jax.tree.leaves(new.target_batch_stats),
        jax.tree.leaves(new.batch_stats),
    ):
        np.testing.assert_allclose(new_k, 0.999 * old_k + 0.001 * new_q, rtol=1e-6, atol=1e-7)


def test_v2_key_encoder_trails_the_query_encoder_by_the_ema_of_new_params(v2):
    states, metrics = v2.states, v2.metrics
    for t in (3, 10):
        before, after = states[t], states[t + 1]
        expected = jax.tree.map(
            lambda k, q: 0.999 * k + 0.001 * q, before.target_params, after.params
        )
        for got, want in zip(jax.tree.leaves(after.target_params), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert metrics[10]["key_distance"] > 1e-3, metrics[10]["key_distance"]


def _key_function(config):
    """Step t's normalised keys recomputed outside the train step, with a given encoder."""
    model = moco_v2.query_encoder(config)
    recipe = common.view_recipe(config)
    groups = config.moco_v2.shuffle_bn_groups

    @jax.jit
    def keys(params, batch_stats, batch, t):
        view_key, shuffle_key = jax.random.split(jax.random.fold_in(RNG, t))
        views = augment.two_views(view_key, batch["image"], recipe, indices=batch["index"])
        view2 = views[:, 1]

        def project(x):
            variables = {"params": params, "batch_stats": batch_stats}
            (_, z), _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
            return z

        z = moco_v2.grouped(project, view2, groups, jax.random.split(shuffle_key)[1])
        return z / jnp.linalg.norm(z, axis=-1, keepdims=True)

    return keys


def test_v2_queue_is_a_fifo_of_the_key_encoders_normalised_keys(v2, images):
    config, states = v2.config, v2.states
    keys_of = _key_function(config)
    for t in range(6):  # two full turns of the 3-batch queue
        before, after = states[t], states[t + 1]
        rows = slice((t * B) % K, (t * B) % K + B)
        assert int(after.queue_ptr) == ((t + 1) * B) % K
        keys = keys_of(before.target_params, before.target_batch_stats, _batch(images, t), t)
        np.testing.assert_allclose(after.queue[rows], keys, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(after.queue[rows], axis=-1), 1.0, atol=1e-5)
        untouched = np.ones(K, bool)
        untouched[rows] = False
        np.testing.assert_array_equal(after.queue[untouched], before.queue[untouched])
    # The queued keys are the key encoder's, not those of the step's query encoder.
    t = 5
    query_keys = keys_of(states[t].params, states[t].batch_stats, _batch(images, t), t)
    rows = slice((t * B) % K, (t * B) % K + B)
    gap = float(jnp.max(jnp.abs(query_keys - states[t + 1].queue[rows])))
    assert gap > 1e-3, f"the query encoder's keys are within {gap} of the queued keys"


def test_v2_queue_size_must_be_a_multiple_of_the_global_batch():
    config = _config("moco_v2", queue_size=50)
    with pytest.raises(ValueError, match=r"queue_size 50 .* batch_size 16"):
        moco_v2.make(config)
    with pytest.raises(ValueError, match=r"queue_size 50 .* batch_size 16"):
        moco_v2.check_config(config)
    config.moco_v2.queue_size = 64
    moco_v2.check_config(config)
    config.moco_v2.shuffle_bn_groups = 3
    with pytest.raises(ValueError, match=r"shuffle_bn_groups 3 .* batch_size 16"):
        moco_v2.check_config(config)


def test_grouped_applies_the_function_to_random_disjoint_groups_in_row_order():
    x = jax.random.normal(jax.random.key(0), (12, 3))

    def group_mean(g):  # couples the rows of a group, as batch statistics do
        return jnp.broadcast_to(jnp.mean(g, axis=0), g.shape)

    out = np.asarray(moco_v2.grouped(group_mean, x, 3, jax.random.key(5)))
    labels = np.unique(out[:, 0], return_inverse=True)[1]
    assert sorted(np.bincount(labels)) == [4, 4, 4]
    for g in range(3):
        members = labels == g
        np.testing.assert_allclose(out[members], np.broadcast_to(x[members].mean(0), (4, 3)), 1e-6)
    other = np.asarray(moco_v2.grouped(group_mean, x, 3, jax.random.key(6)))
    assert not np.allclose(out, other), "the groups should depend on the key"
    np.testing.assert_array_equal(moco_v2.grouped(group_mean, x, 1, None), group_mean(x))


@pytest.fixture(scope="module")
def v2_sharded(v2, images):
    """Two steps on 8 devices, as train.py runs them, with key momentum 0.

    Momentum 0 leaves the queue of steps 0 and 1 as with 0.999: keys are computed before the
    EMA, and after step 0 (learning rate 0) the key parameters equal the query parameters
    whatever the momentum. So one compiled run checks both the devices and momentum 0.
    """
    config = _config("moco_v2", queue_size=K, shuffle_bn_groups=2, momentum=0.0)
    method = moco_v2.make(config)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state = jax.device_put(jax.tree.map(jnp.copy, v2.states[0]), replicated)
    shardings = jax.tree.map(lambda _: replicated, state)
    step = jax.jit(
        method.train_step,
        donate_argnums=0,
        in_shardings=(shardings, data, replicated),
        out_shardings=(shardings, replicated),
    )
    metrics = []
    for t in range(2):
        state, m = step(state, jax.device_put(_batch(images, t), data), RNG)
        metrics.append(jax.device_get(m))
    return state, metrics


def test_v2_keys_of_every_device_enter_the_queue(v2, v2_sharded):
    sharded, sharded_metrics = v2_sharded
    single = v2.states[2]
    assert len(sharded.queue.sharding.device_set) == 8
    np.testing.assert_allclose(sharded.queue, single.queue, rtol=0, atol=1e-5)
    assert int(sharded.queue_ptr) == 2 * B
    for t in range(2):
        np.testing.assert_allclose(sharded_metrics[t]["loss"], v2.metrics[t]["loss"], rtol=1e-5)


def test_v2_momentum_zero_makes_the_key_encoder_the_new_query_encoder(v2, v2_sharded):
    sharded, metrics = v2_sharded
    assert metrics[1]["learning_rate"] > 0  # step 1 moved the query encoder
    for key, query in zip(jax.tree.leaves(sharded.target_params), jax.tree.leaves(sharded.params)):
        np.testing.assert_array_equal(key, query)
    for key, query in zip(
        jax.tree.leaves(sharded.target_batch_stats), jax.tree.leaves(sharded.batch_stats)
    ):
        np.testing.assert_array_equal(key, query)
    assert metrics[1]["key_distance"] == 0.0
    # At momentum 0.999 the same step leaves the key encoder behind.
    assert v2.metrics[1]["key_distance"] > 0.0


def test_v2_twenty_steps_train_without_collapse(v2, images):
    config, method, states, metrics = v2.config, v2.method, v2.states, v2.metrics
    losses = [float(m["loss"]) for m in metrics]
    stds = [float(m["embedding_std"]) for m in metrics]
    assert np.all(np.isfinite(losses)), losses
    # Uniform on the sphere is 1/sqrt(16) = 0.25, collapse 0. The tiny queue (3 batches of keys
    # from a near-initial key encoder) and learning rate let it drift down in these 20 steps.
    assert stds[-1] > 0.05, f"embedding_std {stds}; measured 0.190 at step 0, 0.079 at step 19"
    assert [int(m["queue_ptr"]) for m in metrics[:4]] == [16, 32, 0, 16]
    h, z = jax.jit(method.encode)(states[-1], images[:4])
    assert h.shape == (4, 64) and z.shape == (4, config.proj_dim)


@pytest.mark.parametrize(
    "name, module, section",
    [
        ("moco_v2", moco_v2, {"queue_size": K, "symmetric": True}),
        ("moco_v2", moco_v2, {"queue_size": K, "negatives": False}),
        ("moco_v3", moco_v3, {"negatives": False, "pred_hidden_dim": 32}),
    ],
)
def test_variants_trace_to_a_scalar_loss(name, module, section, v2, v3, images):
    # Traced only (no compilation): the switches build a valid step with the same state.
    state = (v2 if name == "moco_v2" else v3).states[0]
    method = module.make(_config(name, **section))
    new, metrics = jax.eval_shape(method.train_step, state, _batch(images, 0), RNG)
    assert metrics["loss"].shape == () and metrics["loss"].dtype == jnp.float32
    assert jax.tree.structure(new) == jax.tree.structure(state)


# --------------------------------------------------------------------------------------------
# MoCo v3
# --------------------------------------------------------------------------------------------


def test_v3_contrastive_loss_is_cross_entropy_over_the_batch_times_two_tau():
    q = jax.random.normal(jax.random.key(0), (6, 4))
    k = jax.random.normal(jax.random.key(1), (6, 4))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    kn = k / np.linalg.norm(k, axis=1, keepdims=True)
    logits = np.asarray(qn @ kn.T, np.float64) / 0.2
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = 2 * 0.2 * -np.mean(np.diag(log_softmax))
    np.testing.assert_allclose(moco_v3.contrastive_loss(q, k, 0.2), expected, rtol=1e-5)
    grad_k = jax.grad(moco_v3.contrastive_loss, argnums=1)(q, k, 0.2)
    np.testing.assert_array_equal(grad_k, 0.0)  # keys are constants


@pytest.fixture(scope="module")
def v3(images):
    config = _config("moco_v3", pred_hidden_dim=32, momentum_base=0.99)
    method = moco_v3.make(config)
    step = jax.jit(method.train_step)
    states, metrics = _run(step, _init(method), images, STEPS)
    return Run(config, method, step, states, metrics)


def test_v3_momentum_follows_the_cosine_schedule_to_one(v3, images):
    config, step, states, metrics = v3.config, v3.step, v3.states, v3.metrics
    momenta = [float(m["ema_momentum"]) for m in metrics]
    np.testing.assert_allclose(momenta[0], 0.99, atol=1e-7)
    np.testing.assert_allclose(momenta[10], 0.995, atol=1e-7)  # halfway
    np.testing.assert_allclose(momenta[19], 1 - 0.01 * (np.cos(np.pi * 19 / 20) + 1) / 2, 1e-6)
    assert all(a < b for a, b in itertools.pairwise(momenta))
    # The momentum encoder moves towards the NEW query parameters by the step's momentum ...
    t = 5
    m = momenta[t]
    new_q, old_q = states[t + 1].params["encoder"], states[t].params["encoder"]
    expected = jax.tree.map(lambda k, q: m * k + (1 - m) * q, states[t].target_params, new_q)
    stale = jax.tree.map(lambda k, q: m * k + (1 - m) * q, states[t].target_params, old_q)
    got = jax.tree.leaves(states[t + 1].target_params)
    for g, e in zip(got, jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-8)
    assert max(float(jnp.max(jnp.abs(g - s))) for g, s in zip(got, jax.tree.leaves(stale))) > 1e-6
    # ... and stops at total_steps, where the momentum reaches 1.
    end = states[-1].replace(step=jnp.asarray(config.total_steps, jnp.int32))
    after, end_metrics = step(end, _batch(images, 0), RNG)
    assert float(end_metrics["ema_momentum"]) == 1.0
    for a, b in zip(jax.tree.leaves(after.target_params), jax.tree.leaves(end.target_params)):
        np.testing.assert_array_equal(a, b)


def test_v3_twenty_steps_train_without_collapse(v3, images):
    config, method, states, metrics = v3.config, v3.method, v3.states, v3.metrics
    losses = [float(m["loss"]) for m in metrics]
    stds = [float(m["embedding_std"]) for m in metrics]
    assert np.all(np.isfinite(losses)), losses
    # Uniform on the sphere is 1/sqrt(16) = 0.25, collapse 0.
    assert min(stds) > 0.1, f"embedding_std {stds}; measured 0.186 to 0.198 over the 20 steps"
    h, z = jax.jit(method.encode)(states[-1], images[:4])
    assert h.shape == (4, 64) and z.shape == (4, config.proj_dim)
    assert set(states[-1].params) == {"encoder", "predictor"}
    assert jax.tree.structure(states[-1].target_params) == jax.tree.structure(
        states[-1].params["encoder"]
    )
