"""experiments/projection_head.py: SimCLR with an MLP, a linear or no projection head, end to end.

The smoke tests run the script's own path at tiny sizes: they measure nothing about heads, but
check that the json and figure are written and that the numbers of ``evaluate_checkpoint`` agree
with what they must equal. One run (no head) in the default suite, which costs a ResNet compile
and an evaluation (~25 s on 2 cores); the two-head sweep is slow-marked.
"""

import json

import pytest
from experiment_scripts import load

projection_head = load("projection_head")
sweep = load("sweep")

# The tiny config; its batch size is a setting of the script.
TINY_CONFIG = {k: v for k, v in sweep.TINY.items() if k != "batch_size"}
TINY_RUN = {
    "steps": 4,
    "batch_size": sweep.TINY["batch_size"],
    "overrides": {**TINY_CONFIG, "log_every": 2, "checkpoint_every": 4},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("projection_head")
    return out, projection_head.run(out, heads=("none",), **TINY_RUN)


def check_written(out, result, heads):
    assert json.loads((out / "projection_head.json").read_text()) == result
    assert (out / "projection_head.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert list(result["heads"]) == list(heads)
    for head, r in result["heads"].items():
        for key in projection_head.SCORES:
            assert 0.0 <= r[key] <= 1.0, (head, key)
        # evaluate_checkpoint sees the final state on the run's own kNN and probe examples.
        assert r["knn_top1_h"] == r["run_knn_top1"]
        assert r["linear_top1_h"] == r["run_linear_top1"]
        config = json.loads((out / "runs" / head / "config.json").read_text())
        assert config["simclr"]["projection_head"] == head
        assert config["total_steps"] == 4


@pytest.mark.slow  # CI's time budget: the sweep's runs take 45 s
def test_writes_json_and_png(report):
    check_written(*report, heads=["none"])


@pytest.mark.slow  # CI's time budget: the sweep's runs take 45 s
def test_without_a_head_z_is_h(report):
    none = report[1]["heads"]["none"]
    assert none["knn_top1_z"] == none["knn_top1_h"]
    assert none["linear_top1_z"] == none["linear_top1_h"]


@pytest.mark.slow  # CI's time budget: the sweep's runs take 45 s
def test_a_finished_sweep_is_read_back(report, capsys):
    out, result = report
    assert projection_head.run(out, heads=("none",), **TINY_RUN) == result
    assert "reusing the finished run" in capsys.readouterr().out


@pytest.mark.slow
def test_two_heads(tmp_path):
    result = projection_head.run(tmp_path, heads=("mlp", "linear"), **TINY_RUN)
    check_written(tmp_path, result, heads=["mlp", "linear"])


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="heads must be"):
        projection_head.run(tmp_path, heads=("mlp", "deep"))
    with pytest.raises(ValueError, match="by their own settings"):
        projection_head.run(tmp_path, overrides={"batch_size": 16})
