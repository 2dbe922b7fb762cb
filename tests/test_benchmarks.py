"""The benchmark harness: its cases build, each kind of child measures, the parent writes json.

Speed itself is never asserted here (benchmarks record numbers; tests check the recording).
The PyTorch twin is checked where torch is installed (the optional '.[bench]' extra).
"""

import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "experiments" / "benchmarks"
sys.path.insert(0, str(BENCH))
import run  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("suite", ["cpu", "gpu"])
def test_every_case_of_both_suites_has_a_valid_config(suite):
    from sslax import train

    cases = run._suite(suite)
    assert len({c.name for c in cases}) == len(cases)
    kinds = {c.kind for c in cases}
    assert kinds == {"step", "loss", "augment", "pipeline"}
    for case in cases:
        config = case.config_dict()
        if case.kind == "step":
            train.validate_config(config, num_devices=1)
    gpu_cases = (BENCH / "gpu.sh").read_text().split("--cases=")[1]
    for name in gpu_cases.split("CASES:-")[1].split("}")[0].split(","):
        assert name in {c.name for c in run._suite("gpu")}, name


@pytest.mark.slow  # ~20 s of compiling a whole train step; CI's budget keeps it out
def test_step_child_reports_speed_flops_compile_time_and_memory():
    case = run.Case(
        "tiny", "step", overrides=(("width", 0.125), ("batch_size", 4), ("image_size", 16))
    )
    r = run._child_step(case, repeats=1, warmup=1)
    assert r["batch_size"] == 4 and r["model"] == "resnet18"
    assert r["images_per_s"] == pytest.approx(4 / (r["step_ms"] / 1e3))
    assert r["flops_per_step"] > 1e6 and r["compile_s"] > 0
    assert 0 < r["temp_bytes"] <= r["peak_bytes"]


def test_loss_child_chunked_needs_less_memory_than_dense():
    dense = run._child_loss(
        run.Case("d", "loss", options=(("batch", 512), ("dim", 16), ("chunk", 0))), 1, 1
    )
    chunked = run._child_loss(
        run.Case("c", "loss", options=(("batch", 512), ("dim", 16), ("chunk", 128))), 1, 1
    )
    assert chunked["temp_bytes"] < dense["temp_bytes"]
    assert dense["flops_per_step"] > 0
    assert chunked["flops_per_step"] is None  # a scan: XLA would count one tile's FLOPs


def test_augment_and_pipeline_children():
    aug = run._child_augment(run.Case("a", "augment", options=(("batch", 8), ("size", 16))), 1, 1)
    assert aug["images_per_s"] > 0 and aug["image_size"] == 16
    pipe = run._child_pipeline(run.Case("p", "pipeline"), 1, 1)
    assert pipe["batch_size"] == 256 and pipe["images_per_s"] > 0


def test_harness_end_to_end_writes_bench_json(tmp_path):
    cases = "loss_info_nce_dense_b256,loss_info_nce_chunked256_b256"
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--suite=cpu",
            f"--out={tmp_path}",
            f"--cases={cases}",
            "--repeats=1",
            "--warmup=1",
            "--notorch",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["machine"]["versions"]["jax"] == jax.__version__
    assert report["machine"]["date"] and report["machine"]["cpu_count"] >= 1
    assert report["peak_flops"]["float32"] > 0 and report["peak_flops"]["bfloat16"] > 0
    names = [c["name"] for c in report["cases"]]
    assert names == cases.split(",")
    dense, chunked = report["cases"]
    assert 0 < dense["mfu"] < 1.5 and "mfu" not in chunked
    for c in report["cases"]:
        assert c["jax_images_per_s"] > 0
        assert {"flops_per_step", "compile_s", "temp_bytes"} <= set(c)
    assert "loss_info_nce_dense_b256" in out.stdout and "bench.json" in out.stdout


def test_unknown_case_is_refused_with_the_list(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), f"--out={tmp_path}", "--cases=nope"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode != 0
    assert "unknown case(s) nope" in out.stderr and "simclr_resnet18_cifar32_f32" in out.stderr
    assert not (tmp_path / "bench.json").exists()


# ------------------------------------------------------------------ the PyTorch twin

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is the optional '.[bench]' extra")


@needs_torch
@pytest.mark.parametrize(
    "name", ["simclr_resnet18_cifar32_f32", "simclr_vit_tiny4_32px_f32", "simclr_resnet50_224px"]
)
def test_torch_twin_has_the_same_parameter_count(name):
    import torch_ref

    from sslax import methods

    config = {c.name: c for c in run._suite("cpu")}[name].config_dict()
    method = methods.get("simclr").make(config)
    image = np.zeros((1, config.image_size, config.image_size, 3), np.uint8)
    state = jax.eval_shape(method.init, jax.random.key(0), image)
    ours = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    theirs = sum(p.numel() for p in torch_ref.build(config).parameters())
    assert ours == theirs


@needs_torch
def test_torch_info_nce_matches_ours():
    import torch
    import torch_ref

    from sslax import losses

    z = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    ours = float(losses.info_nce(z[:8], z[8:], temperature=0.5))
    theirs = float(torch_ref.info_nce(torch.from_numpy(z), 0.5))
    assert ours == pytest.approx(theirs, rel=1e-5)


@needs_torch
def test_torch_step_runs():
    import torch_ref

    case = run.Case(
        "tiny", "step", overrides=(("width", 0.125), ("batch_size", 4), ("image_size", 16))
    )
    r = torch_ref.time_simclr_step(case.config_dict(), channels_last=True, repeats=1, warmup=1)
    assert r["step_s"] > 0 and "channels_last" in r["setting"]
