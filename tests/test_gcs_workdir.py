"""Workdirs on object storage, for real: every client against a local GCS emulator (tests/gcs.py).

- Fast, in this process: orbax checkpoints saved to and restored from ``gs://``; a step that was
  never committed (no ``commit_success.txt``, as when a process dies mid-save) is set aside, not
  restored, and the resume hint names the newest committed step; the logs' mirror copies
  metrics up, goes on with a resumed run's file, and retries a failed copy at the next sync.
- Slow, as a user runs it: ``python -m sslax.train --workdir=gs://...`` is killed with SIGKILL,
  run again, and ends with the same per-step losses and ``params_checksum`` as an uninterrupted
  run on a local disk; ``python -m sslax.eval --workdir=gs://...`` writes eval.json there; every
  file of a run (config, metrics, TensorBoard events, profile, curves, results) is in the bucket.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

import gcs
from cli_runs import TINY, run_cli
from sslax import checkpointing, paths


@pytest.fixture(scope="module")
def gcs_env(tmp_path_factory):
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    with gcs.emulator(log) as env, gcs.environment(env):
        yield env


def _state(value: float):
    return {"w": jnp.full((4, 3), value), "step": jnp.int32(int(value))}


def test_checkpoints_on_gcs_restore_and_set_aside_an_uncommitted_step(gcs_env):
    directory = f"gs://{gcs.BUCKET}/unit/checkpoints"
    store = checkpointing.Checkpoints(directory)
    for step in (1, 2, 3):
        store.save(step, _state(step), {"signature": checkpointing.state_signature(_state(0))})
        store.wait_until_finished()
    store.close()
    # A save that a dying process never finished: orbax commits a GCS step with this file last.
    (epath.Path(directory) / "3" / "commit_success.txt").unlink()

    store = checkpointing.Checkpoints(directory)
    assert "newest checkpoint every process finished is step 2" in store.resume_hint()
    restored, step = store.restore_newest(_state(0), {})
    store.close()
    assert step == 2
    np.testing.assert_array_equal(jax.device_get(restored["w"]), np.full((4, 3), 2.0))
    aside = epath.Path(f"gs://{gcs.BUCKET}/unit/checkpoints_incomplete")
    assert [p.name for p in aside.iterdir()] == ["3"]
    assert sorted(p.name for p in epath.Path(directory).iterdir()) == ["1", "2"]


def test_log_mirror_copies_resumes_and_retries(gcs_env, monkeypatch, capsys):
    remote = paths.resolve(f"gs://{gcs.BUCKET}/mirror")
    mirror = paths.Mirror(remote, seed=("metrics.jsonl",))
    (mirror.local / "metrics.jsonl").write_text('{"step": 1}\n')
    mirror.close()
    assert (remote / "metrics.jsonl").read_text() == '{"step": 1}\n'

    # A resumed run goes on with the file; a copy that fails is retried at the next sync.
    mirror = paths.Mirror(remote, seed=("metrics.jsonl",))
    with open(mirror.local / "metrics.jsonl", "a") as f:
        f.write('{"step": 2}\n')
    real_write = type(remote).write_bytes
    calls = []

    def flaky_write(self, data):
        calls.append(self.name)
        if len(calls) == 1:
            raise OSError("503 Service Unavailable")
        return real_write(self, data)

    monkeypatch.setattr(type(remote), "write_bytes", flaky_write)
    mirror.sync(force=True)
    mirror._thread.join()
    assert mirror.failures == 1
    assert "retrying at the next sync" in capsys.readouterr().err
    assert (remote / "metrics.jsonl").read_text() == '{"step": 1}\n'  # not yet
    mirror.close()
    assert (remote / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    assert not os.path.exists(mirror.local)  # staging removed once everything is up


def test_a_workdir_without_bucket_is_one_line(tmp_path, data_dir):
    run = run_cli([*TINY, "--workdir=gs:///run"], data_dir)
    assert run.returncode == 2
    assert "names no bucket: write gs://BUCKET/PATH" in run.stderr
    assert "Traceback" not in run.stderr


# Long enough (a few seconds of steps) that the kill lands between the first checkpoint and the end.
STEPS = 200
FLAGS = [
    *[f for f in TINY if not f.startswith(("--config.total_steps", "--config.log_every"))],
    f"--config.total_steps={STEPS}",
    "--config.log_every=1",
    "--config.checkpoint_every=10",
]


def _losses(text):
    """{step: loss}, the last record of each step (a resumed run logs some steps twice)."""
    records = [json.loads(line) for line in text.splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


@pytest.mark.slow  # three short runs and an evaluation, ~3 min on 2 cores
def test_train_on_gcs_is_killed_resumes_exactly_and_evaluates(gcs_env, tmp_path, data_dir):
    local = tmp_path / "local"
    run = run_cli([*FLAGS, f"--workdir={local}"], data_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    reference = json.loads((local / "results.json").read_text())

    workdir = f"gs://{gcs.BUCKET}/e2e/run"
    remote = epath.Path(workdir)
    env = {**os.environ, **gcs_env, "SSLAX_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu"}
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sslax.train", *FLAGS, f"--workdir={workdir}"]
            + ["--config.profile_steps=(1, 3)"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.time() + 300
        # Killed once a checkpoint is committed, and before the run ends.
        while not any(s >= 10 for s in _committed(remote / "checkpoints")):
            assert time.time() < deadline and process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not paths.fresh(remote / "results.json").exists(), "killed too late: run finished"

    run = subprocess.run(
        [sys.executable, "-m", "sslax.train", *FLAGS, f"--workdir={workdir}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    resumed_from = int(re.search(r"resuming from the checkpoint at step (\d+)", run.stdout)[1])
    assert resumed_from >= 10
    results = json.loads(paths.fresh(remote / "results.json").read_text())
    assert results["params_checksum"] == reference["params_checksum"]
    assert _losses((remote / "metrics.jsonl").read_text()) == _losses(
        (local / "metrics.jsonl").read_text()
    )
    names = {p.name for p in remote.iterdir()}
    assert {"config.json", "metrics.jsonl", "tensorboard", "curves.png", "profile"} <= names
    assert any(p.name.startswith("events.out.tfevents") for p in (remote / "tensorboard").iterdir())

    evaluation = subprocess.run(
        [sys.executable, "-m", "sslax.eval", f"--workdir={workdir}"]
        + ["--max_train_examples=200", "--max_test_examples=64"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert f"written to {workdir}/eval.json" in evaluation.stdout
    assert json.loads(paths.fresh(remote / "eval.json").read_text())["checkpoint_step"] == STEPS


def _committed(directory):
    import orbax.checkpoint as ocp

    try:
        return ocp.step.checkpoint_steps(paths.fresh(directory))
    except OSError:
        return []


@pytest.mark.slow  # two commands, ~25 s
def test_plan_and_preview_write_to_gcs(gcs_env, data_dir):
    env = {**os.environ, **gcs_env, "SSLAX_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu"}
    tiny = [f for f in TINY if f.startswith(("--config.batch_size", "--config.image_size"))]
    out = f"gs://{gcs.BUCKET}/commands"
    for command, flags in (
        ("sslax.plan", ["--topology=cpu:1", f"--out={out}/plan", *tiny]),
        ("sslax.data.preview", [f"--out={out}/preview", *tiny]),
    ):
        run = subprocess.run(
            [sys.executable, "-m", command, *flags],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
    plan = json.loads(paths.fresh(epath.Path(out) / "plan" / "plan.json").read_text())
    assert plan["num_devices"] == 1
    views = epath.Path(out) / "preview"
    assert {p.name for p in views.iterdir()} == {"views.npz", "views.png"}
    with (views / "views.npz").open("rb") as f:
        assert np.load(f)["views_16"].shape[1:] == (16, 16, 3)
