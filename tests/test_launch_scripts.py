"""The SimCLR Table B.1 sweep file and the SLURM / TPU pod / local launchers, without SLURM or
gcloud.

The launchers run here against stand-ins: a fake ``srun`` that runs the command once per task
with SLURM's per-task variables, a fake ``gcloud`` that runs the ``--command`` it is given
through ``sh`` as a worker's login shell would, and a fake ``python`` for ``-m sslax.train``
that prints its arguments. That checks the quoting end to end, not the clusters themselves.
"""

import datetime
import importlib.util
import json
import math
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from sslax import configs, optim, train

REPO = pathlib.Path(__file__).resolve().parents[1]
SWEEP = REPO / "experiments" / "simclr_table_b1.py"
SLURM = REPO / "launch" / "slurm.sbatch"
TPU_POD = REPO / "launch" / "tpu_pod.sh"
LOCAL_SH = REPO / "launch" / "local.sh"
REFERENCES = [REPO.parent / "shared" / "REFERENCES.md", REPO / "shared" / "REFERENCES.md"]


def load_module(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sweep = load_module(SWEEP)


# The launchers' settings that the caller's environment must not leak into a test.
LAUNCH_ENV = ("SSLAX_BUCKET", "SHARED_WORKDIR", "SSLAX_LOG_DIR", "LOG_DIR", "SWEEP", "SWEEP_ROOT")


def run(args, *, env=None, cwd=REPO, check=False):
    """The command with os.environ, less LAUNCH_ENV, updated by env (None: unset)."""
    environment = {**os.environ, **dict.fromkeys(LAUNCH_ENV), **(env or {})}
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        env={k: v for k, v in environment.items() if v is not None},
        timeout=120,
        check=check,
    )


def sweep_cli(*args, **kwargs):
    return run([sys.executable, SWEEP, *args], **kwargs)


def references_table_b1() -> dict:
    """{(batch, epochs): (linear, sqrt)} from REFERENCES.md's Table B.1."""
    path = next((p for p in REFERENCES if p.exists()), None)
    if path is None:
        pytest.skip("REFERENCES.md (shared/) is not beside this checkout")
    text = path.read_text()
    section = text[text.index("Table B.1") :]
    lines = iter(section.splitlines())
    header = next(line for line in lines if line.startswith("|"))
    epochs = [int(e) for e in re.findall(r"\|\s*(\d+)\s*(?=\|)", header)]
    table = {}
    for line in lines:
        if not line.startswith("|"):
            if table:
                break
            continue
        if set(line) <= set("|-: "):
            continue
        batch, *cells = [c.strip() for c in line.strip("|").split("|")]
        for e, cell in zip(epochs, cells, strict=True):
            linear, sqrt = (float(x) for x in cell.split("/"))
            table[int(batch), e] = (linear, sqrt)
    assert len(table) == 24, table
    return table


# ---------------------------------------------------------------------------------------------
# the sweep file


def test_sweep_has_48_distinct_cells_in_index_order():
    assert len(sweep.CELLS) == 48
    assert len(set(sweep.CELLS)) == 48
    assert len({c.name for c in sweep.CELLS}) == 48
    assert {(c.batch_size, c.epochs, c.lr_scaling) for c in sweep.CELLS} == {
        (b, e, s)
        for b in (256, 512, 1024, 2048, 4096, 8192)
        for e in (100, 200, 400, 800)
        for s in ("linear", "sqrt")
    }
    out = sweep_cli("list", "--root=/runs/b1", check=True).stdout.splitlines()
    assert len(out) == 48
    assert [line.split("\t")[0] for line in out] == [c.name for c in sweep.CELLS]
    assert out[0] == (
        "b0256-e100-linear\t--config=experiments/configs/simclr_imagenet.py:"
        "batch_size=256,epochs=100,lr_scaling=linear --workdir=/runs/b1/b0256-e100-linear"
    )
    assert sweep.IMAGENET_TRAIN_IMAGES == configs.IMAGENET_TRAIN_IMAGES


def test_a_gs_root_is_kept_as_written():
    out = sweep_cli("flags", "0", "--root=gs://bucket/b1/", check=True).stdout
    assert shlex.split(out)[1] == "--workdir=gs://bucket/b1/b0256-e100-linear"


# index: batch, epochs, scaling; then steps per epoch 1,281,167 // batch worked out by hand,
# total and warm-up (10 epochs) steps, and the peak learning rate.
HAND = [
    (0, 256, 100, "linear", 500_400, 50_040, 0.3),  # 5004 steps/epoch; 0.3 x 256/256
    (1, 256, 100, "sqrt", 500_400, 50_040, 1.2),  # 0.075 x sqrt(256) = 0.075 x 16
    (21, 1024, 400, "sqrt", 500_400, 12_510, 2.4),  # 1251 steps/epoch; 0.075 x 32
    (36, 4096, 400, "linear", 124_800, 3_120, 4.8),  # 312 steps/epoch; 0.3 x 16
    (47, 8192, 800, "sqrt", 124_800, 1_560, 0.075 * math.sqrt(8192)),  # 156 steps/epoch
]


@pytest.mark.parametrize("index, batch, epochs, scaling, total, warmup, peak", HAND)
def test_flags_give_the_cells_config(tmp_path, index, batch, epochs, scaling, total, warmup, peak):
    out = sweep_cli("flags", index, f"--root={tmp_path}/my runs", check=True).stdout
    config_flag, workdir_flag = shlex.split(out)
    name = f"b{batch:04d}-e{epochs}-{scaling}"
    assert workdir_flag == f"--workdir={tmp_path}/my runs/{name}"
    path, _, arg = config_flag.removeprefix("--config=").partition(":")
    config = load_module(REPO / path).get_config(arg)
    assert config.batch_size == batch
    assert config.total_steps == total
    assert config.warmup_steps == warmup
    assert config.checkpoint_every == warmup  # both 10 epochs
    assert config.lr_scaling == scaling
    assert config.learning_rate == {"linear": 0.3, "sqrt": 0.075}[scaling]
    assert optim.scaled_learning_rate(
        config.learning_rate, batch_size=batch, rule=scaling
    ) == pytest.approx(peak)
    train.validate_config(config, num_devices=8)


@pytest.mark.parametrize("index", ["48", "-1", "seven"])
def test_flags_refuse_a_bad_index(index):
    result = sweep_cli("flags", index, "--root=r")
    assert result.returncode == 2
    assert "cell index must be an integer in 0..47" in result.stderr
    assert result.stdout == ""


def test_paper_numbers_are_references_md():
    table = references_table_b1()
    assert {(b, e): sweep.PAPER[b][e] for b in sweep.PAPER for e in sweep.PAPER[b]} == table


def write_results(root: pathlib.Path, name: str, **results):
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps({"method": "simclr", **results}))


def test_collect_puts_ours_beside_the_paper(tmp_path):
    write_results(
        tmp_path,
        "b0256-e100-linear",
        steps=500_400,
        batch_size=256,
        knn_top1=0.452,
        linear_top1=0.5712,
    )
    write_results(tmp_path, "b0256-e100-sqrt", steps=500_400, batch_size=256, knn_top1=0.452)
    write_results(tmp_path, "b4096-e800-sqrt", steps=12, batch_size=16, linear_top1=0.1)
    result = sweep_cli("collect", f"--root={tmp_path}", check=True)
    out = result.stdout
    assert "ours 57.1 / k45.2  (paper 57.5 / 62.8)" in out
    assert "ours - / 10.0*  (paper 68.9 / 69.1)" in out
    assert "ours - / -  (paper 69.0 / 69.1)" in out
    assert "3 of 48 cells have a result (2 linear evaluation, 1 kNN only)" in out
    assert "k: kNN top-1" in out and "-: no results.json" in out and "*: the run's" in out

    # The paper's layout: a header of epochs, then one row per batch size, and in it the
    # paper's numbers, which are REFERENCES.md's.
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("batch"))
    assert re.findall(r"(\d+) epochs", lines[header]) == ["100", "200", "400", "800"]
    printed = {}
    for line in lines[header + 1 : header + 7]:
        batch = int(line.split()[0])
        pairs = re.findall(r"\(paper (\d+\.\d) / (\d+\.\d)\)", line)
        for epochs, (linear, sqrt) in zip((100, 200, 400, 800), pairs, strict=True):
            printed[batch, epochs] = (float(linear), float(sqrt))
    assert sorted(b for b, _ in printed)[::4] == [256, 512, 1024, 2048, 4096, 8192]
    assert printed == references_table_b1()

    document = json.loads((tmp_path / "table_b1.json").read_text())
    assert len(document["cells"]) == 48
    first = document["cells"][0]
    assert (first["name"], first["top1"], first["metric"], first["paper_top1"]) == (
        "b0256-e100-linear",
        57.12,
        "linear",
        57.5,
    )
    assert document["cells"][2]["results"] == "missing"

    markdown = sweep_cli(
        "collect", f"--root={tmp_path}", "--markdown", f"--json={tmp_path}/elsewhere.json"
    )
    assert markdown.returncode == 0 and (tmp_path / "elsewhere.json").exists()
    assert "| batch | 100 epochs | 200 epochs | 400 epochs | 800 epochs |" in markdown.stdout
    assert "| 256 | ours 57.1 / k45.2  (paper 57.5 / 62.8) |" in markdown.stdout


def test_collect_refuses_a_missing_root(tmp_path):
    result = sweep_cli("collect", f"--root={tmp_path}/nowhere")
    assert result.returncode == 2 and "is not a directory" in result.stderr


# ---------------------------------------------------------------------------------------------
# the launchers


@pytest.mark.parametrize("script", [SLURM, TPU_POD, LOCAL_SH], ids=lambda p: p.name)
def test_shell_scripts_parse(script):
    run(["bash", "-n", script], check=True)
    if shutil.which("shellcheck"):
        result = run(["shellcheck", script])
        assert result.returncode == 0, result.stdout


FAKE_SRUN = """#!/bin/bash
# srun: report and drop the options, then run the command once per task
while [[ $1 == -* ]]; do echo "srun $1"; shift; done
for ((t = 0; t < SLURM_NTASKS; t++)); do
  SLURM_PROCID=$t SLURM_LOCALID=$t CUDA_VISIBLE_DEVICES=${FAKE_VISIBLE:-$t} "$@"
done
"""
FAKE_GCLOUD = """#!/bin/bash
# gcloud: report the arguments but --command, then run --command as a login shell would; like
# ssh, it reads up its standard input
cat >/dev/null
for a; do
  case $a in
    --command=*) command=${a#--command=} ;;
    *) echo "gcloud-arg $a" ;;
  esac
done
exec sh -c "$command"
"""
# python -m sslax.train: one line per argument, then JAX_LOCAL_DEVICE_IDS; anything else runs
FAKE_PYTHON = """#!/bin/bash
if [[ $1 == -m && $2 == sslax.train ]]; then
  printf 'arg %s\\n' "${@:3}"
  echo "ids ${JAX_LOCAL_DEVICE_IDS:-unset}"
  exit "${FAKE_TRAIN_RC:-0}"
fi
exec REAL_PYTHON "$@"
"""


def make_bin(path: pathlib.Path, **scripts) -> pathlib.Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in scripts.items():
        (path / name).write_text(text.replace("REAL_PYTHON", sys.executable))
        (path / name).chmod(0o755)
    return path


@pytest.fixture
def slurm_env(tmp_path):
    bin_dir = make_bin(tmp_path / "bin", srun=FAKE_SRUN, python3=FAKE_PYTHON)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_NTASKS": "2",
        "SLURM_GPUS_PER_TASK": "1",
        "SLURM_CPUS_PER_TASK": "8",
        "SSLAX_LOG_DIR": str(tmp_path / "logs"),
    }


def args_of(out: str) -> list[list[str]]:
    """Each task's sslax.train arguments."""
    runs, current = [], None
    for line in out.splitlines():
        if line.startswith("arg "):
            if current is None:
                current = []
                runs.append(current)
            current.append(line[4:])
        else:
            current = None
    return runs


def test_slurm_runs_one_process_per_task_with_its_own_gpu(slurm_env, tmp_path):
    result = run(["bash", SLURM, "--config.x=1", "--workdir=/shared/a b"], env=slurm_env)
    assert result.returncode == 0, result.stderr
    assert f"srun --output={tmp_path}/logs/%x-%j-%t.log" in result.stdout
    assert (
        args_of(result.stdout)
        == [["--distributed=on", "--config.x=1", "--workdir=/shared/a b"]] * 2
    )
    # SLURM bound one GPU to each task (CUDA_VISIBLE_DEVICES=0, =1): inside, it is device 0.
    assert result.stdout.count("ids 0\n") == 2
    assert (tmp_path / "logs").is_dir()


def test_slurm_without_gpu_binding_gives_each_task_its_share(slurm_env):
    env = {**slurm_env, "SLURM_GPUS_PER_TASK": "h100:2", "FAKE_VISIBLE": "0,1,2,3"}
    result = run(["bash", SLURM, "--config.x=1"], env=env)
    assert result.returncode == 0, result.stderr
    assert "ids 0,1\n" in result.stdout and "ids 2,3\n" in result.stdout


def test_slurm_array_task_runs_its_sweep_cell(slurm_env, tmp_path):
    env = {
        **slurm_env,
        "SWEEP": "experiments/simclr_table_b1.py",
        "SWEEP_ROOT": f"{tmp_path}/sweep root",
        "SLURM_ARRAY_TASK_ID": "47",
    }
    result = run(["bash", SLURM, "--config.log_every=10"], env=env)
    assert result.returncode == 0, result.stderr
    assert args_of(result.stdout)[0] == [
        "--distributed=on",
        (
            "--config=experiments/configs/simclr_imagenet.py:"
            "batch_size=8192,epochs=800,lr_scaling=sqrt"
        ),
        f"--workdir={tmp_path}/sweep root/b8192-e800-sqrt",
        "--config.log_every=10",
    ]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SWEEP": "experiments/simclr_table_b1.py"}, "SWEEP needs SWEEP_ROOT"),
        ({"SWEEP": "experiments/simclr_table_b1.py", "SWEEP_ROOT": "r"}, "submit with --array"),
        (
            {
                "SWEEP": "experiments/simclr_table_b1.py",
                "SWEEP_ROOT": "r",
                "SLURM_ARRAY_TASK_ID": "48",
            },
            "no flags for cell 48",
        ),
    ],
)
def test_slurm_refuses_a_bad_sweep(slurm_env, env, message):
    result = run(["bash", SLURM], env={**slurm_env, **env})
    assert result.returncode == 2 and message in result.stderr
    assert "arg " not in result.stdout


def test_tpu_pod_dry_run_prints_the_gcloud_command():
    result = run(
        [TPU_POD, "name", "zone", "--", "--config.x=1", "--workdir=gs://b/run"],
        env={"DRY_RUN": "1", "SETUP": "0"},
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("gcloud compute tpus tpu-vm ssh name --zone=zone --worker=all ")
    assert "--distributed=on --config.x=1 --workdir=gs://b/run" in line

    setup = run(
        [TPU_POD, "name", "zone", "--project=p", "--", "--config.x=1", "--workdir=gs://b/r"],
        env={"DRY_RUN": "1", "SSLAX_REPO": "https://example.com/sslax.git", "SSLAX_REF": "v1"},
    )
    assert setup.returncode == 0, setup.stderr
    first, second = setup.stdout.splitlines()
    assert "--project=p --worker=all" in first and "--project=p --worker=all" in second
    assert "git clone" in first and "https://example.com/sslax.git" in first
    assert 'pip" install' in first and "jax" in first
    assert "--config.x=1" in second


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], {}, "TPU_NAME and ZONE are required"),
        (["name"], {}, "TPU_NAME and ZONE are required"),
        (["name", "zone"], {}, "give the train flags after --"),
        (["name", "zone", "--config.x=1"], {}, "unknown argument '--config.x=1'"),
        (["name", "--zone=z", "--", "--config.x=1"], {}, "bad ZONE"),
        (["name", "zone", "--sweep=experiments/simclr_table_b1.py"], {}, "go together"),
        (["name", "zone", "--", "--workdir"], {}, "--workdir needs a value"),
        (
            [
                "name",
                "zone",
                "--sweep=experiments/simclr_table_b1.py",
                "--root=gs://b/r",
                "--",
                "--workdir=gs://b/w",
            ],
            {},
            "--workdir with --sweep",
        ),
        (["name", "zone", "--sweep=nowhere.py", "--root=r"], {}, "no sweep file"),
        (
            ["name", "zone", "--sweep=experiments/simclr_table_b1.py", "--root=r"],
            {"START": "x"},
            "START must be",
        ),
    ],
)
def test_tpu_pod_refuses_bad_arguments(args, env, message):
    result = run([TPU_POD, *args], env={"DRY_RUN": "1", "SETUP": "0", **env})
    assert result.returncode == 2
    assert message in result.stderr and "usage:" in result.stderr
    assert result.stdout == ""


def test_tpu_pod_without_a_repository_to_clone_says_so(tmp_path):
    # This checkout may have no 'origin' remote; give the script a copy that surely has none.
    copy = tmp_path / "repo"
    (copy / "launch").mkdir(parents=True)
    shutil.copy(TPU_POD, copy / "launch")
    run(["git", "init", "-q", copy], check=True)
    result = run(
        [copy / "launch" / "tpu_pod.sh", "n", "z", "--", "--x", "--workdir=gs://b/r"],
        env={"DRY_RUN": "1"},
    )
    assert result.returncode == 2 and "set SSLAX_REPO" in result.stderr


@pytest.fixture
def worker(tmp_path):
    """A worker's home with sslax checked out and a venv whose python is the fake one."""
    home = tmp_path / "home"
    (home / "sslax").mkdir(parents=True)
    venv_bin = make_bin(home / "sslax-venv" / "bin", python=FAKE_PYTHON)
    (venv_bin / "activate").write_text(f'PATH="{venv_bin}:$PATH"\n')
    bin_dir = make_bin(tmp_path / "bin", gcloud=FAKE_GCLOUD)
    return {"HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}", "SETUP": "0"}


def test_tpu_pod_runs_the_flags_on_the_worker_exactly(worker):
    flags = [
        "--config=experiments/configs/simclr_imagenet.py:batch_size=256",
        "--workdir=/a b/c'd$x",  # a shared mount, said so by SHARED_WORKDIR=1
    ]
    result = run([TPU_POD, "name", "zone", "--", *flags], env={**worker, "SHARED_WORKDIR": "1"})
    assert result.returncode == 0, result.stderr
    assert "gcloud-arg --worker=all" in result.stdout
    host = run(["hostname"], check=True).stdout.strip()
    assert f"[{host}] arg --workdir=/a b/c'd$x\n" in result.stdout
    log = pathlib.Path(worker["HOME"]) / "sslax-logs" / f"worker-{host}.log"
    logged = log.read_text()
    assert args_of(logged) == [["--distributed=on", *flags]]
    assert logged.startswith("== ")  # a header line per run


def test_tpu_pod_reports_a_failed_run(worker):
    result = run(
        [TPU_POD, "name", "zone", "--", "--x", "--workdir=gs://b/r"],
        env={**worker, "FAKE_TRAIN_RC": "3"},
    )
    assert result.returncode != 0


def test_tpu_pod_sweep_runs_the_cells_one_after_another(worker):
    result = run(
        [
            TPU_POD,
            "n",
            "z",
            "--sweep=experiments/simclr_table_b1.py",
            "--root=gs://bucket/r",
            "--",
            "--y=1",
        ],
        env={**worker, "START": "45"},
    )
    assert result.returncode == 0, result.stderr
    runs = args_of(re.sub(r"(?m)^\[[^]]+\] ", "", result.stdout))  # the [HOSTNAME] prefixes
    assert [[a for a in args if a.startswith("--workdir")] for args in runs] == [
        [f"--workdir=gs://bucket/r/{c.name}"] for c in sweep.CELLS[45:]
    ]
    assert all(args[-1] == "--y=1" for args in runs)
    assert result.stderr.count("== cell") == 3


def test_tpu_pod_setup_script_is_valid_bash(tmp_path):
    # gcloud's --command runs with a `bash` that only checks the syntax of the script given.
    bin_dir = make_bin(
        tmp_path / "bin", gcloud=FAKE_GCLOUD, bash='#!/bin/sh\nexec /bin/bash -n "$@"\n'
    )
    result = run(
        ["/bin/bash", TPU_POD, "name", "zone", "--", "--x", "--workdir=gs://b/r"],  # real bash
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "SSLAX_REPO": "r", "SSLAX_REF": "v1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("gcloud-arg --worker=all") == 2


# ---------------------------------------------------------------------------------------------
# gs:// workdirs


def test_tpu_pod_makes_a_gs_workdir_from_sslax_bucket(worker):
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    result = run(
        [TPU_POD, "n", "z", "--", "--config", "experiments/configs/simclr_imagenet.py:x=1"],
        env={**worker, "SSLAX_BUCKET": "gs://my-bucket/team/"},
    )
    assert result.returncode == 0, result.stderr
    ((*flags, workdir),) = args_of(re.sub(r"(?m)^\[[^]]+\] ", "", result.stdout))
    assert flags == ["--distributed=on", "--config", "experiments/configs/simclr_imagenet.py:x=1"]
    match = re.fullmatch(
        r"--workdir=gs://my-bucket/team/runs/simclr_imagenet-(\d{8}-\d{6})", workdir
    )
    assert match, workdir
    made = datetime.datetime.strptime(match[1], "%Y%m%d-%H%M%S").replace(tzinfo=datetime.UTC)
    assert before <= made <= datetime.datetime.now(datetime.UTC)  # UTC
    # Said before the run, with how to resume it.
    assert f"to resume, run again with {workdir}" in result.stderr


def test_tpu_pod_default_workdir_names_the_default_config():
    result = run(
        [TPU_POD, "n", "z", "--", "--config.x=1"],
        env={"DRY_RUN": "1", "SETUP": "0", "SSLAX_BUCKET": "b"},
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r" --workdir=gs://b/runs/simclr-\d{8}-\d{6}\)", result.stdout)


def test_tpu_pod_keeps_a_given_gs_workdir():
    result = run(
        [TPU_POD, "n", "z", "--", "--workdir", "gs://b/mine", "--config.x=1"],
        env={"DRY_RUN": "1", "SETUP": "0", "SSLAX_BUCKET": "other"},
    )
    assert result.returncode == 0, result.stderr
    assert "--workdir gs://b/mine --config.x=1)" in result.stdout
    assert result.stdout.count("workdir") == 1 and result.stderr == ""


@pytest.mark.parametrize(
    "args, env, message",
    [
        (
            ["--", "--config.x=1"],
            {},
            "no --workdir: give --workdir=gs://BUCKET/PATH, or set SSLAX_BUCKET=BUCKET",
        ),
        (["--", "--config.x=1"], {"SSLAX_BUCKET": "gs://"}, "no --workdir"),
        (["--", "--workdir=/mnt/run"], {}, "--workdir '/mnt/run' is not on gs://"),
        (["--", "--workdir", "runs/x"], {}, "--workdir 'runs/x' is not on gs://"),
        (["--", "--workdir=gs:///x"], {}, "--workdir 'gs:///x' is not on gs://"),
        (
            ["--sweep=experiments/simclr_table_b1.py", "--root=/shared/b1"],
            {},
            "--root '/shared/b1' is not on gs://",
        ),
        (
            ["--", "--workdir=runs/x"],
            {"SHARED_WORKDIR": "1"},
            "--workdir 'runs/x' must be an absolute path on the mount every worker shares",
        ),
    ],
)
def test_tpu_pod_refuses_a_workdir_the_workers_do_not_share(args, env, message):
    result = run([TPU_POD, "n", "z", *args], env={"DRY_RUN": "1", "SETUP": "0", **env})
    assert result.returncode == 2
    assert result.stderr.startswith(f"tpu_pod.sh: error: {message}")
    assert len(result.stderr.splitlines()) == 1
    if "not on gs://" in message:
        assert "each worker would write its own local disk" in result.stderr
        assert "SHARED_WORKDIR=1" in result.stderr
    assert result.stdout == ""  # no gcloud command


def test_tpu_pod_takes_a_shared_mount_when_told(worker):
    result = run(
        [TPU_POD, "n", "z", "--sweep=experiments/simclr_table_b1.py", "--root=/shared/b1"],
        env={**worker, "START": "47", "SHARED_WORKDIR": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert f"arg --workdir=/shared/b1/{sweep.CELLS[47].name}\n" in result.stdout


def test_slurm_passes_a_gs_workdir_through_and_logs_locally(slurm_env, tmp_path):
    submit = tmp_path / "submit"
    submit.mkdir()
    env = {**slurm_env, "SSLAX_DIR": str(submit), "SSLAX_LOG_DIR": None}
    result = run(["bash", SLURM, "--workdir=gs://b/runs/x"], env=env, cwd=submit)
    assert result.returncode == 0, result.stderr
    assert args_of(result.stdout) == [["--distributed=on", "--workdir=gs://b/runs/x"]] * 2
    assert f"srun --output={submit}/logs/slurm/%x-%j-%t.log" in result.stdout
    assert [p.name for p in submit.iterdir()] == ["logs"]  # no local "gs:" folder

    sweep_run = run(
        ["bash", SLURM],
        env={
            **slurm_env,
            "SWEEP": str(SWEEP),
            "SWEEP_ROOT": "gs://b/b1",
            "SLURM_ARRAY_TASK_ID": "0",
        },
    )
    assert sweep_run.returncode == 0, sweep_run.stderr
    assert args_of(sweep_run.stdout)[0][-1] == f"--workdir=gs://b/b1/{sweep.CELLS[0].name}"


def test_slurm_refuses_a_gs_log_dir(slurm_env):
    result = run(
        ["bash", SLURM, "--workdir=gs://b/x"], env={**slurm_env, "SSLAX_LOG_DIR": "gs://b/logs"}
    )
    assert result.returncode == 2
    assert "SSLAX_LOG_DIR must be a directory on the cluster" in result.stderr
    assert "arg " not in result.stdout


@pytest.fixture
def local_python(tmp_path):
    """PYTHON for local.sh: the fake one, which prints its sslax.train arguments."""
    return str(make_bin(tmp_path / "bin", python=FAKE_PYTHON) / "python")


def test_local_sh_with_a_gs_workdir_logs_here(tmp_path, local_python):
    cwd = tmp_path / "here"
    cwd.mkdir()
    result = run(
        [LOCAL_SH, "2", "--", "--workdir=gs://bucket/runs/two/", "--config.x=1"],
        env={"PYTHON": local_python, "PORT": "1"},
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    (log_dir,) = (cwd / "runs" / "logs").iterdir()
    assert re.fullmatch(r"two-\d{8}-\d{6}", log_dir.name)
    assert f"logs in runs/logs/{log_dir.name}" in result.stderr
    assert sorted(p.name for p in log_dir.iterdir()) == ["process_0.log", "process_1.log"]
    for i in range(2):
        ((workdir, *rest),) = args_of((log_dir / f"process_{i}.log").read_text())
        assert workdir == "--workdir=gs://bucket/runs/two/" and f"--process_id={i}" in rest
    assert [p.name for p in cwd.iterdir()] == ["runs"]  # no "gs:" folder


def test_local_sh_log_dir_is_local(tmp_path, local_python):
    env = {"PYTHON": local_python, "PORT": "1"}
    given = run(
        [LOCAL_SH, "1", "--", "--workdir=gs://b/w"],
        env={**env, "LOG_DIR": str(tmp_path / "logs")},
        cwd=tmp_path,
    )
    assert given.returncode == 0, given.stderr
    assert (tmp_path / "logs" / "process_0.log").exists()
    refused = run([LOCAL_SH, "1", "--"], env={**env, "LOG_DIR": "gs://b/logs"}, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr == "local.sh: LOG_DIR must be a local directory, not gs://b/logs\n"
