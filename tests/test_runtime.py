"""sslax.runtime: the tuned XLA:CPU flags are merged politely, take effect, and change no result."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sslax import runtime

YNN = runtime.YNN_FLAG


def test_presets_by_model_family():
    assert runtime.preset_for("resnet18") == runtime.preset_for("resnet50") == "convnet"
    assert runtime.preset_for("vit_small") == "transformer"
    assert runtime.tuned_xla_flags("", "resnet50") == f"--{YNN}=reduce"
    assert runtime.tuned_xla_flags("", "vit_base") == f"--{YNN}=dot,reduce"


def test_flags_of_the_user_win_and_others_are_kept():
    mine = f"--xla_force_host_platform_device_count=8 --{YNN}=eltwise"
    assert runtime.tuned_xla_flags(mine, "resnet18") == mine
    merged = runtime.tuned_xla_flags("--xla_force_host_platform_device_count=8", "resnet18")
    assert merged.split() == ["--xla_force_host_platform_device_count=8", f"--{YNN}=reduce"]


def test_refuses_once_backends_started(monkeypatch, caplog):
    import jax

    jax.devices()  # the test process has started its backends (conftest)
    monkeypatch.setenv("XLA_FLAGS", "--foo=1")
    assert runtime.use_tuned_xla_flags("resnet18") is False
    assert os.environ["XLA_FLAGS"] == "--foo=1"
    assert "already started" in caplog.text


def test_opt_out(monkeypatch):
    monkeypatch.setenv(runtime.OPT_OUT, "default")
    monkeypatch.setenv("XLA_FLAGS", "")
    assert runtime.use_tuned_xla_flags("resnet18") is False
    assert os.environ["XLA_FLAGS"] == ""


_PROBE = r"""
import json, sys
from sslax import runtime
applied = runtime.use_tuned_xla_flags("resnet18")
import jax, jax.numpy as jnp, numpy as np
from sslax import losses
from sslax.models import ResNet
net = ResNet(stage_sizes=(1, 1), block="basic", width=0.25, stem="cifar")
x = jnp.asarray(np.random.default_rng(0).random((8, 16, 16, 3), np.float32))
variables = net.init(jax.random.key(0), x, train=False)

def loss(params):
    h, _ = net.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                     train=True, mutable=["batch_stats"])
    return losses.info_nce(h[:4], h[4:], temperature=0.5)

fn = jax.jit(jax.value_and_grad(loss))
value, grads = fn(variables["params"])
hlo = fn.lower(variables["params"]).compile().as_text()
# Computations that YNNPACK fusions call, and how many of them hold a convolution.
bodies, name = {}, None
for line in hlo.splitlines():
    if line.startswith("%") and line.rstrip().endswith("{"):
        name, bodies[line.split()[0][1:]] = line.split()[0][1:], []
    elif name:
        bodies[name].append(line)
called = [c.split(",")[0].split()[0] for line in hlo.splitlines() if "ynn_fusion" in line
          and "calls=%" in line for c in [line.split("calls=%", 1)[1]]]
ynn_convolutions = sum(any(" convolution(" in b for b in bodies.get(c, [])) for c in called)
print(json.dumps({
    "applied": applied,
    "loss": float(value),
    "grads": [np.asarray(g).ravel().tolist() for g in jax.tree.leaves(grads)],
    "ynn_convolutions": ynn_convolutions,
}))
"""


def _probe(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", runtime.OPT_OUT)}
    env[runtime.OPT_OUT] = mode
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    __import__("jax").default_backend() != "cpu", reason="the tuned flags are XLA:CPU's"
)
def test_tuned_flags_change_the_compiled_step_but_not_its_results():
    tuned, default = _probe("tuned"), _probe("default")
    assert tuned["applied"] and not default["applied"]
    # The flag took effect: XLA's default hands the convolutions to YNNPACK, the preset not.
    assert default["ynn_convolutions"] > 0 and tuned["ynn_convolutions"] == 0
    assert tuned["loss"] == pytest.approx(default["loss"], rel=1e-5)
    for a, b in zip(tuned["grads"], default["grads"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_an_absent_tpu_is_probed_quietly_and_a_present_one_left_alone(monkeypatch):
    import glob
    import importlib.util

    monkeypatch.setattr(runtime, "_backends_started", lambda: False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    for name in ("TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(glob, "glob", lambda pattern: [])  # no TPU chips here
    assert runtime.quiet_absent_tpu()
    assert os.environ["TPU_WORKER_HOSTNAMES"] == "localhost"
    monkeypatch.delenv("TPU_ACCELERATOR_TYPE")
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
    monkeypatch.setattr(glob, "glob", lambda pattern: ["/dev/accel0"])  # a TPU VM
    assert not runtime.quiet_absent_tpu() and "TPU_ACCELERATOR_TYPE" not in os.environ
