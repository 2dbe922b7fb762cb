"""experiments/moco_momentum.py: MoCo v2 over the key encoder's momentum, with key consistency.

The smoke test runs the script at tiny sizes with m = 1: a key encoder that never moves must
give keys that agree exactly with those of L steps earlier although the query encoder moved,
which checks that the hook reads the key encoder. One run in the default suite (~25 s on 2
cores, most of it the ResNet compile); the slow-marked two-value sweep adds m = 0, where the
key encoder is the query encoder and its keys must drift.
"""

import json

import pytest
from experiment_scripts import load

moco_momentum = load("moco_momentum")
sweep = load("sweep")

# The tiny config; its batch size is a setting of the script.
TINY_CONFIG = {k: v for k, v in sweep.TINY.items() if k != "batch_size"}
TINY_RUN = {
    "steps": 8,
    "batch_size": sweep.TINY["batch_size"],
    "queue_size": 64,  # L = 4 steps
    "log_every": 2,
    "probe_examples": 32,
    "overrides": {**TINY_CONFIG, "checkpoint_every": 8},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("moco_momentum")
    return out, moco_momentum.run(out, momenta=(1.0,), **TINY_RUN)


def check_written(out, result, names):
    assert json.loads((out / "moco_momentum.json").read_text()) == result
    assert (out / "moco_momentum.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert result["queue_age_steps"] == 4
    assert list(result["momenta"]) == names
    for name, r in result["momenta"].items():
        config = json.loads((out / "runs" / name / "config.json").read_text())
        assert config["moco_v2"]["momentum"] == r["momentum"]
        assert 0.0 <= r["knn_top1"] <= 1.0
        # Logged at steps 2, 4, 6, 8; the keys of step t - 4 exist from step 6 on.
        steps, values = r["curves"][moco_momentum.CONSISTENCY]
        assert steps == [6, 8]
        assert r["consistency_final"] == values[-1]


@pytest.mark.slow  # CI's time budget (issue 17 added the collectives and plan tests)
def test_writes_json_and_png(report):
    check_written(*report, names=["m=1"])


@pytest.mark.slow  # CI's time budget (issue 17 added the collectives and plan tests)
def test_consistency_reads_the_key_encoder(report):
    frozen = report[1]["momenta"]["m=1"]
    assert frozen["curves"]["key_distance"][1][-1] > 1e-3  # the query encoder did move
    for value in frozen["curves"][moco_momentum.CONSISTENCY][1]:
        assert value == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_keys_drift_without_momentum(tmp_path):
    result = moco_momentum.run(tmp_path, momenta=(0.0, 1.0), **TINY_RUN)
    check_written(tmp_path, result, names=["m=0", "m=1"])
    fresh = result["momenta"]["m=0"]
    assert fresh["curves"]["key_distance"][1][-1] == pytest.approx(0.0, abs=1e-6)
    assert max(fresh["curves"][moco_momentum.CONSISTENCY][1]) < 0.999


def test_laptop_overrides_are_the_config_file():
    # The file's recipe under the views the experiments were measured with (sweep pins them).
    expected = json.loads(sweep.file_config("moco_v2", {}).to_json())
    assert json.loads(sweep.laptop_config("moco_v2", moco_momentum.LAPTOP).to_json()) == expected


def test_log_every_must_divide_the_queue_age():
    s = {**moco_momentum.DEFAULTS, **TINY_RUN, "log_every": 3}
    config = moco_momentum.config_of(s, 0.9)
    with pytest.raises(ValueError, match="must divide the queue's age 4"):
        moco_momentum.consistency_hook(config, probe=None)
