"""One train step of every method on 8 simulated devices equals the same step on one device.

The global batch is the same 16 images either way; with the batch sharded over the "data" axis,
every loss, BatchNorm statistic, queue enqueue and DINO centre must still be computed over the
global batch, so the new state may differ only by float32 reduction order.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sslax import configs, methods

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
    return config


# In the default suite: SimCLR, whose BatchNorm sees both views together, and Barlow Twins,
# whose BatchNorm sees each view on its own (vmapped); the other methods with `pytest -m slow`.
DEFAULT_SUITE = ("simclr", "barlow_twins")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=() if n in DEFAULT_SUITE else pytest.mark.slow)
        for n in methods.METHODS
    ],
)
def test_one_step_on_eight_devices_equals_one_device(name):
    method = methods.get(name).make(_config(name))
    images = np.random.default_rng(0).integers(0, 256, (BATCH, 16, 16, 3), dtype=np.uint8)
    batch = {"image": jnp.asarray(images), "index": jnp.arange(BATCH, dtype=jnp.int32)}
    state = method.init(jax.random.key(0, impl="rbg"), images[:1])
    rng = jax.random.key(1)
    step = jax.jit(method.train_step)
    one, metrics_one = step(state, batch, rng)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    eight, metrics_eight = step(
        jax.device_put(state, NamedSharding(mesh, P())),
        jax.device_put(batch, NamedSharding(mesh, P("data"))),
        rng,
    )
    paths_one = jax.tree_util.tree_leaves_with_path(one)
    for (path, a), b in zip(paths_one, jax.tree.leaves(eight)):
        where = jax.tree_util.keystr(path)
        # The MoCo queue holds unit-norm keys: 1e-5 of their norm.
        atol = 1e-5 if where == ".queue" else 1e-6
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=atol, err_msg=f"{name}: {where}")
    np.testing.assert_allclose(metrics_eight["loss"], metrics_one["loss"], rtol=1e-5)
