"""The main command end to end: outputs, resume, and bad flags."""

import json
import pathlib

import pytest
from cli_runs import TINY, run_cli

from sslax import train

CIFAR_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs" / "cifar.py"


def _tiny_config(**overrides):
    import importlib.util

    spec = importlib.util.spec_from_file_location("simclr_config", train.DEFAULT_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    with config.unlocked():
        for flag in TINY:
            key, value = flag.removeprefix("--config.").split("=")
            config[key] = type(config[key])(value)
        config.update(overrides)
    return config


def test_main_command_writes_every_output_and_summary(tmp_path, data_dir):
    workdir = tmp_path / "run"
    # With the config's own warm-up (25 steps), longer than this 4-step run: it is clipped.
    flags = [f for f in TINY if not f.startswith("--config.warmup_steps")]
    result = run_cli([f"--workdir={workdir}", *flags], data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for line in (
        "note: warmup_steps 25 is longer than the run (4 steps)",
        "step 2/4",
        "step 4/4",
        "kNN top-1 (held-out)",
        "img/s",
        "ETA",
    ):
        assert line in result.stdout, result.stdout
    results = json.loads((workdir / "results.json").read_text())
    for key in (
        "method",
        "steps",
        "final_loss",
        "knn_top1",
        "knn_top1_random_init",
        "knn_top1_raw_pixels",
        "linear_top1_raw_pixels",
        "embedding_std",
        "params_checksum",
    ):
        assert key in results, key
    assert 0.0 <= results["linear_top1_raw_pixels"] <= 1.0
    assert results["method"] == "simclr" and results["steps"] == 4
    assert 0.0 <= results["knn_top1"] <= 1.0 and results["embedding_std"] > 0.01
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4]
    # The warm-up over the 4 steps from 0 to the peak 1.0 x 16/256: steps 0, 1 average 1/8 of it.
    assert records[0]["learning_rate"] == pytest.approx(0.0625 / 8)
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert (workdir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]
    # The evaluation at the end: kNN, the linear probe on h, the geometry of z on two views.
    evaluation = [r for r in records if "knn_top1" in r]
    assert [r["step"] for r in evaluation] == [4]
    for key in ("alignment", "uniformity", "effective_rank", "linear_top1"):
        assert key in evaluation[0], key
    assert 0.0 <= evaluation[0]["alignment"] <= 4.0  # squared distance of unit vectors
    assert evaluation[0]["uniformity"] <= 0.0
    assert 1.0 <= evaluation[0]["effective_rank"] <= 16  # proj_dim 16 in TINY
    assert results["linear_top1"] == evaluation[0]["linear_top1"]
    assert "linear probe top-1" in result.stdout
    assert "linear top-1, raw pixels" in result.stdout


# Resume is also covered in the default suite by test_faults.py (SIGKILL and restart) and
# test_multiprocess.py (two processes); this in-process variant runs with `pytest -m slow`.
@pytest.mark.slow
def test_rerun_in_the_same_workdir_resumes(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("SSLAX_DATA_DIR", data_dir)
    workdir = tmp_path / "run"
    first = train.train_and_evaluate(_tiny_config(total_steps=2), workdir)
    assert first["steps"] == 2
    second = train.train_and_evaluate(_tiny_config(total_steps=4), workdir)
    assert second["steps"] == 4
    steps = [
        json.loads(line)["step"]
        for line in (workdir / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert steps == [2, 4]
    # Same run uninterrupted: same parameters, since batches and keys are functions of the step.
    straight = train.train_and_evaluate(_tiny_config(total_steps=4), tmp_path / "straight")
    assert straight["params_checksum"] == second["params_checksum"]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.no_such_field=1", "no_such_field"),
        ("--config.batch_size=-4", "batch_size must be >= 1, got -4"),
        ("--config.dataset=no_such_data", "unknown dataset 'no_such_data'"),
        ("--config.dataset=tfds:no_such_data", "unknown TFDS dataset"),
        ("--config.method=simclr2", "unknown method 'simclr2'"),
        ("--config.temperature=0", "temperature must be > 0, got 0"),
        ("--config.batch_size=lots", "batch_size"),
        ("--no_such_flag=3", "no_such_flag"),
        ("--config=/no/such/config.py", "cannot load --config"),
        (f"--config={CIFAR_CONFIG}:byl", "unknown method 'byl'; choose one of simclr"),
        ("--config.mesh=(('data', 2),)", "mesh [('data', 2)] has 2 devices, but there are 1"),
        ("--num_processes=2", "go together"),
    ],
)
def test_bad_flags_fail_with_one_line_and_exit_2_before_compiling(
    tmp_path, data_dir, flag, message
):
    workdir = tmp_path / "run"
    result = run_cli([f"--workdir={workdir}", flag], data_dir, JAX_LOG_COMPILES="1")
    assert result.returncode == 2, (result.stdout, result.stderr)
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, result.stderr
    assert message in error_lines[0] and error_lines[0].startswith("sslax.train: error:")
    assert not workdir.exists()
    assert "Compiling" not in result.stderr + result.stdout


def test_unprepared_tfds_dataset_fails_with_the_command_that_prepares_it(tmp_path, data_dir):
    workdir = tmp_path / "run"
    flags = [f"--config={CIFAR_CONFIG}:simclr", f"--config.data_dir={tmp_path / 'tfds'}"]
    result = run_cli([f"--workdir={workdir}", *flags], data_dir)
    assert result.returncode == 2, (result.stdout, result.stderr)
    # TFDS itself may log a warning line first; ours is the last line.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sslax.train: error: TFDS dataset 'cifar10'"), result.stderr
    assert "tfds build cifar10 --file_format=array_record" in last
    assert "Traceback" not in result.stderr and not workdir.exists()
