"""BYOL and SimSiam on the built-in data with tiny models: training, EMA target, collapse.

Each method is trained twice for a few tens of steps (module-level cache, one compile each):
with its anti-collapse mechanism and without stop-gradient. The collapse settings were chosen
from runs over seeds 0..2; the measured numbers are in the assertion messages.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax import configs, optim
from sslax.data import shapes
from sslax.methods import byol, simsiam


MODULES = {"byol": byol, "simsiam": simsiam}
BATCH = 32
NUM_IMAGES = 512
PROJ_DIM = 16
H_DIM = 64  # ResNet-18 at width 1/8: 512 / 8 channels
# Tiny models and enough steps that the variants without stop-gradient collapse. BYOL: LARS
# at an lr of 0.5. SimSiam: SGD at lr 1.0 (BatchNorm on its projector's output slows its
# collapse down).
STEPS = {"byol": 40, "simsiam": 100}
OVERRIDES = {
    "byol": {"recipe": "byol", "optimizer": "lars", "learning_rate": 0.5},
    "simsiam": {"optimizer": "sgd", "learning_rate": 1.0, "weight_decay": 1e-4},
}

# Measured with this module's settings, seeds 0, 1, 2: embedding_std (mean of the last 10 steps)
# and, for reference, the std of encode's z (eval mode) on 256 images.
MEASURED = {
    "byol": "without stop-gradient std 0.021 0.019 0.019 (eval 0.022 0.019 0.024), "
    "loss 0.023 0.021 0.022; with it std 0.206 0.189 0.211 (eval 0.203 0.182 0.206), "
    "loss 1.99 1.34 1.87",
    "simsiam": "without stop-gradient std 0.062 0.069 0.061 (eval 0.086 0.070 0.058), "
    "loss -0.961 -0.953 -0.965; with it std 0.244 0.215 0.238 (eval 0.232 0.189 0.218), "
    "loss -0.258 -0.403 -0.207",
}


def _config(method, *, stop_gradient=True, **overrides):
    config = configs.shapes_config("simclr")
    config.method = method
    config[method] = MODULES[method].defaults()
    config[method].stop_gradient = stop_gradient
    config.update(
        dict(
            batch_size=BATCH,
            image_size=16,
            width=0.125,
            proj_hidden_dim=64,
            proj_dim=PROJ_DIM,
            total_steps=STEPS[method],
            warmup_steps=2,
            lr_scaling="none",
            # The views the health numbers above were measured with (the laptop default moved
            # to strength 3, crop area >= 50% in issue 19).
            augment_strength=1.0,
            crop_min_scale=0.25,
            **OVERRIDES[method],
        )
    )
    config.update(overrides)
    return config


# Early enough that the target momentum is still about 0.99, so that one step moves the target
# by a visible amount, and after the lr warm-up.
SNAPSHOT_STEP = 3


@functools.cache
def _train(method, stop_gradient, seed=0):
    """Trains from scratch; returns the method, the states after SNAPSHOT_STEP and
    SNAPSHOT_STEP + 1 steps, the final state, the metrics of every step, and the images."""
    config = _config(method, stop_gradient=stop_gradient)
    m = MODULES[method].make(config)
    images, _ = shapes.generate(NUM_IMAGES, image_size=16, seed=seed)
    # Eager, and with the "rbg" generator: compiling threefry initialisers takes far longer on
    # CPU than this whole run.
    state = m.init(jax.random.key(seed, impl="rbg"), images[:1])
    step = jax.jit(m.train_step)
    rng = jax.random.key(seed + 100)
    history, snapshots = [], []
    for i in range(config.total_steps):
        start = i * BATCH % NUM_IMAGES
        batch = {
            "image": jnp.asarray(images[start : start + BATCH]),
            "index": jnp.arange(start, start + BATCH, dtype=jnp.int32),
        }
        if i in (SNAPSHOT_STEP, SNAPSHOT_STEP + 1):
            snapshots.append(state)
        state, metrics = step(state, batch, rng)
        history.append(jax.device_get(metrics))
    return m, snapshots, state, history, images


def _tail_mean(history, key, n=10):
    return float(np.mean([h[key] for h in history[-n:]]))


@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_training_is_finite_and_healthy(method):
    _, _, state, history, _ = _train(method, True)
    assert int(state.step) == STEPS[method]
    losses = np.array([h["loss"] for h in history])
    assert np.all(np.isfinite(losses)), losses
    std = _tail_mean(history, "embedding_std")
    # Random directions in 16-d give 0.25, a constant 0.
    assert std > 0.15, f"embedding_std {std:.4f}; measured {MEASURED[method]}"
    assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(jax.device_get(state.params)))


@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_encode_gives_representation_and_projection(method):
    m, _, state, _, images = _train(method, True)
    h, z = jax.jit(m.encode)(state, jnp.asarray(images[:8]))
    assert h.shape == (8, H_DIM) and z.shape == (8, PROJ_DIM), (h.shape, z.shape)
    assert np.all(np.isfinite(h)) and np.all(np.isfinite(z))


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(tree))])


def test_byol_target_is_the_ema_of_the_new_online_network():
    _, (before, after), final, history, _ = _train("byol", True)
    momentum = history[SNAPSHOT_STEP]["ema_momentum"]
    for name in ("params", "batch_stats"):
        target_before = _flat(getattr(before, f"target_{name}"))
        target = _flat(getattr(after, f"target_{name}"))
        online_before = _flat(getattr(before, name)["encoder"])
        online = _flat(getattr(after, name)["encoder"])
        # Told apart from an EMA towards the online weights of before the update: the two
        # differ by (1 - momentum) x one step's change.
        error_new = np.abs(target - (momentum * target_before + (1 - momentum) * online)).max()
        error_old = np.abs(target - (momentum * target_before + (1 - momentum) * online_before))
        assert error_new < 1e-6 and error_new < 0.01 * error_old.max(), (
            name,
            error_new,
            error_old.max(),
        )
    # After the whole run the target still lags the online network.
    gap = np.linalg.norm(_flat(final.target_params) - _flat(final.params["encoder"]))
    assert gap > 1e-3 * np.linalg.norm(_flat(final.params["encoder"])), gap


def test_byol_momentum_follows_the_cosine_schedule():
    _, _, _, history, _ = _train("byol", True)
    base, total = byol.defaults().ema_base, STEPS["byol"]
    momenta = np.array([h["ema_momentum"] for h in history])
    assert momenta[0] == pytest.approx(base, abs=1e-7)
    last = 1 - (1 - base) * (np.cos(np.pi * (total - 1) / total) + 1) / 2
    assert momenta[-1] == pytest.approx(last, abs=1e-7)
    assert np.all(np.diff(momenta) > 0), momenta


@pytest.mark.parametrize(
    "method, max_collapsed",
    # With `pytest -m slow` (CI's time budget); BYOL's collapse without stop-gradient is also
    # shown end to end by test_faults.py's collapse test (slow too).
    [
        pytest.param("byol", 0.05, marks=pytest.mark.slow),
        pytest.param("simsiam", 0.1, marks=pytest.mark.slow),
    ],
)
def test_without_stop_gradient_the_embedding_collapses(method, max_collapsed):
    _, _, _, collapsed, _ = _train(method, False)
    _, _, _, healthy, _ = _train(method, True)
    std_off = _tail_mean(collapsed, "embedding_std")
    std_on = _tail_mean(healthy, "embedding_std")
    loss_off, loss_on = _tail_mean(collapsed, "loss"), _tail_mean(healthy, "loss")
    got = f"got std {std_off:.3f} / {std_on:.3f}, loss {loss_off:.3f} / {loss_on:.3f}"
    # SimSiam's projector ends in BatchNorm, so every training batch of z is centred and cannot
    # become one point: it collapses onto about one direction instead (std near 1/16 here).
    assert std_off < max_collapsed, f"{got}; measured {MEASURED[method]}"
    assert std_on > 0.15, f"{got}; measured {MEASURED[method]}"
    # The degenerate solution also reaches the loss's minimum (BYOL 0, SimSiam -1).
    minimum = {"byol": 0.0, "simsiam": -1.0}[method]
    assert loss_off - minimum < 0.25 * (loss_on - minimum), f"{got}; measured {MEASURED[method]}"


def _effective_learning_rates(fixed_predictor_lr, steps=10, warmup=3):
    config = _config(
        "simsiam",
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        learning_rate=1.0,
        warmup_steps=warmup,
        total_steps=steps,
    )
    config.simsiam.fixed_predictor_lr = fixed_predictor_lr
    tx = simsiam.optimizer(config)
    params = {"encoder": {"w": jnp.ones(3)}, "predictor": {"w": jnp.ones(3)}}
    grads = jax.tree.map(jnp.ones_like, params)
    opt_state = tx.init(params)
    rates = []
    for _ in range(steps):
        updates, opt_state = tx.update(grads, opt_state, params)
        rates.append((-float(updates["encoder"]["w"][0]), -float(updates["predictor"]["w"][0])))
    return np.array(rates)


def test_simsiam_predictor_keeps_the_peak_learning_rate():
    steps, warmup = 10, 3
    schedule = optim.warmup_cosine(1.0, warmup_steps=warmup, total_steps=steps)
    cosine = np.array([float(schedule(i)) for i in range(steps)])
    rates = _effective_learning_rates(True, steps, warmup)
    np.testing.assert_allclose(rates[:, 0], cosine, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rates[:warmup, 1], cosine[:warmup], rtol=1e-6)
    np.testing.assert_allclose(rates[warmup:, 1], 1.0, rtol=1e-6)
    assert rates[-1, 0] < 0.1, rates[:, 0]
    # Without the option the predictor decays like everything else.
    decayed = _effective_learning_rates(False, steps, warmup)
    np.testing.assert_allclose(decayed, np.stack([cosine, cosine], axis=1), rtol=1e-6, atol=1e-7)
