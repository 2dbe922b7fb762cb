"""One train step of every method on 8 simulated devices equals the same step on one device.

The global batch is the same 16 images either way; with the batch sharded over the "data" axis,
every loss, BatchNorm statistic, queue enqueue and DINO centre must still be computed over the
global batch, so the new state may differ only by float32 reduction order. The same holds with
parameters split over an "fsdp" axis and with SimCLR's chunked loss under shard_map. Then the
pieces of sslax.parallel: mesh specs, global batch assembly, distributed start-up modes.
Multi-process runs are in test_multiprocess.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import configs, methods, parallel

BATCH = 16


def _config(name):
    config = configs.shapes_config(name)
    config.update(
        {
            "batch_size": BATCH,
            "image_size": 16,
            "width": 0.125,
            "proj_hidden_dim": 32,
            "proj_dim": 16,
            "total_steps": 10,
            "warmup_steps": 1,
        }
    )
    if name == "moco_v2":
        config.moco_v2.queue_size = 4 * BATCH
        # Shuffle-BN groups of 8 images: groups of 2 (the default 8 groups) make the keys'
        # BatchNorm statistics so degenerate that float32 reduction order shows at 1e-3.
        config.moco_v2.shuffle_bn_groups = 2
    if name == "dino":
        config.dino.local_size = 8
    if name == "dinov2":
        config.dinov2.local_size = 8
    if name == "swav":
        config.swav.local_size = 8
        config.swav.queue_size = 2 * BATCH  # compiled in (in use from step 2)
    if name == "nnclr":
        config.nnclr.queue_size = 4 * BATCH
    return config


def _one_step(config, mesh=None):
    """One train step from the same state and batch; on ``mesh`` if given, else one device."""
    method = methods.get(config.method).make(config)
    images = np.random.default_rng(0).integers(0, 256, (BATCH, 16, 16, 3), dtype=np.uint8)
    batch = {"image": jnp.asarray(images), "index": jnp.arange(BATCH, dtype=jnp.int32)}
    if method.uses_labels:  # four classes: every image has same-class partners
        batch["label"] = jnp.arange(BATCH, dtype=jnp.int32) % 4
    key = jax.random.key(0, impl="rbg")
    if mesh is None:
        state = method.init(key, images[:1])
        return jax.jit(method.train_step)(state, batch, jax.random.key(1))
    shapes = jax.eval_shape(method.init, key, images[:1])
    shardings = parallel.state_shardings(shapes, mesh)
    with jax.set_mesh(mesh):
        state = jax.jit(method.init, out_shardings=shardings)(key, images[:1])
        step = jax.jit(
            method.train_step,
            in_shardings=(shardings, parallel.batch_sharding(mesh), parallel.replicated(mesh)),
            out_shardings=(shardings, parallel.replicated(mesh)),
        )
        return step(state, jax.device_put(batch, parallel.batch_sharding(mesh)), jax.random.key(1))


@functools.cache
def _one_device_step(name):
    """The unsharded reference step of ``_config(name)``, computed once per method."""
    return _one_step(_config(name))


# In the default suite: SimCLR, whose BatchNorm sees both views together; Barlow Twins, whose
# BatchNorm sees each view on its own (vmapped), and the other methods with `pytest -m slow`
# (CI's time budget).
DEFAULT_SUITE = ("simclr",)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=() if n in DEFAULT_SUITE else pytest.mark.slow)
        for n in methods.METHODS
    ],
)
def test_one_step_on_eight_devices_equals_one_device(name):
    config = _config(name)
    one, metrics_one = _one_device_step(name)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    eight, metrics_eight = _one_step(config, mesh)
    paths_one = jax.tree_util.tree_leaves_with_path(one)
    for (path, a), b in zip(paths_one, jax.tree.leaves(eight)):
        where = jax.tree_util.keystr(path)
        # The MoCo queue holds unit-norm keys: 1e-5 of their norm.
        atol = 1e-5 if where == ".queue" else 1e-6
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=atol, err_msg=f"{name}: {where}")
    # SimSiam's first loss is near 0 (-0.0064): 1e-5 of it is below float32 rounding of the sums
    # it comes from (8.6e-8 apart on an AMD EPYC), hence the absolute term, as for the state.
    np.testing.assert_allclose(metrics_eight["loss"], metrics_one["loss"], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Meshes, fsdp, the chunked SimCLR loss, global batches and distributed start-up


def _assert_same_state(actual, expected, what):
    paths = jax.tree_util.tree_leaves_with_path(expected)
    for (path, a), b in zip(paths, jax.tree.leaves(actual)):
        np.testing.assert_allclose(
            b, a, rtol=1e-5, atol=1e-6, err_msg=f"{what}: {jax.tree_util.keystr(path)}"
        )


def test_fsdp_splits_parameters_and_optimizer_state_and_keeps_the_step_exact():
    config = _config("simclr")
    config.width = 0.25  # wide enough for several leaves above FSDP_MIN_SIZE
    mesh = parallel.make_mesh([("data", -1), ("fsdp", 2)])
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    (one, metrics_one), (split, metrics_split) = _one_step(config), _one_step(config, mesh)
    _assert_same_state(split, one, "fsdp")
    np.testing.assert_allclose(metrics_split["loss"], metrics_one["loss"], rtol=1e-5)

    big = [
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(split.params)
        if leaf.size >= parallel.FSDP_MIN_SIZE
    ]
    assert big, "the test model has no leaf large enough to split"
    for where, leaf in big:
        assert "fsdp" in jax.tree.leaves(tuple(leaf.sharding.spec)), where
        # Each device holds half of the leaf.
        assert leaf.addressable_shards[0].data.size == leaf.size // 2, where
    momentum = [x for x in jax.tree.leaves(split.opt_state) if x.size >= parallel.FSDP_MIN_SIZE]
    assert momentum and all("fsdp" in jax.tree.leaves(tuple(x.sharding.spec)) for x in momentum)


def test_chunked_simclr_loss_under_shard_map_equals_the_dense_loss_on_one_device():
    chunked = _config("simclr")
    chunked.simclr.loss_chunk_size = 2  # 16 images -> 4 views per device, 2 tiles each
    mesh = parallel.make_mesh([("data", -1)])
    (one, metrics_one), (eight, metrics_eight) = (
        _one_device_step("simclr"),
        _one_step(chunked, mesh),
    )
    _assert_same_state(eight, one, "chunked")
    np.testing.assert_allclose(metrics_eight["loss"], metrics_one["loss"], rtol=1e-5)
    bad = _config("simclr")
    bad.simclr.loss_chunk_size = 3
    with pytest.raises(ValueError, match="loss_chunk_size 3 must divide the 4 views per device"):
        _one_step(bad, mesh)


@pytest.mark.parametrize(
    "spec, error",
    [
        ([("data", 3)], "has 3 devices, but there are 8"),
        ([("data", -1), ("fsdp", -1)], "at most one mesh axis may be -1"),
        ([("model", 8)], "unknown mesh axis 'model'"),
        ([("data", 4), ("data", 2)], "appears twice"),
        ([("data", -1), ("fsdp", 3)], "do not divide by the fixed axes' product 3"),
        ([("data", 0)], "positive size or -1"),
        (["data"], r"\(axis name, size\) pairs"),
        ([], "at least one axis"),
    ],
)
def test_bad_mesh_specs_are_refused_with_the_reason(spec, error):
    with pytest.raises(parallel.MeshError, match=error):
        parallel.make_mesh(spec)


def test_global_batch_holds_each_process_rows_in_order():
    mesh = parallel.make_mesh([("data", 4), ("fsdp", 2)])
    sharding = parallel.batch_sharding(mesh)
    rows = parallel.local_batch_rows(sharding, BATCH)
    np.testing.assert_array_equal(rows, np.arange(BATCH))  # one process holds every row
    local = {"index": np.arange(100, 100 + BATCH, dtype=np.int32)}
    batch = parallel.global_batch(local, rows, sharding, BATCH)
    np.testing.assert_array_equal(np.asarray(batch["index"]), local["index"])
    for shard in batch["index"].addressable_shards:
        np.testing.assert_array_equal(shard.data, local["index"][shard.index[0]])
    with pytest.raises(ValueError, match="local batch has 3 rows, this process holds 16"):
        parallel.global_batch({"index": np.zeros(3)}, rows, sharding, BATCH)


def test_distributed_start_up_modes(monkeypatch):
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    started = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: started.append(kw))
    assert parallel.initialize_distributed("auto") is False
    assert parallel.initialize_distributed("off") is False
    with pytest.raises(ValueError, match="go together"):
        parallel.initialize_distributed("auto", coordinator_address="h:1")
    with pytest.raises(ValueError, match="need distributed on"):
        parallel.initialize_distributed("off", num_processes=2)
    with pytest.raises(ValueError, match="distributed must be one of"):
        parallel.initialize_distributed("maybe")
    assert not started
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert parallel.initialize_distributed("auto", timeout_s=7) is True
    assert started[-1]["heartbeat_timeout_seconds"] == 7
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert parallel.initialize_distributed("auto") is False
    assert parallel.initialize_distributed(
        "auto", coordinator_address="h:1", num_processes=2, process_id=1
    )
    assert started[-1]["process_id"] == 1 and started[-1]["coordinator_address"] == "h:1"
    assert parallel.initialize_distributed("on") and len(started) == 3
