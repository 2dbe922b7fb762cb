"""NNCLR: neighbours come from the support set, carry no gradient, and view 1 is enqueued."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from sslax import configs, train
from sslax.methods import common, nnclr

BATCH = 16


def _config(**section):
    config = configs.shapes_config("nnclr")
    config.update(
        dict(batch_size=BATCH, image_size=16, width=0.125, proj_hidden_dim=32, proj_dim=16)
    )
    config.nnclr.update({**dict(queue_size=4 * BATCH, pred_hidden_dim=32), **section})
    return config


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_loss_matches_algorithm_1_and_neighbours_are_queue_rows_without_gradient():
    rng = np.random.default_rng(0)
    z, p, queue = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)), rng.normal(size=(20, 4))
    # Algorithm 1 in float64: the neighbour by cosine, then cross-entropy of nn . p^T / tau.
    neighbours = _unit(queue)[np.argmax(_unit(z) @ _unit(queue).T, axis=1)]
    logits = _unit(neighbours) @ _unit(p).T / 0.1
    expected = np.mean(logsumexp(logits, axis=1) - np.diag(logits))

    def loss(z, p, queue):
        rows, _ = nnclr.nearest_neighbours(z, queue)
        return nnclr.nnclr_loss(rows, p, 0.1)

    f32 = [jnp.asarray(a, jnp.float32) for a in (z, p, queue)]
    value, (g_z, g_p, g_queue) = jax.value_and_grad(loss, argnums=(0, 1, 2))(*f32)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    rows, index = nnclr.nearest_neighbours(*f32[::2])
    np.testing.assert_allclose(rows, _unit(queue)[np.asarray(index)], rtol=1e-6)
    assert not np.any(g_z) and not np.any(g_queue)  # constants: only p learns from them
    assert np.any(g_p)


@pytest.mark.slow  # two compiled steps, ~20 s (CI's time budget)
def test_a_step_enqueues_view_one_and_reads_its_neighbours_from_the_queue():
    config = _config()
    method = nnclr.make(config)
    images = np.random.default_rng(1).integers(0, 256, (BATCH, 16, 16, 3), dtype=np.uint8)
    batch = {"image": jnp.asarray(images), "index": jnp.arange(BATCH, dtype=jnp.int32)}
    state = jax.jit(method.init)(jax.random.key(0), images[:1])
    step = jax.jit(method.train_step)
    new, metrics = step(state, batch, jax.random.key(1))
    # View 1's projections, computed as the step does (both views in one BatchNorm batch).
    views = common.two_views(common.step_key(jax.random.key(1), 0), batch, method.recipe)
    encoder = common.encoder(config, nnclr.projector(config))
    (_, z), _ = encoder.apply(
        {"params": state.params["encoder"], "batch_stats": state.batch_stats["encoder"]},
        common.flatten_views(views),
        train=True,
        mutable=["batch_stats"],
    )
    z1 = common.l2_normalize(common.per_image(z, 2)[:, 0])
    np.testing.assert_allclose(new.queue[:BATCH], z1, atol=1e-5)
    np.testing.assert_array_equal(new.queue[BATCH:], state.queue[BATCH:])
    assert int(new.queue_ptr) == BATCH
    # Another support set, another loss: the positives come from the queue.
    other = state.replace(queue=jnp.roll(state.queue, 1, axis=1))
    _, other_metrics = step(other, batch, jax.random.key(1))
    assert float(other_metrics["loss"]) != float(metrics["loss"])


@pytest.mark.parametrize(
    "section, message",
    [
        (dict(queue_size=24), r"nnclr.queue_size 24 must be a positive multiple of the global"),
        (dict(pred_hidden_dim=0), r"nnclr.pred_hidden_dim must be >= 1"),
    ],
)
def test_bad_configs_are_refused_in_one_line(section, message):
    with pytest.raises(configs.ConfigError, match=message):
        train.validate_config(_config(**section), num_devices=1)
