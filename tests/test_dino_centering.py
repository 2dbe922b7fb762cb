"""experiments/dino_centering.py: DINO's teacher with centring or sharpening switched off.

A smoke test of the whole script path at tiny sizes, and (slow) the seed's and the paper's
claim at a small size where it is stable: without centring one prototype takes every image,
without sharpening the teacher goes uniform, with both it is confident and varied.
"""

import json
import math

import pytest
from experiment_scripts import load

dino_centering = load("dino_centering")
sweep = load("sweep")

# One crop size (no local crops): half the compile time of multi-crop, the same script path.
SMOKE_SIZE = {
    **sweep.TINY,
    "dino.out_dim": 64,
    "dino.hidden_dim": 32,
    "dino.bottleneck_dim": 16,
    "dino.num_local": 0,
    "dino.freeze_last_layer_steps": 1,
}


# Slow since issue 16 (CI's time budget). In the default suite tests/test_dino.py trains with
# both switches on, the property test (tests/test_config_fuzz.py) traces them off, and the
# other experiments' smoke tests run the script path they share (experiments/sweep.py).
@pytest.mark.slow
def test_smoke_writes_json_and_png(tmp_path):
    runs = ["sharpening_off"]  # one run (a compile and an evaluation); the slow test trains 3
    report = dino_centering.run(tmp_path, size=SMOKE_SIZE, runs=runs, steps=4, log_every=2)
    assert json.loads((tmp_path / "dino_centering.json").read_text()) == report
    assert (tmp_path / "dino_centering.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert report["out_dim"] == 64 and report["log_k"] == pytest.approx(math.log(64))
    assert list(report["runs"]) == runs
    for name, r in report["runs"].items():
        assert (r["centering"], r["sharpening"]) == dino_centering.RUNS[name]
        curves = r["curves"]
        assert curves["step"] == [2, 4]
        for key in dino_centering.TEACHER_KEYS:
            assert len(curves[key]) == 2
            assert r[key] == pytest.approx(sum(curves[key]) / 2, abs=1e-4)  # the tail mean
        # Entropies of distributions over K prototypes lie in [0, log K].
        assert 0 <= r["teacher_entropy"] <= r["teacher_batch_entropy"] + 1e-4 <= math.log(64) + 2e-4
        assert 1 / 64 - 1e-6 <= r["teacher_max_prob"] <= 1
        assert r["mutual_information"] == pytest.approx(
            r["teacher_batch_entropy"] - r["teacher_entropy"]
        )
        assert (tmp_path / "runs" / name / "results.json").is_file()


def test_a_misspelt_override_is_refused():
    with pytest.raises(KeyError, match="centring"):
        dino_centering.recipe_config({"dino.centring": False})


# Small enough for a test: the tiny networks, K = 256 and the fast teacher of test_dino.py, and
# 200 steps of the script's recipe at 8x its learning rate. Measured (seed 0), means of the last
# 3 log intervals, log K = 5.545, 1/K = 0.0039:
#   both on:        entropy 4.711, max prob 0.064, batch entropy 5.394 (mutual information 0.68);
#   centering off:  entropy 0.388, max prob 0.838, batch entropy 0.766 (about two prototypes
#                   for every image, still falling when the learning rate has decayed);
#   sharpening off: entropy 5.519, max prob 0.0069, batch entropy 5.545.
SLOW_SIZE = {
    **sweep.TINY,
    "batch_size": 32,
    "learning_rate": 0.04,  # x 32/256: 5e-3
    "dino.out_dim": 256,
    "dino.hidden_dim": 64,
    "dino.bottleneck_dim": 32,
    "dino.local_size": 8,
    "dino.num_local": 2,
    "dino.teacher_momentum_base": 0.98,
    "dino.freeze_last_layer_steps": 5,
}


@pytest.mark.slow
def test_each_switch_guards_against_its_own_collapse(tmp_path):
    report = dino_centering.run(tmp_path, size=SLOW_SIZE, steps=200, batch_size=32)
    log_k, k = report["log_k"], report["out_dim"]
    runs = report["runs"]
    keys = ("teacher_entropy", "teacher_max_prob", "teacher_batch_entropy", "mutual_information")
    got = {name: {key: round(r[key], 4) for key in keys} for name, r in runs.items()}
    both = runs["both_on"]  # confident, and not the same prototype for every image
    assert 1.0 < both["teacher_entropy"] < log_k - 0.5, got
    assert both["teacher_max_prob"] > 10 / k and both["mutual_information"] > 0.4, got
    one = runs["centering_off"]  # confident, and one or two prototypes for every image
    assert one["teacher_entropy"] < 0.6 and one["teacher_max_prob"] > 0.75, got
    assert one["teacher_batch_entropy"] < 1.2 < both["teacher_batch_entropy"] - 3, got
    flat = runs["sharpening_off"]  # every image the uniform distribution
    assert flat["teacher_entropy"] > log_k - 0.05 and flat["teacher_max_prob"] < 5 / k, got
