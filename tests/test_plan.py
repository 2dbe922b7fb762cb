"""``python -m sslax.plan``: the collective parser, the command's errors, and plans on CPU,
TPU (when libtpu is installed) and GPU (when JAX's CUDA plugin is, ``-m slow``).

The test session runs on 8 simulated CPU devices (conftest.py), so the ``cpu:8`` plan runs in
this process; TPU and GPU plans, which need a process of their own, run the command.
"""

import json
import re
import subprocess
import sys

import pytest

from sslax import configs, plan

# --------------------------------------------------------------------------------------------
# The collective parser, on literal HLO

ADD = """\
%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}
"""

SYNC = (
    "HloModule sync\n\n"
    + ADD
    + """
ENTRY %main (p0: f32[16], p1: f32[128,64], p2: bf16[16,64]) -> (f32[16], f32[128,64]) {
  %p0 = f32[16]{0:T(128)} parameter(0)
  %p1 = f32[128,64]{1,0:T(8,128)S(1)} parameter(1)
  %p2 = bf16[16,64]{1,0} parameter(2)
  %all-reduce.1 = (f32[16]{0:T(128)}, f32[128,64]{1,0:T(8,128)}) all-reduce(%p0, %p1), channel_id=1, replica_groups={{0,1,2,3}}, use_global_device_ids=true, to_apply=%add, metadata={op_name="jit(f)/all-reduce(x)"}
  %all-gather = bf16[64,64]{1,0} all-gather(%p2), channel_id=2, replica_groups=[1,4]<=[4], dimensions={0}
  ROOT %t = (f32[16], f32[128,64]) tuple(%all-reduce.1)
}
"""  # noqa: E501
)

ASYNC = (
    "HloModule async\n\n"
    + ADD
    + """
%wrapped_reduce_scatter (p: f32[64,8]) -> f32[16,8] {
  %p = f32[64,8]{1,0} parameter(0)
  ROOT %reduce-scatter.1 = f32[16,8]{1,0} reduce-scatter(%p), replica_groups={{0,1,2,3}}, dimensions={0}, to_apply=%add
}

ENTRY %main (x: bf16[16,64], y: f32[256], z: f32[8,4], w: f32[64,8], v: f32[128,64]) -> f32[256] {
  %x = bf16[16,64]{1,0} parameter(0)
  %y = f32[256]{0} parameter(1)
  %z = f32[8,4]{1,0} parameter(2)
  %w = f32[64,8]{1,0} parameter(3)
  %v = f32[128,64]{1,0} parameter(4)
  %all-gather-start = (bf16[16,64]{1,0}, bf16[64,64]{1,0}) all-gather-start(%x), channel_id=1, replica_groups={{0,1,2,3}}, dimensions={0}
  %all-gather-done = bf16[64,64]{1,0} all-gather-done(%all-gather-start)
  %all-reduce-start = f32[256]{0} all-reduce-start(%y), channel_id=2, replica_groups={{0,1,2,3}}, to_apply=%add
  %all-reduce-done = f32[256]{0} all-reduce-done(%all-reduce-start)
  %collective-permute-start = (f32[8,4]{1,0}, f32[8,4]{1,0}, u32[]{:S(2)}, u32[]{:S(2)}) collective-permute-start(%z), channel_id=3, source_target_pairs={{0,1},{1,0}}
  %collective-permute-done = f32[8,4]{1,0} collective-permute-done(%collective-permute-start)
  %reduce-scatter-start = ((f32[64,8]{1,0}), f32[16,8]{1,0}, s32[]) async-start(%w), calls=%wrapped_reduce_scatter
  %reduce-scatter-done = f32[16,8]{1,0} async-done(%reduce-scatter-start)
  %reduce-scatter-start.2 = ((f32[128,64]{1,0}), f32[32,64]{1,0}) reduce-scatter-start(%v), channel_id=4, replica_groups={{0,1,2,3}}, dimensions={0}, to_apply=%add
  %reduce-scatter-done.2 = f32[32,64]{1,0} reduce-scatter-done(%reduce-scatter-start.2)
  ROOT %r = f32[256]{0} copy(%all-reduce-done)
}
"""  # noqa: E501
)

# XLA:CPU prints an all-to-all as a tuple of one array per device.
_PIECE = "f32[8,1,4,32,3]{4,3,2,1,0}"
_SLICES = "".join(
    f"  %s{i} = {_PIECE} slice(%a), slice={{[{8 * i}:{8 * i + 8}], [0:1], [0:4], [0:32], [0:3]}}\n"
    for i in range(8)
)
_RESULT = ", ".join([_PIECE] * 5) + ", /*index=5*/" + ", ".join([_PIECE] * 3)
_OPERANDS = ", ".join(f"%s{i}" for i in range(8))
TUPLE_ALL_TO_ALL = (
    "HloModule a2a\n\nENTRY %main (a: f32[64,1,4,32,3]) -> f32[64,1,4,32,3] {\n"
    "  %a = f32[64,1,4,32,3]{4,3,2,1,0} parameter(0)\n"
    + _SLICES
    + f"  %all-to-all = ({_RESULT}) all-to-all({_OPERANDS}), channel_id=1, "
    "replica_groups={{0,1,2,3,4,5,6,7}}\n"
    f"  ROOT %c = f32[64,1,4,32,3]{{4,3,2,1,0}} concatenate({_OPERANDS}), dimensions={{0}}\n}}\n"
)

LOOP = (
    "HloModule loop\n\n"
    + ADD
    + """
%body (t: (s32[], f32[32])) -> (s32[], f32[32]) {
  %t = (s32[], f32[32]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %v = f32[32]{0} get-tuple-element(%t), index=1
  %in-loop = f32[32]{0} all-reduce(%v), replica_groups={{0,1}}, to_apply=%add
  ROOT %next = (s32[], f32[32]{0}) tuple(%i, %in-loop)
}

%cond (t: (s32[], f32[32])) -> pred[] {
  %t = (s32[], f32[32]{0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %n = s32[] constant(4)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main (x: f32[32]) -> (s32[], f32[32]) {
  %x = f32[32]{0} parameter(0)
  %zero = s32[] constant(0)
  %init = (s32[], f32[32]{0}) tuple(%zero, %x)
  %outside = f32[32]{0} all-reduce(%x), replica_groups={{0,1}}, to_apply=%add
  ROOT %w = (s32[], f32[32]{0}) while(%init), condition=%cond, body=%body
}
"""
)


def _expected(**kinds):
    out = {kind: {"count": 0, "bytes_per_device": 0} for kind in plan.COLLECTIVE_KINDS}
    for kind, (count, size) in kinds.items():
        out[kind.replace("_", "-")] = {"count": count, "bytes_per_device": size}
    return out


def test_collective_stats_counts_sync_ops_and_sums_tuple_operands():
    assert plan.collective_stats(SYNC) == _expected(
        all_reduce=(1, 16 * 4 + 128 * 64 * 4),  # the tuple of both operands
        all_gather=(1, 64 * 64 * 2),  # the larger side: the gathered output
    )


def test_collective_stats_counts_async_starts_once_and_only_their_outputs():
    assert plan.collective_stats(ASYNC) == _expected(
        all_gather=(1, 64 * 64 * 2),  # not the operand the start's tuple repeats
        all_reduce=(1, 256 * 4),
        collective_permute=(1, 8 * 4 * 4),  # not the u32[] context
        # One inside an async-start's computation, one a -start of its own (XLA:GPU's form):
        # the operand side, the larger.
        reduce_scatter=(2, 64 * 8 * 4 + 128 * 64 * 4),
    )


def test_collective_stats_sums_an_all_to_all_printed_as_a_tuple():
    assert plan.collective_stats(TUPLE_ALL_TO_ALL) == _expected(
        all_to_all=(1, 8 * (8 * 1 * 4 * 32 * 3) * 4)
    )


def test_collectives_in_a_while_loop_are_listed_once_and_flagged():
    ops = {op["name"]: op for op in plan.collective_ops(LOOP)}
    assert set(ops) == {"in-loop", "outside"}
    assert ops["in-loop"]["in_loop"] and not ops["outside"]["in_loop"]
    assert plan.collective_stats(LOOP)["all-reduce"] == {"count": 2, "bytes_per_device": 256}
    assert plan.collective_stats("HloModule empty\n") == _expected()


def test_custom_call_bytes_count_operands_and_results_but_not_the_workspace():
    text = """HloModule conv

ENTRY %main (x: bf16[8,32,32,16], w: bf16[3,3,16,32]) -> bf16[8,32,32,32] {
  %x = bf16[8,32,32,16]{3,2,1,0} parameter(0)
  %w = bf16[3,3,16,32]{3,2,1,0} parameter(1)
  %conv = (bf16[8,32,32,32]{3,2,1,0}, u8[65536]{0}) custom-call(%x, %w), custom_call_target="__cudnn$convForward"
  ROOT %out = bf16[8,32,32,32]{3,2,1,0} get-tuple-element(%conv), index=0
}
"""  # noqa: E501
    expected = 2 * (8 * 32 * 32 * 16 + 3 * 3 * 16 * 32 + 8 * 32 * 32 * 32)
    assert plan.custom_call_bytes(text) == expected


def test_parse_topology_accepts_the_documented_forms_and_names_them_otherwise():
    assert plan.parse_topology("cpu:8").num_devices == 8
    assert plan.parse_topology("v4:2x2x2").num_devices == 8
    assert plan.parse_topology("h100:8").dims == (1, 8)
    assert plan.parse_topology("h200:2x8").num_devices == 16
    for bad in ("v5e:2x2x2", "v4:4x4", "h200:2x2x2", "tpu:8", "cpu:0", "v5e", "cpu:x"):
        with pytest.raises(plan.PlanError, match="unknown topology .* choose cpu:N"):
            plan.parse_topology(bad)


def test_the_gpu_chip_table_agrees_with_the_target_descriptions():
    from importlib import resources

    for chip in plan.CHIPS.values():
        if chip.platform != "gpu":
            continue
        text = (resources.files("sslax") / "topologies" / chip.target_config).read_text()
        memory = int(re.search(r"device_memory_size: (\d+)", text).group(1))
        bandwidth = int(re.search(r"memory_bandwidth: (\d+)", text).group(1))
        assert (memory, bandwidth) == (chip.hbm_bytes, chip.hbm_bytes_per_s)
        assert "cuda_compute_capability { major: 9 minor: 0 }" in text


# --------------------------------------------------------------------------------------------
# The command


def _plan_cli(*args, **env):
    import os

    return subprocess.run(
        [sys.executable, "-m", "sslax.plan", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
        check=False,
    )


HAS_LIBTPU = plan.libtpu_installed()
HAS_CUDA_PLUGIN = plan.cuda_plugin_installed()

CLI_ERRORS = [
    (["--topology=tpu9:2x2"], "unknown topology 'tpu9:2x2'; choose cpu:N"),
    (["--topology=cpu:3"], "batch_size 256 does not divide by the 3 devices"),
]


@pytest.mark.parametrize("args, fragment", CLI_ERRORS)
def test_bad_topologies_and_configs_are_one_line_and_exit_2(args, fragment, tmp_path):
    result = _plan_cli(*args, f"--out={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sslax.plan: error: "), result.stderr
    assert fragment in lines[0]
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize(
    "topology, fragment",
    [
        ("v5e:2x2", "needs libtpu: pip install 'sslax[tpu]'"),
        ("h200:8", "needs JAX's CUDA plugin: pip install 'sslax[gpu]'"),
    ],
)
def test_a_missing_extra_is_named(topology, fragment, monkeypatch):
    monkeypatch.setattr(plan, "libtpu_installed", lambda: False)
    monkeypatch.setattr(plan, "cuda_plugin_installed", lambda: False)
    with pytest.raises(plan.PlanError, match=re.escape(fragment)):
        plan.topology_devices(plan.parse_topology(topology))


def _tiny_config(**overrides):
    c = configs.shapes_config("simclr")
    c.update(batch_size=16, image_size=16, width=0.125, proj_hidden_dim=32, proj_dim=16)
    c.update(overrides)
    return c


def _check_plan(p, topology, num_devices):
    assert p["topology"] == topology and p["num_devices"] == num_devices
    assert p["mesh"] == {"data": num_devices}
    assert p["per_device_batch"] == 16 // num_devices
    assert p["compile_s"] > 0
    m = p["memory"]
    assert m["peak_bytes"] == (
        m["argument_bytes"]
        + m["output_bytes"]
        - m["alias_bytes"]
        + m["temp_bytes"]
        + m["code_bytes"]
    )
    assert m["alias_bytes"] > 0  # the donated state
    assert p["eval_step"]["memory"]["peak_bytes"] > 0
    assert p["flops_per_step_per_device"] > 0 and p["bytes_accessed_per_device"] > 0
    assert p["flops_per_step"] == pytest.approx(p["flops_per_step_per_device"] * num_devices)
    stats = p["collectives"]
    assert set(stats) == set(plan.COLLECTIVE_KINDS)
    # Gradients and BatchNorm statistics are summed over the devices.
    assert stats["all-reduce"]["count"] > 0 and stats["all-reduce"]["bytes_per_device"] > 0
    assert all(op["kind"] in plan.COLLECTIVE_KINDS for op in p["collective_ops"])
    json.dumps(p)  # plan.json holds it


@pytest.mark.slow  # CI's time budget: the TPU plan below runs the same code in the default suite
def test_cpu_plan_of_a_tiny_config():
    p = plan.make_plan(_tiny_config(), "cpu:8")
    _check_plan(p, "cpu:8", 8)
    assert p["memory"]["hbm_bytes"] is None and p["memory"]["fits"] is None
    assert p["roofline_step_s"] is None and p["cost_source"].startswith("xla:cpu")


TINY_FLAGS = [
    "--config.batch_size=16",
    "--config.image_size=16",
    "--config.width=0.125",
    "--config.proj_hidden_dim=32",
    "--config.proj_dim=16",
]


def _tiny_plan_cli(topology: str, devices: int, out):
    """The command's run for the tiny config: its result and the plan.json it wrote, checked."""
    result = _plan_cli(f"--topology={topology}", f"--out={out}", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    p = json.loads((out / "plan.json").read_text())
    _check_plan(p, topology, devices)
    return result, p


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (pip install 'sslax[tpu]')")
def test_tpu_plan_of_a_tiny_config(tmp_path):
    result, p = _tiny_plan_cli("v5e:2x2", 4, tmp_path)
    assert p["device_kind"] == "TPU v5 lite" and p["memory"]["fits"] is True
    assert p["memory"]["hbm_bytes"] == 16 * 2**30 and p["cost_source"].startswith("xla:tpu")
    assert p["roofline_step_s"] > 0 and p["images_per_s_ceiling"] > 0
    assert "fits: train step yes" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CUDA_PLUGIN, reason="JAX's CUDA plugin is not installed")
def test_gpu_plan_of_a_tiny_config(tmp_path):
    _, p = _tiny_plan_cli("h200:4", 4, tmp_path)
    assert p["device_kind"] == "NVIDIA H200" and p["memory"]["fits"] is True
    # No cost analysis without a GPU: XLA:CPU's of the same program.
    assert "FLOPs: xla:cpu compile over 4" in p["cost_source"]
