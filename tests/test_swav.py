"""SwAV: unit prototypes frozen at first, the queue of projections, multi-crop, bad configs.

A tiny setting (ResNet-18 at width 1/8, 16 px images, one 8 px local crop, 10 prototypes,
batch 16) stepped a few times by hand; Sinkhorn-Knopp and the swapped loss themselves are
tested against float64 references in test_losses.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import configs, train
from sslax.methods import swav

BATCH = 16


def _config(**section):
    config = configs.shapes_config("swav")
    config.update(
        dict(
            batch_size=BATCH,
            image_size=16,
            width=0.125,
            proj_hidden_dim=32,
            proj_dim=16,
            warmup_steps=1,
        )
    )
    config.swav.update({**dict(num_prototypes=10, local_size=8, num_local=1), **section})
    return config


def _batch(step):
    images = np.random.default_rng(step).integers(0, 256, (BATCH, 16, 16, 3), dtype=np.uint8)
    index = jnp.arange(step * BATCH, (step + 1) * BATCH, dtype=jnp.int32)
    return {"image": jnp.asarray(images), "index": index}


FROZEN = 2


@functools.cache
def _run(steps, **section):
    """The states after 0..steps steps (on the host) and every step's metrics; prototypes
    frozen for the first FROZEN steps."""
    method = swav.make(_config(freeze_prototypes_steps=FROZEN, **section))
    state = jax.jit(method.init)(jax.random.key(0), np.asarray(_batch(0)["image"][:1]))
    step = jax.jit(method.train_step)
    states, metrics = [jax.device_get(state)], []
    for t in range(steps):
        state, m = step(state, _batch(t), jax.random.key(1))
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(m))
    return states, metrics


def test_prototypes_are_unit_and_stay_put_while_frozen():
    states, metrics = _run(4)
    prototypes = [s.params["prototypes"] for s in states]
    np.testing.assert_allclose(np.linalg.norm(prototypes[0], axis=0), 1.0, rtol=1e-6)
    # Frozen: the unit start, re-normalised each step (float32 rounding only), no update.
    for t in range(1, FROZEN + 1):
        np.testing.assert_allclose(prototypes[t], prototypes[0], atol=1e-7)
    head = [s.params["encoder"]["head"] for s in states]
    assert jax.tree.reduce(max, jax.tree.map(lambda a, b: np.abs(a - b).max(), head[2], head[0]))
    # Released: they move (at the peak learning rate after a 1-step warm-up).
    assert np.abs(prototypes[4] - prototypes[FROZEN]).max() > 1e-4
    assert all(np.isfinite(m["loss"]) for m in metrics)


@pytest.mark.slow  # two more compiles (CI's time budget)
def test_queue_fills_newest_first_and_joins_the_codes_once_full():
    states, metrics = _run(4, queue_size=2 * BATCH)
    queues = [s.queue for s in states]
    assert queues[0].shape == (2, 2 * BATCH, 16) and not queues[0].any()
    # Step 1 writes the unit projections of both global crops in front; step 2 shifts them back.
    np.testing.assert_allclose(np.linalg.norm(queues[1][:, :BATCH], axis=-1), 1.0, rtol=1e-5)
    assert not queues[1][:, BATCH:].any()
    np.testing.assert_array_equal(queues[2][:, BATCH:], queues[1][:, :BATCH])
    # In use only once it holds 2 batches of real projections (step index 2).
    assert [float(m["queue_in_use"]) for m in metrics] == [0.0, 0.0, 1.0, 1.0]
    # Until then the run is the queue-free run; with it, the codes (and loss) change.
    plain, plain_metrics = _run(4)
    # (Two compiled programs: equal up to float32 rounding.)
    for t in (0, 1):
        np.testing.assert_allclose(metrics[t]["loss"], plain_metrics[t]["loss"], rtol=1e-6)
    assert abs(float(metrics[2]["loss"]) - float(plain_metrics[2]["loss"])) > 1e-3


def test_multi_crop_recipe_takes_sizes_and_areas_from_the_config():
    config = _config(local_min_scale=0.1)
    config.crop_min_scale = 0.4
    views = swav.recipe_of(config).views
    assert [v.size for v in views] == [16, 16, 8]
    assert [v.crop_scale for v in views] == [(0.4, 1.0)] * 2 + [(0.1, 0.4)]


@pytest.mark.parametrize(
    "section, message",
    [
        (dict(local_size=32), r"swav.local_size must be <= image_size 16"),
        (dict(queue_size=24), r"swav.queue_size 24 must be 0 or a multiple of the global batch"),
        (dict(local_min_scale=0.6), r"swav.local_min_scale 0.6 must be <= crop_min_scale 0.5"),
        (dict(epsilon=0.0), r"swav.epsilon must be > 0"),
    ],
)
def test_bad_configs_are_refused_in_one_line(section, message):
    with pytest.raises(configs.ConfigError, match=message):
        train.validate_config(_config(**section), num_devices=1)
