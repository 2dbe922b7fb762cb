"""Multi-process runs on this machine, as on a pod: JAX's multi-controller runtime, gloo on CPU.

- `launch/local.sh 2` (2 CPU devices per process) trains SimCLR for 20 steps, checkpoints and
  resumes, and its per-step losses equal those of one process with 4 devices and of one device.
- A process that dies (SIGKILL, no chance to say goodbye) makes the survivor exit within a
  bounded time instead of hanging in a collective: one line naming the lost process and where a
  relaunch resumes, exit code 75 (sslax.parallel.LOST_PEER_EXIT_CODE), no stack dump; whether it
  hears of the death from a gloo collective or from JAX's coordination service.
- Relaunching both after that SIGKILL ends with the params_checksum of the uninterrupted run, and
  so does resuming a 2 processes x 2 devices run on 4 x 1 (gloo reduces alike). Resuming it on
  1 x 4 gives losses equal to float32 rounding, not bit for bit: XLA:CPU's in-process psum adds
  in another order than gloo's.
- local.sh itself stops every process when the first one fails.
"""

import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from cli_runs import TINY, free_port, run_cli

from sslax import parallel

REPO = pathlib.Path(__file__).resolve().parents[1]
LOCAL_SH = str(REPO / "launch" / "local.sh")
STEPS = 20
FLAGS = [
    *[f for f in TINY if not f.startswith(("--config.total_steps", "--config.log_every"))],
    f"--config.total_steps={STEPS}",
    "--config.log_every=1",
    "--config.checkpoint_every=10",
    # At the laptop temperature 0.1 the logits are 5x those at 0.5, and float32 reduction-order
    # differences between topologies grow to 1e-3 of the loss within 20 steps (measured); at 0.5
    # they stayed under 1e-4 of it (measured), the tolerance below.
    "--config.temperature=0.5",
]


def _losses(workdir, skip_lines=0):
    """{step: loss} from metrics.jsonl, after its first ``skip_lines`` lines."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()[skip_lines:]
    records = [json.loads(line) for line in lines]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _local_sh(args, data_dir, timeout=600, **extra_env):
    env = {**os.environ, "SSLAX_DATA_DIR": data_dir, "PYTHON": sys.executable, **extra_env}
    return subprocess.run(
        [LOCAL_SH, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def _launch(command, num_processes, log_dir, data_dir, *, devices=2, timeout_s=30):
    """``command`` (argv) as process i of ``num_processes`` on this machine, like local.sh, but
    started here so that a test can kill one. Returns the processes and their log files."""
    port = free_port()
    env = {
        **os.environ,
        "SSLAX_DATA_DIR": data_dir,
        "JAX_PLATFORMS": "cpu",
        "JAX_NUM_CPU_DEVICES": str(devices),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = [log_dir / f"process_{i}.log" for i in range(num_processes)]
    processes = []
    for i, log in enumerate(logs):
        distributed = [
            f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={num_processes}",
            f"--process_id={i}",
            f"--distributed_timeout_s={timeout_s}",
        ]
        with open(log, "w") as out:
            processes.append(
                subprocess.Popen(
                    [*command, *distributed], stdout=out, stderr=subprocess.STDOUT, env=env
                )
            )
    return processes, logs


def _train(flags):
    return [sys.executable, "-m", "sslax.train", *flags]


def _wait_for(pattern, log, processes, timeout=300):
    deadline = time.time() + timeout
    while not re.search(pattern, log.read_text()):
        assert time.time() < deadline, f"no {pattern!r} in {log} after {timeout}s"
        assert all(p.poll() is None for p in processes), log.read_text()[-3000:]
        time.sleep(0.2)


def _stop(processes):
    for p in processes:
        if p.poll() is None:
            p.kill()
        p.wait()


def _kill_and_time_the_survivor(processes, victim, timeout):
    """SIGKILLs ``processes[victim]``; the survivor's (2 processes) exit code and seconds taken."""
    processes[victim].send_signal(signal.SIGKILL)
    killed_at = time.time()
    returncode = processes[1 - victim].wait(timeout=timeout)
    return returncode, time.time() - killed_at


def _assert_one_line_lost_peer_exit(output, returncode, lost, survivor, hint="relaunch"):
    assert returncode == parallel.LOST_PEER_EXIT_CODE, output[-3000:]
    for noise in ("Traceback", "Fatal Python error", "Check failure stack trace"):
        assert noise not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("sslax.train:")]
    assert len(errors) == 1, errors
    assert re.fullmatch(
        rf"sslax\.train: error: process {lost} of this 2-process run is gone \(.+\), so process "
        rf"{survivor} stops too; .*{hint}.*",
        errors[0],
    ), errors[0]


def test_two_processes_resume_exactly_and_match_one_process_runs(tmp_path, data_dir):
    two = tmp_path / "two"
    run = _local_sh(["2", "--", *FLAGS, f"--workdir={two}"], data_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "on 4 device(s) of 2 process(es)" in run.stdout
    assert {p.name for p in (two / "logs").iterdir()} == {"process_0.log", "process_1.log"}
    # Only process 0 reports; both processes did the work.
    assert f"step {STEPS}/{STEPS}" in (two / "logs" / "process_0.log").read_text()
    assert "step " not in (two / "logs" / "process_1.log").read_text()
    first = _losses(two)
    assert sorted(first) == list(range(1, STEPS + 1))
    uninterrupted = json.loads((two / "results.json").read_text())

    # Preempted after the step-10 checkpoint: the newest one is gone, the run is restarted.
    shutil.rmtree(two / "checkpoints" / str(STEPS))
    (two / "results.json").unlink()
    lines_before = len((two / "metrics.jsonl").read_text().splitlines())
    run = _local_sh(["2", "--", *FLAGS, f"--workdir={two}"], data_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming from the checkpoint at step 10" in run.stdout
    resumed = _losses(two, skip_lines=lines_before)
    assert sorted(resumed) == list(range(11, STEPS + 1))
    # Same topology, same batches, same keys: bit for bit.
    assert [resumed[s] for s in resumed] == [first[s] for s in resumed]
    after_resume = json.loads((two / "results.json").read_text())
    assert after_resume["params_checksum"] == uninterrupted["params_checksum"]

    # Another topology sees the same global batches: losses agree to float32 reduction order.
    # (One process on 8 devices against one device is test_parallel's.)
    reference = np.array([first[s] for s in range(1, STEPS + 1)])
    for devices in (1,):
        workdir = tmp_path / f"one_process_{devices}"
        run = run_cli([*FLAGS, f"--workdir={workdir}"], data_dir, JAX_NUM_CPU_DEVICES=str(devices))
        assert run.returncode == 0, run.stderr[-3000:]
        losses = _losses(workdir)
        other = np.array([losses[s] for s in range(1, STEPS + 1)])
        np.testing.assert_allclose(other, reference, rtol=1e-4, err_msg=f"{devices} device(s)")


@pytest.mark.parametrize(
    "victim",
    [
        # Measured 0.5 s: the survivor's next gloo all-reduce fails at once (connection reset).
        pytest.param(1, id="worker dies", marks=pytest.mark.slow),  # CI's time budget (40 s)
        # Measured 0.3 s: the coordination service itself is gone.
        pytest.param(0, id="coordinator dies", marks=pytest.mark.slow),
    ],
)
def test_a_dead_process_ends_the_others_within_bounded_time(tmp_path, data_dir, victim):
    timeout_s = 10
    flags = [
        *[f for f in FLAGS if not f.startswith("--config.total_steps")],
        "--config.total_steps=100000",
        "--config.checkpoint_every=100000",
        f"--workdir={tmp_path / 'run'}",
    ]
    processes, logs = _launch(_train(flags), 2, tmp_path, data_dir, timeout_s=timeout_s)
    try:
        _wait_for(r"step +3/", logs[0], processes)
        returncode, waited = _kill_and_time_the_survivor(processes, victim, 6 * timeout_s)
    finally:
        _stop(processes)
    survivor = 1 - victim
    output = logs[survivor].read_text()
    _assert_one_line_lost_peer_exit(output, returncode, victim, survivor)
    assert waited < 2 * timeout_s


# Two processes that only start JAX's runtime and wait: no collective to fail, so they hear of a
# death from the coordination service (its missed-heartbeat callback), the path of a survivor
# that is evaluating, compiling or saving when its peer dies.
IDLE = """
import sys, time
from sslax import parallel
flags = dict(arg.lstrip("-").split("=") for arg in sys.argv[1:])
parallel.set_resume_hint(lambda: "step 7 in /x/checkpoints; relaunch every process to resume")
parallel.initialize_distributed(
    coordinator_address=flags["coordinator_address"],
    num_processes=int(flags["num_processes"]),
    process_id=int(flags["process_id"]),
    timeout_s=int(flags["distributed_timeout_s"]),
    command="sslax.train",
)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("victim", [1, 0], ids=["worker dies", "coordinator dies"])
def test_a_peer_dies_while_no_collective_runs(tmp_path, victim):
    timeout_s = 10  # also the start-up timeout: both processes must be up within it
    command = [sys.executable, "-c", IDLE]
    processes, logs = _launch(command, 2, tmp_path, "unused", devices=1, timeout_s=timeout_s)
    try:
        for log in logs:
            _wait_for("ready", log, processes, timeout=60)
        returncode, waited = _kill_and_time_the_survivor(processes, victim, 6 * timeout_s)
    finally:
        _stop(processes)
    survivor = 1 - victim
    output = logs[survivor].read_text()
    _assert_one_line_lost_peer_exit(output, returncode, victim, survivor, hint="step 7 in /x")
    # The service declares a process dead after the heartbeat timeout; the worker hears of its
    # coordinator's death at once.
    assert waited < 2 * timeout_s


def test_only_errors_of_a_lost_peer_count_as_one(monkeypatch):
    gloo = RuntimeError(
        "UNKNOWN: Gloo all-reduce failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read "
        "error [127.0.0.1]:20386: Connection reset by peer"
    )
    assert parallel.lost_peer_reason(gloo) is None  # not a multi-process run
    monkeypatch.setattr(
        parallel, "_distributed_state", lambda: types.SimpleNamespace(client=object())
    )
    assert parallel.lost_peer_reason(gloo) == str(gloo)
    try:
        try:
            raise gloo
        except RuntimeError as e:
            raise ValueError("could not save the checkpoint") from e
    except ValueError as e:
        assert parallel.lost_peer_reason(e) == str(gloo)
    assert parallel.lost_peer_reason(ValueError("operands could not be broadcast")) is None
    with pytest.raises(TypeError, match="set_resume_hint needs a function"):
        parallel.set_resume_hint("step 7")


# Resuming: one uninterrupted 2 x 2 run, checkpoints every 5 of 20 steps.
RESUME_FLAGS = [
    *[f for f in FLAGS if not f.startswith("--config.checkpoint_every")],
    "--config.checkpoint_every=5",
]


def _results(workdir):
    return json.loads((workdir / "results.json").read_text())


def _keep_checkpoints_up_to(workdir, step):
    """As if the run had stopped after its step-``step`` checkpoint."""
    for folder in (workdir / "checkpoints").iterdir():
        if not folder.name.isdigit() or int(folder.name) > step:
            shutil.rmtree(folder)
    (workdir / "results.json").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run = _local_sh(["2", "--", *RESUME_FLAGS, f"--workdir={workdir}"], data_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir


@pytest.mark.slow  # three runs, one of four processes: minutes
def test_resuming_on_other_topologies_ends_like_the_uninterrupted_run(
    uninterrupted, tmp_path, data_dir
):
    # Always 4 devices: steps 1-10 on 2 processes x 2 devices, 11-20 on 4 x 1, then 16-20 again
    # on 1 x 4.
    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted, workdir)
    _keep_checkpoints_up_to(workdir, 10)
    run = _local_sh(
        ["4", "--", *RESUME_FLAGS, f"--workdir={workdir}"], data_dir, DEVICES_PER_PROCESS="1"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming from the checkpoint at step 10" in run.stdout
    assert "on 4 device(s) of 4 process(es)" in run.stdout
    # Bit for bit: gloo sums a psum over 4 ranks in the same order whichever processes hold them.
    assert _results(workdir)["params_checksum"] == _results(uninterrupted)["params_checksum"]

    _keep_checkpoints_up_to(workdir, 15)
    lines_before = len((workdir / "metrics.jsonl").read_text().splitlines())
    run = run_cli([*RESUME_FLAGS, f"--workdir={workdir}"], data_dir, JAX_NUM_CPU_DEVICES="4")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming from the checkpoint at step 15" in run.stdout
    assert "on 4 device(s) of 1 process(es)" in run.stdout
    # Not bit for bit: within one process XLA:CPU sums a psum's 4 device values left to right,
    # while gloo's all-reduce uses an order that varies along the array (measured: 13 of 42
    # order-sensitive elements of a 64-element psum differ in the last bit). The same batches
    # and keys give losses equal to float32 rounding, as test_two_processes_... checks.
    resumed = _losses(workdir, skip_lines=lines_before)
    assert sorted(resumed) == list(range(16, STEPS + 1))
    reference = _losses(uninterrupted)
    np.testing.assert_allclose(
        [resumed[s] for s in resumed], [reference[s] for s in resumed], rtol=1e-4
    )


@pytest.mark.slow  # three runs of two processes: minutes
def test_sigkill_of_one_process_then_relaunch_ends_like_the_uninterrupted_run(
    uninterrupted, tmp_path, data_dir
):
    kill_at = random.Random().randint(7, STEPS - 3)  # after the first checkpoint (step 5)
    workdir = tmp_path / "run"
    processes, logs = _launch(
        _train([*RESUME_FLAGS, f"--workdir={workdir}"]), 2, tmp_path / "killed", data_dir
    )
    try:
        _wait_for(rf"step +{kill_at}/", logs[0], processes)
        # Saves are asynchronous: kill once one is committed (a folder named by its step).
        deadline = time.time() + 120
        while not any(p.name.isdigit() for p in (workdir / "checkpoints").iterdir()):
            assert time.time() < deadline and processes[0].poll() is None
            time.sleep(0.1)
        returncode, _ = _kill_and_time_the_survivor(processes, 1, 120)
    finally:
        _stop(processes)
    _assert_one_line_lost_peer_exit(logs[0].read_text(), returncode, 1, 0)
    assert not (workdir / "results.json").exists()

    run = _local_sh(["2", "--", *RESUME_FLAGS, f"--workdir={workdir}"], data_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    resumed_from = int(re.search(r"resuming from the checkpoint at step (\d+)", run.stdout)[1])
    assert 5 <= resumed_from <= STEPS, (kill_at, resumed_from)
    assert _results(workdir)["params_checksum"] == _results(uninterrupted)["params_checksum"]


def test_local_sh_stops_every_process_when_one_fails(tmp_path):
    # A stand-in for python: process 1 fails at once, the others would run for minutes.
    fake = tmp_path / "fake_python"
    pids = tmp_path / "pids"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'for a in "$@"; do [[ $a == --process_id=1 ]] && { sleep 1; echo boom; exit 3; }; done\n'
        f"echo $$ >> {pids}\n"
        "exec sleep 300\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "PORT": "1"}
    started = time.time()
    run = subprocess.run(
        [LOCAL_SH, "3", "--", f"--workdir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert run.returncode == 3
    assert time.time() - started < 30
    assert "process 1 exited with status 3; stopped the others" in run.stderr
    assert "boom" in run.stderr
    others = [int(pid) for pid in pids.read_text().split()]
    assert len(others) == 2
    for pid in others:
        with pytest.raises(ProcessLookupError):  # stopped and reaped by local.sh
            os.kill(pid, 0)


@pytest.mark.parametrize(
    "args", [[], ["two", "--"], ["2", "--workdir", "x"], ["2", "-x", "--"]], ids=str
)
def test_local_sh_usage_errors(args):
    run = subprocess.run([LOCAL_SH, *args], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2
    assert "launch/local.sh NUM_PROCESSES" in run.stderr or "--workdir=DIR" in run.stderr
