"""experiments/stop_gradient.py: BYOL and SimSiam with and without stop-gradient.

A smoke test of the whole script path at tiny sizes, and (slow) the seed's claim at a small
size where it is stable: with stop-gradient the embedding stays spread, without it the spread
crashes towards 0 and the loss reaches the value of a constant output.
"""

import json

import pytest
from experiment_scripts import load

stop_gradient = load("stop_gradient")
sweep = load("sweep")


# Slow since issue 16 (CI's time budget). In the default suite tests/test_byol_simsiam.py trains
# BYOL and SimSiam, the property test (tests/test_config_fuzz.py) traces them without
# stop-gradient, and the other experiments' smoke tests run the script path they share.
@pytest.mark.slow
def test_smoke_writes_json_and_png(tmp_path):
    # One run (each costs a compile and an evaluation); the slow test trains all four.
    report = stop_gradient.run(
        tmp_path, size=sweep.TINY, methods=["byol"], switches=[False], steps=4, log_every=2
    )
    assert json.loads((tmp_path / "stop_gradient.json").read_text()) == report
    assert (tmp_path / "stop_gradient.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert set(report["runs"]) == {"byol_without_stop_gradient"}
    for name, r in report["runs"].items():
        assert (r["method"], r["stop_gradient"]) == ("byol", name.endswith("with_stop_gradient"))
        assert r["embedding_dim"] == sweep.TINY["proj_dim"]
        assert r["curves"]["step"] == [2, 4]
        assert len(r["curves"]["spread"]) == len(r["curves"]["loss"]) == 2
        assert r["final_spread"] == pytest.approx(r["curves"]["spread"][-1], abs=1e-5)
        assert r["final_loss"] == pytest.approx(r["curves"]["loss"][-1], abs=1e-5)
        # The spread is std x sqrt(D) of unit vectors: at most about 1.
        assert 0 <= r["final_spread"] < 1.2 and 0 <= r["eval_spread"] < 1.2
        assert 0 <= r["knn_top1"] <= 1
        assert (tmp_path / "runs" / name / "results.json").is_file()


def test_a_misspelt_override_is_refused():
    with pytest.raises(KeyError, match="stop_gradiet"):
        stop_gradient.recipe_config("byol", {"byol.stop_gradiet": False})
    config = stop_gradient.recipe_config("simsiam", {"simsiam.stop_gradient": False})
    assert (config.optimizer, config.simsiam.stop_gradient) == ("sgd", False)  # the recipe's


# Small enough for a test: tiny networks at batch 32, 100 steps of each method's recipe config,
# at the recipe's base learning rate (not scaled down by 32/256: at 1/8 of it BYOL's spread
# had only reached 0.09 by step 100, SimSiam's 0.44). Measured (seed 0), stop-gradient on / off,
# under the tuned XLA:CPU flags of sslax.runtime, which the tests run with (2026-12-01; under
# XLA's default flags, SSLAX_XLA_FLAGS=default, the same runs give BYOL's healthy one uniformity
# -1.10 and rank 5.7: 100 steps amplify the flags' rounding differences):
#   BYOL:    spread 0.634 / 0.012, uniformity -0.80 / -0.002, effective rank 4.7 / 1.2,
#            loss 1.264 / 0.0005, collapse warning none / step 40;
#   SimSiam: spread 0.950 / 0.429, uniformity -1.60 / -0.083, effective rank 6.1 / 1.6,
#            loss -0.286 / -0.895, collapse warning none / none.
# The thresholds sit between the two regimes with a margin on both sides.
SLOW_SIZE = {**sweep.TINY, "batch_size": 32, "lr_scaling": "none"}
SLOW_STEPS = 100


@pytest.mark.slow
def test_without_stop_gradient_the_embedding_collapses(tmp_path):
    report = stop_gradient.run(tmp_path, size=SLOW_SIZE, steps=SLOW_STEPS, batch_size=32)
    keys = ("final_spread", "uniformity", "effective_rank", "final_loss", "collapse_warning_step")
    for method in stop_gradient.METHODS:
        on = report["runs"][stop_gradient.run_name(method, True)]
        off = report["runs"][stop_gradient.run_name(method, False)]
        got = {k: (on[k], off[k]) for k in keys}
        assert on["final_spread"] > 0.5 and on["uniformity"] < -0.5, (method, got)
        assert on["effective_rank"] > 3 and on["collapse_warning_step"] is None, (method, got)
        # Without stop-gradient nearly all held-out images give one z, on about one direction.
        assert off["uniformity"] > -0.1 and off["effective_rank"] < 2, (method, got)
        # The collapsed run sits near the loss of a constant output, the healthy one far above.
        minimum = stop_gradient.LOSS_MINIMUM[method]
        assert off["final_loss"] - minimum < 0.25 * (on["final_loss"] - minimum), (method, got)
    # BYOL's batch spread goes to 0; SimSiam's cannot (its projector ends in BatchNorm).
    byol_off = report["runs"][stop_gradient.run_name("byol", False)]
    assert byol_off["final_spread"] < 0.1 and byol_off["collapse_warning_step"] is not None
