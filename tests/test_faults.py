"""Fault injection: nothing a crash, a preemption, a bad checkpoint or a divergence can lose.

Every test starts from, or compares with, one uninterrupted 60-step SimCLR run (checkpoints
every 10 steps, a log line per step) made once per module.
- SIGKILL at a random step after the first checkpoint, then the same command again: the same
  per-step losses (so the same batches in the same order) and the same params_checksum.
- SIGTERM: the current step finishes, a checkpoint is saved, exit 0 within a bounded time; with
  two processes, both save the same step through JAX's preemption sync point.
- A truncated newest checkpoint is moved aside with a warning and the previous one restored.
- A workdir of another config is refused with the mismatch named, and left byte for byte.
- A non-finite loss stops the run naming the step and the metric; no checkpoint after the last
  good one is written.
- Representation collapse is named in a warning.
Bad flags and values are in test_bad_input.py; the data-record checks in test_pipeline.py.
"""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cli_runs import TINY, free_port, run_cli

STEPS = 60
FLAGS = [
    *[f for f in TINY if not f.startswith(("--config.total_steps", "--config.log_every"))],
    f"--config.total_steps={STEPS}",
    "--config.log_every=1",
    "--config.checkpoint_every=10",
]


def _losses(workdir):
    """{step: loss}, the last record of each step (a resumed run logs some steps twice)."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _results(workdir):
    return json.loads((workdir / "results.json").read_text())


def _tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _env(data_dir, **extra):
    return {**os.environ, "SSLAX_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu", **extra}


def _start(args, data_dir, log_path, **extra_env):
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sslax.train", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(data_dir, **extra_env),
        )


def _wait_for_step(log_path, step, processes, timeout=300):
    deadline = time.time() + timeout
    pattern = re.compile(rf"step +{step}/")
    while not pattern.search(log_path.read_text()):
        assert time.time() < deadline, f"never reached step {step}"
        for p in processes:
            assert p.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("reference") / "run"
    run = run_cli([*FLAGS, f"--workdir={workdir}"], data_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "representation collapse" not in run.stdout + run.stderr  # a healthy run
    assert _results(workdir)["collapse_warning_step"] is None
    return workdir


def test_sigkill_then_restart_ends_exactly_like_the_uninterrupted_run(
    reference, tmp_path, data_dir
):
    kill_at = random.Random().randint(12, STEPS - 5)  # after the first checkpoint (step 10)
    workdir, log = tmp_path / "run", tmp_path / "first.log"
    process = _start([*FLAGS, f"--workdir={workdir}"], data_dir, log)
    try:
        _wait_for_step(log, kill_at, [process])
        # Saves are asynchronous: kill only once one is committed (orbax renames the finished
        # folder to its bare step number), or the restart would rightly start from scratch.
        # Any step will do: older ones are pruned (max_to_keep), so step 10 may be gone.
        deadline = time.time() + 120
        while not any(p.name.isdigit() for p in (workdir / "checkpoints").glob("*")):
            assert time.time() < deadline and process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (workdir / "results.json").exists()

    run = run_cli([*FLAGS, f"--workdir={workdir}"], data_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    resumed_from = int(re.search(r"resuming from the checkpoint at step (\d+)", run.stdout)[1])
    assert 10 <= resumed_from <= kill_at, (kill_at, resumed_from)
    assert _losses(workdir) == _losses(reference), f"killed at step {kill_at}"
    assert _results(workdir)["params_checksum"] == _results(reference)["params_checksum"]


def test_sigterm_finishes_the_step_saves_and_exits_zero(tmp_path, data_dir):
    workdir, log = tmp_path / "run", tmp_path / "run.log"
    flags = [*FLAGS, "--config.total_steps=100000", "--config.checkpoint_every=100000"]
    process = _start([*flags, f"--workdir={workdir}"], data_dir, log)
    try:
        _wait_for_step(log, 5, [process])
        process.send_signal(signal.SIGTERM)
        signalled = time.time()
        returncode = process.wait(timeout=60)
        waited = time.time() - signalled
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert returncode == 0, output[-3000:]
    assert waited < 30
    saved = int(re.search(r"preempted: saved the checkpoint at step (\d+)", output)[1])
    assert saved == max(_losses(workdir))  # the step that was running when the signal came
    assert [p.name for p in (workdir / "checkpoints").iterdir()] == [str(saved)]


@pytest.mark.slow  # two JAX processes, ~35 s: with `pytest -m slow` (CI's time budget)
def test_sigterm_to_one_of_two_processes_saves_the_same_step_on_both(tmp_path, data_dir):
    workdir = tmp_path / "run"
    flags = [
        *FLAGS,
        "--config.total_steps=100000",
        "--config.checkpoint_every=100000",
        f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{free_port()}",
        "--num_processes=2",
        "--distributed_timeout_s=30",
    ]
    logs = [tmp_path / f"process_{i}.log" for i in range(2)]
    processes = [
        _start([*flags, f"--process_id={i}"], data_dir, logs[i], JAX_NUM_CPU_DEVICES="2")
        for i in range(2)
    ]
    try:
        _wait_for_step(logs[0], 5, processes)
        processes[1].send_signal(signal.SIGTERM)
        signalled = time.time()
        returncodes = [p.wait(timeout=120) for p in processes]
        waited = time.time() - signalled
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert returncodes == [0, 0], [log.read_text()[-2000:] for log in logs]
    print(f"SIGTERM to one process -> both exited in {waited:.1f} s")
    assert waited < 60, waited
    synced = [
        set(re.findall(r"Reached preemption sync point, step=(\d+)", log.read_text()))
        for log in logs
    ]
    assert len(synced[0]) == 1 and synced[0] == synced[1], synced
    saved = int(re.search(r"preempted: saved the checkpoint at step (\d+)", logs[0].read_text())[1])
    assert {int(s) for s in synced[0]} == {saved}
    assert [p.name for p in (workdir / "checkpoints").iterdir()] == [str(saved)]

    # The next launch of both resumes there.
    flags = [
        *[f for f in flags if not f.startswith(("--config.total_steps", "--coordinator"))],
        f"--config.total_steps={saved + 2}",
        f"--coordinator_address=127.0.0.1:{free_port()}",
    ]
    logs = [tmp_path / f"relaunch_{i}.log" for i in range(2)]
    processes = [
        _start([*flags, f"--process_id={i}"], data_dir, logs[i], JAX_NUM_CPU_DEVICES="2")
        for i in range(2)
    ]
    try:
        returncodes = [p.wait(timeout=300) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert returncodes == [0, 0], [log.read_text()[-2000:] for log in logs]
    output = logs[0].read_text()
    assert f"resuming from the checkpoint at step {saved} in" in output
    assert f"step {saved + 2}/{saved + 2}" in output


def test_truncated_newest_checkpoint_is_set_aside_and_the_previous_restored(
    reference, tmp_path, data_dir
):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    (workdir / "results.json").unlink()
    for data_file in (workdir / "checkpoints" / str(STEPS)).rglob("d/*"):
        data_file.write_bytes(data_file.read_bytes()[:100])
    run = run_cli([*FLAGS, f"--workdir={workdir}"], data_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"warning: the checkpoint at step {STEPS} cannot be read" in run.stdout
    assert f"resuming from the checkpoint at step {STEPS - 10}" in run.stdout
    assert "Event loop is closed" not in run.stderr  # orbax's aborted reads, filtered
    assert (workdir / "checkpoints_unreadable" / str(STEPS)).is_dir()
    assert _results(workdir)["params_checksum"] == _results(reference)["params_checksum"]


def test_workdir_of_another_config_is_refused_and_left_untouched(reference, tmp_path, data_dir):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    before = _tree_digest(workdir)
    run = run_cli([*FLAGS, f"--workdir={workdir}", "--config.width=0.25"], data_dir)
    assert run.returncode == 2, run.stderr[-3000:]
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("sslax.train: error:")
    assert f"holds a checkpoint (step {STEPS}) of another run" in error
    assert "width: 0.125 in the checkpoint, 0.25 now" in error
    assert re.search(r"its \.params\S+ is \[\d+.*\] float32, this config's is \[\d+", error)
    assert _tree_digest(workdir) == before


def test_divergence_names_step_and_metric_and_keeps_the_last_good_checkpoint(
    reference, tmp_path, data_dir
):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    # Continue the finished run for ten more steps at an absurd learning rate.
    flags = [
        *FLAGS,
        f"--workdir={workdir}",
        "--config.total_steps=70",
        "--config.learning_rate=1e30",
    ]
    flags += ["--config.checkpoint_every=1"]  # a save is due after every step
    run = run_cli(flags, data_dir)
    assert run.returncode == 1, run.stderr[-3000:]
    error = run.stderr.strip().splitlines()[-1]
    match = re.search(
        r"non-finite (loss \S+ at step|grad_norm \S+ at step|parameters or optimizer state "
        r"after step) (\d+)",
        error,
    )
    assert match, error
    bad = int(match[2])
    assert STEPS < bad <= 70
    assert f"the last good checkpoint, step {bad - 1}" in error
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
    assert max(steps) == bad - 1  # every step before the bad one, none after


def test_collapse_is_named_in_a_warning(tmp_path, data_dir):
    # A threshold above any spread: every log interval counts as collapsed.
    flags = [*TINY, f"--workdir={tmp_path / 'run'}", "--config.log_every=1"]
    flags += ["--config.collapse_threshold=10", "--config.collapse_patience=3"]
    run = run_cli(flags, data_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(
        r"warning: representation collapse: .* for 3 log intervals \(step 3\)", run.stdout
    )
    assert _results(tmp_path / "run")["collapse_warning_step"] == 3


@pytest.mark.slow
def test_a_real_collapse_is_named(tmp_path, data_dir):
    # BYOL without its stop-gradient collapses to one embedding, with test_byol_simsiam.py's
    # settings: embedding std x sqrt(D) 0.72 at step 5, 0.067 at step 40 (measured).
    flags = [*FLAGS, f"--workdir={tmp_path / 'run'}", "--config.method=byol"]
    flags += ["--config.byol.stop_gradient=False", "--config.recipe=byol"]
    flags += [
        "--config.learning_rate=0.5",
        "--config.lr_scaling=none",
        "--config.proj_hidden_dim=64",
    ]
    run = run_cli(flags, data_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "warning: representation collapse" in run.stdout
    assert _results(tmp_path / "run")["collapse_warning_step"] is not None
