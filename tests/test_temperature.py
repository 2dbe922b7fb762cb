"""experiments/temperature.py: the seed's P(positive) table through the library's loss, the
hard-negative gradient share over tau, and the SimCLR temperature sweep (smoke size here)."""

import json
import math

import numpy as np
import pytest
from experiment_scripts import load

temperature = load("temperature")
sweep = load("sweep")


@pytest.mark.parametrize("tau", [0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0])
def test_softmax_read_off_the_loss_matches_the_closed_form(tau):
    row = temperature.softmax_row(tau)
    logits = np.array([0.8, 0.6, 0.1]) / tau
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert row["p_positive"] == pytest.approx(p[0], abs=1e-5)  # exp(-loss)
    got = [row["p_positive_from_gradient"], row["p_hard_negative"], row["p_easy_negative"]]
    assert got == pytest.approx(p.tolist(), abs=1e-5)  # from the anchor's gradient
    assert row["hard_negative_gradient_share"] == pytest.approx(p[1] / (p[1] + p[2]), abs=1e-5)
    assert row["loss"] == pytest.approx(-math.log(p[0]), abs=1e-5)  # float32 logsumexp


def test_the_seeds_table():
    # The seed prints P(positive) 2981/3387 = 0.880 at tau 0.1 (exactly 0.88009) and 0.522 at 0.5.
    assert temperature.softmax_row(0.1)["p_positive"] == pytest.approx(0.8801, abs=1e-4)
    assert temperature.softmax_row(0.5)["p_positive"] == pytest.approx(0.5217, abs=1e-4)
    table = {t: temperature.softmax_row(t) for t in (0.1, 0.5)}
    checks = temperature.seed_table_check(table)
    assert all(all(c["agrees_to_printed_precision"].values()) for c in checks.values())
    # A wrong printed value would be caught: e^6 = 403.4 is not 404.
    table[0.1] = {**table[0.1], "exp_hard_negative": 404.1}
    assert not temperature.seed_table_check(table)["0.1"]["agrees_to_printed_precision"]["exp_hard"]


def test_a_lower_temperature_pours_the_gradient_onto_the_hard_negative():
    taus = np.geomspace(0.02, 2.0, 25)
    share = [temperature.softmax_row(float(t))["hard_negative_gradient_share"] for t in taus]
    assert np.all(np.diff(share) < 0)
    assert share[0] > 0.999 and 0.5 < share[-1] < 0.6  # -> 1/2 as tau grows


TINY_RUN = {
    "steps": 2,
    "batch_size": sweep.TINY["batch_size"],
    "sweep_points": 5,
    "overrides": {
        **{k: v for k, v in sweep.TINY.items() if k != "batch_size"},
        "log_every": 2,
    },
}


def check_written(out, report, taus):
    assert json.loads((out / "temperature.json").read_text()) == report
    assert (out / "temperature.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [r["tau"] for r in report["table"]] == sorted({0.1, 0.5, *taus})
    assert len(report["tau_sweep"]["tau"]) == len(report["tau_sweep"]["p_positive"]) == 5
    assert list(report["runs"]) == [f"{t:g}" for t in taus]
    for name, r in report["runs"].items():
        config = json.loads((out / "runs" / f"tau_{name}" / "config.json").read_text())
        assert (config["temperature"], config["total_steps"]) == (r["tau"], 2)
        for key in ("knn_top1", "linear_top1", "knn_top1_random_init"):
            assert 0.0 <= r[key] <= 1.0
        assert r["uniformity"] <= 0.0 <= r["alignment"]


@pytest.mark.slow  # CI's time budget; the closed forms above stay in the default suite
def test_smoke_run_writes_json_and_png(tmp_path):
    # One run in the default suite: a ResNet compile and an evaluation, ~20 s on 2 cores.
    report = temperature.run(tmp_path, taus=(0.2,), **TINY_RUN)
    check_written(tmp_path, report, [0.2])


@pytest.mark.slow
def test_smoke_sweep_of_two_taus(tmp_path):
    report = temperature.run(tmp_path, taus=(0.1, 0.5), **TINY_RUN)
    check_written(tmp_path, report, [0.1, 0.5])
    # Same seed, same data: the baseline before training cannot depend on tau.
    first, second = report["runs"].values()
    assert first["knn_top1_random_init"] == second["knn_top1_random_init"]


def test_the_temperature_is_not_an_override(tmp_path):
    with pytest.raises(ValueError, match="by their own settings"):
        temperature.run(tmp_path, overrides={"temperature": 0.1})
