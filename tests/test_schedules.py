"""Every schedule at the first, a middle and the last step of runs shorter than, as long as and
longer than its warm-up (issue 16: a warm-up that does not fit is clipped to the run).

The expected values are written out from the rule in sslax.optim.warmup_cosine's docstring:
linear warm-up from 0 over min(warmup, T) steps, then cosine to 0 at T.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sslax import configs, optim
from sslax.methods import common, dino, simsiam

# (total_steps, warmup_steps): shorter than, equal to and longer than the warm-up.
RUNS = {"shorter": (10, 25), "equal": (25, 25), "longer": (100, 25)}


def _config(method="simclr", total=10, warmup=25):
    config = configs.shapes_config(method)
    config.total_steps, config.warmup_steps = total, warmup
    config.learning_rate, config.batch_size = 1.0, 256  # peak 1.0 under linear scaling
    return config


@pytest.mark.parametrize(
    "run, expected",
    [
        # Shorter: the warm-up is clipped to the 10 steps, the rate never decays.
        ("shorter", {0: 0.0, 5: 0.5, 9: 0.9}),
        # Equal: warm-up over the whole run too.
        ("equal", {0: 0.0, 12: 12 / 25, 24: 24 / 25}),
        # Longer: 25 warm-up steps to the peak, then cosine over the remaining 75.
        (
            "longer",
            {0: 0.0, 25: 1.0, 50: 0.75, 99: 0.5 * (1 + math.cos(math.pi * 74 / 75))},
        ),
    ],
)
def test_learning_rate_at_the_first_a_middle_and_the_last_step(run, expected):
    total, warmup = RUNS[run]
    schedule = common.learning_rate_schedule(_config(total=total, warmup=warmup))
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value, abs=1e-6), (run, step)


@pytest.mark.parametrize("total", [1, 2, 10])
def test_every_short_run_has_a_finite_schedule_from_zero(total):
    # Any warm-up, even none: the first step is at rate 0 (or the peak without warm-up).
    for warmup in (0, 1, total, total + 1, 25):
        schedule = optim.warmup_cosine(2.0, warmup_steps=warmup, total_steps=total)
        rates = np.array([float(schedule(t)) for t in range(total)])
        assert np.all(np.isfinite(rates)) and np.all(rates >= 0) and np.all(rates <= 2.0)
        assert rates[0] == (2.0 if warmup == 0 else 0.0), (total, warmup)


def test_clipped_warmup_refuses_what_validation_refuses():
    with pytest.raises(ValueError, match="total_steps >= 1"):
        optim.clipped_warmup(5, 0)
    with pytest.raises(ValueError, match="warmup_steps >= 0"):
        optim.clipped_warmup(-1, 10)


@pytest.mark.parametrize("run", RUNS)
def test_ema_momentum_rises_from_base_towards_one_over_any_run(run):
    total, _ = RUNS[run]
    momentum = [
        float(common.cosine_ema_momentum(jnp.int32(t), base=0.99, total_steps=total))
        for t in (0, total // 2, total - 1)
    ]
    assert momentum[0] == pytest.approx(0.99)
    assert momentum[1] == pytest.approx(
        1 - 0.01 * (math.cos(math.pi * (total // 2) / total) + 1) / 2
    )
    assert momentum[0] <= momentum[1] <= momentum[2] <= 1.0


def test_ema_momentum_of_a_one_step_run_is_the_base():
    assert float(
        common.cosine_ema_momentum(jnp.int32(0), base=0.9, total_steps=1)
    ) == pytest.approx(0.9)


@pytest.mark.parametrize(
    "run, expected",
    [
        ("shorter", {0: 0.02, 5: 0.03, 9: 0.038}),
        ("equal", {0: 0.02, 12: 0.02 + 0.02 * 12 / 25, 24: 0.02 + 0.02 * 24 / 25}),
        ("longer", {0: 0.02, 25: 0.04, 99: 0.04}),
    ],
)
def test_dino_teacher_temperature_warm_up_is_clipped_to_the_run(run, expected):
    total, warmup = RUNS[run]
    config = _config("dino", total=total)
    config.dino.warmup_teacher_temp, config.dino.teacher_temp = 0.02, 0.04
    config.dino.warmup_teacher_temp_steps = warmup
    for step, value in expected.items():
        temp = float(dino.teacher_temperature(jnp.int32(step), config))
        assert temp == pytest.approx(value, rel=1e-6), (run, step)


@pytest.mark.parametrize("run", RUNS)
def test_dino_weight_decay_goes_from_start_to_end_over_any_run(run):
    total, _ = RUNS[run]
    config = _config("dino", total=total)
    config.weight_decay, config.dino.weight_decay_end = 0.04, 0.4
    wd = dino.weight_decay_schedule(config)
    assert float(wd(0)) == pytest.approx(0.04)
    middle = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * (total // 2) / total))
    assert float(wd(total // 2)) == pytest.approx(middle)
    assert 0.04 < float(wd(total - 1)) <= 0.4


@pytest.mark.parametrize("frozen, total", [(3, 10), (10, 10), (25, 10), (0, 1), (5, 1)])
def test_dino_last_layer_is_frozen_for_the_first_steps_of_any_run(frozen, total):
    config = _config("dino", total=total, warmup=0)
    config.optimizer, config.dino.freeze_last_layer_steps, config.dino.clip_grad = "sgd", frozen, 0
    tx = dino.optimizer(
        config, common.learning_rate_schedule(config), dino.weight_decay_schedule(config)
    )
    params = {
        "head": {"last_layer": {"kernel": jnp.ones((2, 2))}},
        "body": {"kernel": jnp.ones((2, 2))},
    }
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    for step in range(total):
        updates, state = tx.update(grads, state, params)
        last_moves = bool(jnp.any(updates["head"]["last_layer"]["kernel"] != 0))
        assert last_moves == (step >= frozen), (step, frozen, total)
        assert bool(jnp.any(updates["body"]["kernel"] != 0))
        params = optax.apply_updates(params, updates)


@pytest.mark.parametrize("run", RUNS)
def test_simsiam_fixed_predictor_rate_warms_up_with_the_encoder_then_stays(run):
    total, warmup = RUNS[run]
    config = _config("simsiam", total=total, warmup=warmup)
    config.optimizer, config.weight_decay, config.momentum = "sgd", 0.0, 0.0
    tx = simsiam.optimizer(config)
    params = {"encoder": jnp.zeros(()), "predictor": jnp.zeros(())}
    state = tx.init(params)
    encoder_lr = common.learning_rate_schedule(config)
    for step in range(total):
        grads = {"encoder": jnp.ones(()), "predictor": jnp.ones(())}
        updates, state = tx.update(grads, state, params)
        predictor_lr = -float(updates["predictor"])
        expected = float(encoder_lr(min(step, min(warmup, total))))
        assert predictor_lr == pytest.approx(expected, abs=1e-6), (run, step)
        assert -float(updates["encoder"]) == pytest.approx(float(encoder_lr(step)), abs=1e-6)
