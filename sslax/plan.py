"""Plan a pod run without the pod: compile the real train step for a topology, ahead of time.

    python -m sslax.plan --config=CONFIG [--config.FIELD=VALUE ...] --topology=NAME [--out=DIR]

Compiles the train step of :func:`sslax.train.build_program`, exactly as a run on that topology
would, and the evaluation's feature step, on this machine with no accelerator (XLA compiles for
a described chip), then reports what the compiler knows: the memory each device needs and
whether it fits, the FLOPs and bytes of a step, the step time and throughput the chip's
datasheet peaks allow (a roofline), and the collectives each step runs. It prints a summary and
writes ``DIR/plan.json`` (default: the current folder). Nothing runs and nothing is read: no
data, no checkpoint.

Topologies (``--topology``):

- ``cpu:N``: N simulated CPU devices (XLA:CPU), with no extra installed.
- TPU slices through libtpu's topology descriptions (``pip install 'sslax[tpu]'``):
  ``v5e:AxB``, ``v6e:AxB``, ``v4:AxBxC``, ``v5p:AxBxC`` (chips per dimension, as Cloud TPU
  names slices; v4 and v5p as one device per chip, megacore, as JAX runs them).
- NVIDIA GPUs through the CUDA plugin's deviceless compile (``pip install 'sslax[gpu]'``):
  ``h100:N``, ``h200:N`` (one node of N GPUs) or ``h200:MxN`` (M nodes of N GPUs), for the
  chips described in ``sslax/topologies/*.txtpb``.

What ``plan.json`` holds (per device means per accelerator: a TPU chip, a GPU):

- ``topology``, ``platform``, ``device_kind``, ``num_devices``, ``mesh``, ``per_device_batch``,
  ``compile_s`` (lowering and compiling the train step here), the config's essentials, and
  ``compiler_options``: null, or on a GPU ``{"xla_gpu_enable_triton_gemm": false}`` when XLA's
  Triton GEMM tiling failed without a GPU to autotune on (seen on ViT matmuls) and the step was
  compiled with cuBLAS matmuls instead.
- ``memory`` of the train step, from the compiler's ``memory_analysis()``, per device:
  ``argument_bytes`` (state and batch), ``output_bytes``, ``alias_bytes`` (outputs written in
  place of donated inputs: the state), ``temp_bytes`` (the scratch arena; XLA packs
  temporaries into one allocation sized by their liveness), ``code_bytes`` (the executable; on
  a TPU it lives in HBM), and ``peak_bytes`` = argument + output - alias + temp + code: what
  the step holds at once when inputs and outputs live through the whole step, an upper bound
  of the compiler's own liveness peak (``compiler_peak_bytes``, also given: on TPU and GPU it
  was within 3% of ``peak_bytes`` in our plans; XLA:CPU's is not comparable). ``hbm_bytes`` is
  the chip's memory, ``usable_bytes`` what a program may take of it (a GPU: JAX's allocator
  takes 75% of it unless ``XLA_CLIENT_MEM_FRACTION`` says otherwise, read here from the
  environment), ``fits`` = peak <= usable, and ``margin_bytes`` the rest. None for ``cpu:N``.
  A TPU compile that runs out of HBM fails; the plan then says ``fits: false`` and why (libtpu
  0.0.42 let a v5e program have 15.75 of its 16 GiB: keep a margin). On a GPU, XLA schedules,
  and rematerialises on its own when it must, toward a memory limit derived from the memory
  the target description gives (``xla_gpu_memory_limit_slop_factor``): with an H200's 141 GB
  the ResNet-50 step kept 17.6 GiB of temporaries, and 12.4 GiB when told a tenth of that
  limit. A GPU peak is that schedule's, not the least the step could live with.
- ``eval_step``: the same for the evaluation's feature step (``method.encode`` over a batch of
  up to 1024 images sharded like training, as :func:`sslax.eval.feature_extractor` runs it).
- ``flops_per_step_per_device``, ``flops_per_step`` (x devices; replicated work such as the
  optimizer update counts on every device), ``bytes_accessed_per_device``, and
  ``cost_source``, the compiler whose ``cost_analysis()`` gave them: the target's own on TPU
  and CPU. The GPU compiler gives none without a GPU, so a GPU plan takes its FLOPs from the
  same program compiled for as many simulated CPU devices (XLA:CPU's count was within 3% of
  XLA:TPU's on the ResNet-50 step) and its bytes from XLA's cost analysis of the GPU
  compiler's optimized HLO (the GPU's fusions; its cuDNN/cuBLAS calls count no FLOPs there).
  Bytes accessed count every op's inputs and outputs as memory traffic: an upper bound.
- ``chip``: the datasheet peaks used (:data:`CHIPS`, each with its source), and
  ``roofline_step_s`` = max(FLOPs / peak bf16 FLOP/s, bytes / HBM bandwidth) per device, its
  ``roofline_bound``, and ``images_per_s_ceiling`` = batch / roofline step: a ceiling, not a
  forecast (no collective time, no input pipeline; a float32 config cannot reach bf16 peaks).
- ``collectives``: :func:`collective_stats` of the compiled train step's HLO, and
  ``collective_ops``, the largest few of each kind with their shapes.

Exit codes: 0 when the plan is written (whether it fits or not); 2, with one line on stderr,
for a bad flag, topology or config (a batch that does not divide over the devices), or a
missing libtpu / CUDA plugin; 1 when the compiler fails for another reason.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import importlib.util
import json
import math
import os
import pathlib
import re
import time
from typing import Any

__all__ = [
    "CHIPS",
    "COLLECTIVE_KINDS",
    "Chip",
    "PlanError",
    "Topology",
    "collective_ops",
    "collective_stats",
    "compile_train_step",
    "make_plan",
    "parse_topology",
]

# --------------------------------------------------------------------------------------------
# Chips and topologies


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator's datasheet peaks, per device (a TPU chip, megacore or not; a GPU)."""

    name: str
    platform: str  # "tpu" or "gpu"
    peak_bf16_flops: float  # dense bf16 FLOP/s
    hbm_bytes: int
    hbm_bytes_per_s: float
    source: str
    target_config: str | None = None  # GPU: the GpuTargetConfig text proto in sslax/topologies


CHIPS = {
    "v4": Chip(
        "TPU v4",
        "tpu",
        275e12,
        32 * 2**30,
        1200e9,
        "cloud.google.com/tpu/docs/v4: 275 TFLOPs (bf16) per chip, 32 GiB HBM2 at 1200 GBps",
    ),
    "v5e": Chip(
        "TPU v5e",
        "tpu",
        197e12,
        16 * 2**30,
        819e9,
        "cloud.google.com/tpu/docs/v5e: 197 TFLOPs (bf16) per chip, 16 GB HBM2 at 819 GBps "
        "(HBM sizes are binary: 16 GiB)",
    ),
    "v5p": Chip(
        "TPU v5p",
        "tpu",
        459e12,
        95 * 2**30,
        2765e9,
        "cloud.google.com/tpu/docs/v5p: 459 TFLOPs (bf16) per chip, 95 GB HBM2e at 2765 GBps "
        "(95 GiB in the page's newer table)",
    ),
    "v6e": Chip(
        "TPU v6e (Trillium)",
        "tpu",
        918e12,
        32 * 2**30,
        1638e9,
        "cloud.google.com/tpu/docs/v6e: 918 TFLOPs (bf16) per chip, 32 GB HBM at 1638 GBps "
        "(HBM sizes are binary: 32 GiB)",
    ),
    "h100": Chip(
        "NVIDIA H100 SXM 80GB",
        "gpu",
        989e12,
        85_520_809_984,
        3.35e12,
        "NVIDIA H100 datasheet, SXM: BF16 Tensor Core 1,979 TFLOPS with sparsity (989 dense), "
        "80 GB HBM3 at 3.35 TB/s; memory as nvidia-smi reports it (81559 MiB)",
        "h100_sxm.txtpb",
    ),
    "h200": Chip(
        "NVIDIA H200 SXM 141GB",
        "gpu",
        989e12,
        150_754_820_096,
        4.8e12,
        "NVIDIA H200 datasheet, SXM: BF16 Tensor Core 1,979 TFLOPS with sparsity (989 dense), "
        "141 GB HBM3e at 4.8 TB/s; memory as nvidia-smi reports it (143771 MiB)",
        "h200.txtpb",
    ),
}
TPU_2D, TPU_3D = ("v5e", "v6e"), ("v4", "v5p")
# JAX's GPU allocator takes this fraction of the memory unless told otherwise.
GPU_DEFAULT_MEM_FRACTION = 0.75
TOPOLOGY_HELP = (
    "cpu:N, v5e:AxB, v6e:AxB, v4:AxBxC, v5p:AxBxC, h100:N, h200:N or h200:MxN (M nodes of N GPUs)"
)


class PlanError(ValueError):
    """A topology or environment the plan cannot use; one line, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Topology:
    """A parsed ``--topology``: the platform, its chip, how many devices, the backend's name."""

    name: str
    platform: str  # "cpu", "tpu" or "gpu"
    num_devices: int
    chip: Chip | None = None
    dims: tuple[int, ...] = ()  # TPU chips per dimension; GPU (nodes, GPUs per node)


def parse_topology(name: str) -> Topology:
    """``"v5e:4x4"`` -> a :class:`Topology`; raises PlanError naming the forms it takes.

    >>> parse_topology("v5e:4x4").num_devices, parse_topology("h200:2x8").dims
    (16, (2, 8))
    """
    kind, sep, shape = name.strip().lower().partition(":")
    dims = tuple(int(d) for d in shape.split("x")) if re.fullmatch(r"\d+(x\d+)*", shape) else ()
    ok_dims = bool(sep and dims and all(d >= 1 for d in dims))
    if kind == "cpu" and ok_dims and len(dims) == 1:
        return Topology(name, "cpu", dims[0])
    if kind in CHIPS and ok_dims:
        chip = CHIPS[kind]
        if chip.platform == "tpu" and len(dims) == (2 if kind in TPU_2D else 3):
            return Topology(name, "tpu", math.prod(dims), chip, dims)
        if chip.platform == "gpu" and len(dims) <= 2:
            dims = (1, *dims) if len(dims) == 1 else dims
            return Topology(name, "gpu", math.prod(dims), chip, dims)
    raise PlanError(f"unknown topology {name!r}; choose {TOPOLOGY_HELP}")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def libtpu_installed() -> bool:
    """Whether TPU topologies can be had here (``pip install 'sslax[tpu]'``)."""
    return _importable("libtpu")


def cuda_plugin_installed() -> bool:
    """Whether GPU topologies can be had here (``pip install 'sslax[gpu]'``)."""
    return _importable("jax_plugins.xla_cuda12")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(error).__name__


def topology_devices(topology: Topology) -> list:
    """The (compile-only, for TPU and GPU) devices of ``topology``; raises PlanError."""
    import jax

    if topology.platform == "cpu":
        devices = jax.devices("cpu")
        if len(devices) < topology.num_devices:
            raise PlanError(
                f"--topology={topology.name} needs {topology.num_devices} CPU devices, but JAX's "
                f"CPU backend started with {len(devices)}; run `python -m sslax.plan` in a fresh "
                "process"
            )
        return devices[: topology.num_devices]
    from jax.experimental import topologies

    if topology.platform == "tpu":
        if not libtpu_installed():
            raise PlanError(
                f"--topology={topology.name} needs libtpu: pip install 'sslax[tpu]' "
                "(JAX's TPU extra)"
            )
        kind = next(k for k, chip in CHIPS.items() if chip is topology.chip)
        options: dict[str, Any] = {}
        if kind in TPU_3D:
            options["chip_config_name"] = "megacore"  # one device per chip, as JAX runs them
        if math.prod(topology.dims) < 4:  # smaller than a host: the slice is the host
            options["chips_per_host_bounds"] = (*topology.dims, 1, 1)[:3]
        spec = f"{kind}:{'x'.join(map(str, topology.dims))}"
        try:
            devices = topologies.get_topology_desc(
                topology_name=spec, platform="tpu", **options
            ).devices
        except Exception as e:  # libtpu refuses the shape: one line
            raise PlanError(f"libtpu refuses --topology={topology.name}: {_first_line(e)}") from e
    else:
        if not cuda_plugin_installed():
            raise PlanError(
                f"--topology={topology.name} needs JAX's CUDA plugin: pip install 'sslax[gpu]' "
                "(JAX's cuda12 extra)"
            )
        nodes, per_node = topology.dims
        target = importlib.resources.files("sslax") / "topologies" / topology.chip.target_config
        try:
            devices = topologies.get_topology_desc(
                topology.chip.name,
                "cuda",
                target_config=target.read_text(),
                # XLA's "<partitions>x<hosts per partition>x<devices per host>": each node its
                # own NVLink partition, as XLA assumes for several nodes.
                topology=f"{nodes}x1x{per_node}",
            ).devices
        except Exception as e:
            raise PlanError(
                f"the CUDA plugin refuses --topology={topology.name}: {_first_line(e)}"
            ) from e
    if len(devices) != topology.num_devices:
        raise PlanError(
            f"--topology={topology.name} gave {len(devices)} devices, expected "
            f"{topology.num_devices}"
        )
    return list(devices)


# --------------------------------------------------------------------------------------------
# Collectives in HLO text

COLLECTIVE_KINDS = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
)
_SHAPE = re.compile(r"\b(pred|token|[a-z]+[0-9]+[a-z0-9]*)\[([^\]]*)\]")
_LAYOUT = re.compile(r"\]\{[^{}]*\}")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([^\s=]+)\s*=\s*(.*?)\s+([a-z][a-z0-9\-]*)\((.*)$")
_CALLEES = re.compile(
    r"\b(body|condition|calls|to_apply|true_computation|false_computation|"
    r"branch_computations|called_computations)=(\{[^}]*\}|%?[\w.\-]+)"
)


def _array_bytes(dtype: str, dims: str) -> int:
    if dtype == "token":
        return 0
    bits = 8 if dtype == "pred" else int(re.match(r"[a-z]+([0-9]+)", dtype).group(1))
    sizes = [int(d.strip().lstrip("<=")) for d in dims.split(",") if d.strip()]
    return -(-math.prod(sizes) * bits // 8)


def _arrays(text: str) -> list[tuple[str, str]]:
    """The array shapes (dtype, dims) in a piece of HLO text, in order, layouts stripped."""
    return [(d, s.replace(" ", "")) for d, s in _SHAPE.findall(text)]


def _operand_text(rest: str) -> str:
    """What lies inside the parentheses that ``rest`` (the text after ``opcode(``) closes."""
    depth = 1
    for i, char in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return rest[:i]
    return rest


@dataclasses.dataclass
class _Module:
    """What the parsers here need of an HLO module's text."""

    shapes: dict  # instruction name -> the arrays (dtype, dims) of its result
    instructions: list  # (computation, name, opcode, result text, operand text)
    in_loop: set  # computations that run inside a while loop


def _parse_hlo(hlo_text: str) -> _Module:
    shapes: dict[str, list[tuple[str, str]]] = {}
    callees: dict[str, set[str]] = {}
    loop_roots: set[str] = set()
    instructions = []
    computation = ""
    for raw in hlo_text.splitlines():
        if raw and not raw[0].isspace() and raw.rstrip().endswith("{"):
            head = raw.split()
            computation = (head[1] if head[0] == "ENTRY" and len(head) > 1 else head[0]).lstrip("%")
            continue
        line = _LAYOUT.sub("]", raw)
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, result, opcode, rest = match.groups()
        shapes[name.lstrip("%")] = _arrays(result)
        for attribute, target in _CALLEES.findall(rest):
            names = set(re.findall(r"%?([\w.\-]+)", target))
            callees.setdefault(computation, set()).update(names)
            if opcode == "while" and attribute in ("body", "condition"):
                loop_roots.update(names)
        instructions.append((computation, name.lstrip("%"), opcode, result, _operand_text(rest)))
    in_loop, stack = set(), list(loop_roots)
    while stack:
        c = stack.pop()
        if c not in in_loop:
            in_loop.add(c)
            stack.extend(callees.get(c, ()))
    return _Module(shapes, instructions, in_loop)


def _operands(module: _Module, operand_text: str) -> list[tuple[str, str]]:
    """An instruction's operand arrays: printed inline, or looked up by name."""
    return _arrays(operand_text) or [
        a for ref in re.findall(r"%([\w.\-]+)", operand_text) for a in module.shapes.get(ref, [])
    ]


def collective_ops(hlo_text: str) -> list[dict]:
    """Every collective instruction of an HLO module's text, one dict each.

    Each dict: ``kind`` (one of :data:`COLLECTIVE_KINDS`), ``name``, ``computation`` (where it
    is), ``bytes`` (see :func:`collective_stats`), ``result`` (its result shape, shortened) and
    ``in_loop``: whether its computation is a ``while`` loop's body or condition, or called
    from one (then it runs once per iteration, and is still listed once).
    """
    module = _parse_hlo(hlo_text)
    found = [
        i
        for i in module.instructions
        if (i[2][: -len("-start")] if i[2].endswith("-start") else i[2]) in COLLECTIVE_KINDS
    ]
    in_loop = module.in_loop
    ops = []
    for computation, name, opcode, result, operand_text in found:
        operands = _operands(module, operand_text)
        outputs = _arrays(result)
        if opcode.endswith("-start"):
            # An async start's result also carries its operands and u32/s32 scalar context.
            outputs = [a for a in outputs if not (a[0] in ("u32", "s32") and a[1] == "")]
            n = len(operands)
            if n and len(outputs) >= 2 * n and outputs[:n] == operands:
                outputs = outputs[n:]
        size = max(sum(_array_bytes(*a) for a in operands), sum(_array_bytes(*a) for a in outputs))
        short = " ".join(result.split())
        ops.append(
            {
                "kind": opcode[: -len("-start")] if opcode.endswith("-start") else opcode,
                "name": name,
                "computation": computation,
                "bytes": size,
                "result": short if len(short) <= 160 else short[:157] + "...",
                "in_loop": computation in in_loop,
            }
        )
    return ops


def collective_stats(hlo_text: str) -> dict:
    """``{kind: {"count": int, "bytes_per_device": int}}`` for the five collective kinds.

    From a compiled module's HLO text (``compiled.as_text()``, one device's program). Each
    collective instruction counts once: a synchronous op (``all-reduce``) or the start of an
    asynchronous one (``all-reduce-start``; its ``-done`` is skipped; an op wrapped in an
    ``async-start`` is counted inside the computation it wraps). Its bytes are the larger of
    the sum of its operands' array sizes and the sum of its results' (a ``-start``'s result
    counts only its outputs, not the operands and scalar context it repeats; a tuple result,
    such as XLA:CPU's all-to-all, is summed): the buffer each device contributes or receives,
    not the bytes on the wire, which depend on the algorithm and the topology. Ops inside a
    ``while`` loop are counted once per op, not per iteration (:func:`collective_ops` flags
    them ``in_loop``). Every kind is present, with zeros when the module has none.
    """
    stats = {kind: {"count": 0, "bytes_per_device": 0} for kind in COLLECTIVE_KINDS}
    for op in collective_ops(hlo_text):
        stats[op["kind"]]["count"] += 1
        stats[op["kind"]]["bytes_per_device"] += op["bytes"]
    return stats


def custom_call_bytes(hlo_text: str) -> int:
    """The bytes custom calls (cuDNN convolutions, cuBLAS matmuls) read and write.

    XLA's HloCostAnalysis counts none for them: they are added to the GPU's bytes accessed.
    Each call counts its operands and its results but not its ``u8`` scratch workspace.
    """
    module = _parse_hlo(hlo_text)
    total = 0
    for _, _, opcode, result, operand_text in module.instructions:
        if opcode == "custom-call":
            outputs = [a for a in _arrays(result) if a[0] != "u8"]
            arrays = _operands(module, operand_text) + outputs
            total += sum(_array_bytes(*a) for a in arrays)
    return total


def largest_collectives(ops: list[dict], per_kind: int = 5) -> list[dict]:
    """The ``per_kind`` largest ops of each kind, largest first (plan.json's collective_ops)."""
    out = []
    for kind in COLLECTIVE_KINDS:
        of_kind = sorted((op for op in ops if op["kind"] == kind), key=lambda op: -op["bytes"])
        out += of_kind[:per_kind]
    return out


# --------------------------------------------------------------------------------------------
# Memory, cost, roofline


def usable_bytes(chip: Chip | None) -> int | None:
    """What a program may take of a device's memory: a TPU's HBM; a GPU's JAX allocator pool."""
    if chip is None:
        return None
    if chip.platform != "gpu":
        return chip.hbm_bytes
    if os.environ.get("XLA_PYTHON_CLIENT_ALLOCATOR", "").lower() == "platform":
        return chip.hbm_bytes
    fraction = os.environ.get("XLA_CLIENT_MEM_FRACTION") or os.environ.get(
        "XLA_PYTHON_CLIENT_MEM_FRACTION"
    )
    try:
        fraction = float(fraction) if fraction else GPU_DEFAULT_MEM_FRACTION
    except ValueError:
        fraction = GPU_DEFAULT_MEM_FRACTION
    return int(chip.hbm_bytes * fraction)


def memory_summary(stats, chip: Chip | None) -> dict:
    """plan.json's memory fields from a ``memory_analysis()`` (see the module docstring)."""
    argument = int(stats.argument_size_in_bytes)
    output = int(stats.output_size_in_bytes)
    alias = int(stats.alias_size_in_bytes)
    temp = int(stats.temp_size_in_bytes)
    code = int(stats.generated_code_size_in_bytes)
    peak = argument + output - alias + temp + code
    usable = usable_bytes(chip)
    return {
        "argument_bytes": argument,
        "output_bytes": output,
        "alias_bytes": alias,
        "temp_bytes": temp,
        "code_bytes": code,
        "peak_bytes": peak,
        "compiler_peak_bytes": int(getattr(stats, "peak_memory_in_bytes", 0) or 0) or None,
        "hbm_bytes": chip.hbm_bytes if chip else None,
        "usable_bytes": usable,
        "fits": None if usable is None else peak <= usable,
        "margin_bytes": None if usable is None else usable - peak,
    }


def _out_of_memory(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text


def _failed_memory(chip: Chip | None, error: Exception) -> dict:
    usable = usable_bytes(chip)
    return {
        "peak_bytes": None,
        "hbm_bytes": chip.hbm_bytes if chip else None,
        "usable_bytes": usable,
        "fits": False,
        "margin_bytes": None,
        "error": _first_line(error),
    }


def _cost(compiled) -> dict | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # a compile-only backend may not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return {"flops": float(cost["flops"]), "bytes": float(cost.get("bytes accessed", 0.0))}


def _optimized_hlo_cost(compiled) -> dict | None:
    """XLA's HloCostAnalysis of a compiled program's optimized HLO, run by the CPU backend.

    For the GPU compiler, which gives no cost analysis without a GPU: its fusions are the GPU's,
    so the bytes are the GPU program's, with the custom calls' reads and writes added
    (:func:`custom_call_bytes`); its FLOPs miss the cuDNN/cuBLAS custom calls (the
    convolutions and most matmuls), so the FLOPs come from elsewhere (:func:`_cpu_cost`).
    """
    try:
        from jax._src import xla_bridge
        from jax._src.lib import _jax

        modules = compiled.runtime_executable().hlo_modules()
        cpu = xla_bridge.get_backend("cpu")
        costs = [_jax.hlo_module_cost_analysis(cpu, module) for module in modules]
    except Exception:  # private API: a jax that moved it gives no bytes, not a failure
        return None
    # Custom calls count -1 byte each there ("unknown"): their reads and writes are added.
    analysed = sum(max(c.get("bytes accessed", 0.0), 0.0) for c in costs)
    return {"bytes": float(analysed + custom_call_bytes(compiled.as_text()))}


def roofline(flops: float | None, bytes_accessed: float | None, chip: Chip | None) -> dict:
    """Step time from the datasheet peaks: max(FLOPs / peak, bytes / bandwidth), per device."""
    if chip is None or flops is None:
        return {"roofline_step_s": None, "roofline_bound": None}
    compute_s = flops / chip.peak_bf16_flops
    memory_s = (bytes_accessed or 0.0) / chip.hbm_bytes_per_s
    return {
        "roofline_step_s": max(compute_s, memory_s),
        "roofline_bound": "compute" if compute_s >= memory_s else "memory",
        "roofline_compute_s": compute_s,
        "roofline_memory_s": memory_s,
    }


# --------------------------------------------------------------------------------------------
# The plan


def _abstract_inputs(program, mesh):
    """The train step's arguments as ShapeDtypeStructs laid out as a run lays them out."""
    import jax

    from sslax import parallel

    state = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        program.state_shapes,
        program.state_shardings,
    )
    key = jax.eval_shape(lambda: jax.random.key(0))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=parallel.replicated(mesh))
    return state, program.batch_shapes(), key


def compile_train_step(program, mesh, options: dict | None = None):
    """The program's train step compiled for ``mesh`` as a run lays it out; (compiled, seconds)."""
    import jax

    state, batch, key = _abstract_inputs(program, mesh)
    start = time.time()
    with jax.set_mesh(mesh):
        compiled = program.step.lower(state, batch, key).compile(compiler_options=options)
    return compiled, time.time() - start


def eval_batch_size(mesh) -> int:
    """The feature step's batch, as :func:`sslax.eval.feature_extractor` picks it for big splits."""
    from sslax import parallel

    shards = parallel.num_batch_shards(mesh)
    return max(shards, 1024 // shards * shards)


def _compile_eval_step(program, mesh, batch: int, options: dict | None = None):
    import jax
    import jax.numpy as jnp

    from sslax import parallel

    state, _, _ = _abstract_inputs(program, mesh)
    side = program.config.image_size
    images = jax.ShapeDtypeStruct(
        (batch, side, side, 3), jnp.uint8, sharding=program.batch_sharding
    )
    encode = jax.jit(
        program.method.encode,
        in_shardings=(program.state_shardings, program.batch_sharding),
        out_shardings=parallel.replicated(mesh),
    )
    start = time.time()
    with jax.set_mesh(mesh):
        compiled = encode.lower(state, images).compile(compiler_options=options)
    return compiled, time.time() - start


# Without a GPU to autotune on, XLA's GPU compiler can fail to tile a Triton GEMM fusion (seen
# on ViT matmuls with jax 0.10.2; jax-ml/jax#34010, openxla/xla#36792 name the same failure).
_TRITON_TILING_FAILURE = "Couldn't find output tile sizes"
NO_TRITON_GEMM = {"xla_gpu_enable_triton_gemm": False}


def _compile(compile_fn, platform: str):
    """``compile_fn(options)`` with XLA's defaults; on a GPU again without Triton GEMMs (cuBLAS
    instead) if the tiling failure above stops it. Returns (compiled, seconds, options)."""
    try:
        return (*compile_fn(None), None)
    except Exception as e:
        if platform != "gpu" or _TRITON_TILING_FAILURE not in str(e):
            raise
    return (*compile_fn(NO_TRITON_GEMM), NO_TRITON_GEMM)


def _cpu_cost(config, num_devices: int) -> tuple[dict | None, float, str]:
    """The train step's per-device cost from XLA:CPU over ``num_devices`` simulated devices."""
    import jax

    from sslax import parallel, train

    if len(jax.devices("cpu")) < num_devices:
        return None, 0.0, "none (too few CPU devices for XLA:CPU's cost analysis)"
    mesh = parallel.make_mesh(config.mesh, devices=jax.devices("cpu")[:num_devices])
    compiled, seconds = compile_train_step(train.build_program(config, mesh), mesh)
    return _cost(compiled), seconds, f"xla:cpu compile over {num_devices} simulated devices"


def make_plan(config, topology: Topology | str, *, hlo_path: pathlib.Path | None = None) -> dict:
    """The plan of ``config`` on ``topology``: what plan.json holds (see the module docstring).

    Raises :class:`sslax.configs.ConfigError` for a config that cannot run there and
    :class:`PlanError` for a topology that cannot be had. The CPU backend must hold enough
    devices for ``cpu:N`` (and, for a GPU topology, for the cost compile); ``main`` sees to it.
    """
    from sslax import configs, parallel, train

    topology = parse_topology(topology) if isinstance(topology, str) else topology
    configs.validate_config(config, num_devices=topology.num_devices)
    devices = topology_devices(topology)
    mesh = parallel.make_mesh(config.mesh, devices=devices)
    # Eager work (the init trace's key) must not run under a mesh of compile-only devices.
    program = train.build_program(config, mesh)
    chip = topology.chip

    plan: dict[str, Any] = {
        "topology": topology.name,
        "platform": topology.platform,
        "device_kind": devices[0].device_kind,
        "num_devices": topology.num_devices,
        "mesh": {name: int(size) for name, size in mesh.shape.items()},
        "config": {
            k: config.get(k)
            for k in ("method", "model", "image_size", "compute_dtype", "remat", "batch_size")
        },
        "per_device_batch": config.batch_size // parallel.num_batch_shards(mesh),
    }
    platform = topology.platform
    options = None
    try:
        compiled, compile_s, options = _compile(
            functools.partial(compile_train_step, program, mesh), platform
        )
    except Exception as e:
        if not _out_of_memory(e):
            raise
        compiled, compile_s = None, None
        plan["memory"] = _failed_memory(chip, e)
    plan["compile_s"] = compile_s
    plan["compiler_options"] = options
    if compiled is not None:
        plan["memory"] = memory_summary(compiled.memory_analysis(), chip)

    batch = eval_batch_size(mesh)
    try:
        eval_compiled, eval_s, _ = _compile(
            functools.partial(_compile_eval_step, program, mesh, batch), platform
        )
        eval_memory = memory_summary(eval_compiled.memory_analysis(), chip)
    except Exception as e:
        if not _out_of_memory(e):
            raise
        eval_s, eval_memory = None, _failed_memory(chip, e)
    plan["eval_step"] = {"batch": batch, "compile_s": eval_s, "memory": eval_memory}

    cost, cost_s, source = None, 0.0, "none"
    if compiled is not None and topology.platform != "gpu":
        cost, source = _cost(compiled), f"xla:{topology.platform} compile (the target's own)"
    elif topology.platform == "gpu":
        cost, cost_s, source = _cpu_cost(config, topology.num_devices)
        gpu_bytes = _optimized_hlo_cost(compiled) if compiled is not None else None
        if cost is not None and gpu_bytes is not None:
            cost["bytes"] = gpu_bytes["bytes"]
            source = f"FLOPs: {source}; bytes: the GPU compiler's optimized HLO"
    plan["flops_per_step_per_device"] = cost["flops"] if cost else None
    plan["flops_per_step"] = cost["flops"] * topology.num_devices if cost else None
    plan["bytes_accessed_per_device"] = cost["bytes"] if cost else None
    plan["cost_source"] = source
    plan["cost_compile_s"] = cost_s or None
    plan["chip"] = None if chip is None else dataclasses.asdict(chip)
    plan.update(
        roofline(plan["flops_per_step_per_device"], plan["bytes_accessed_per_device"], chip)
    )
    step_s = plan["roofline_step_s"]
    plan["images_per_s_ceiling"] = config.batch_size / step_s if step_s else None

    text = compiled.as_text() if compiled is not None else ""
    ops = collective_ops(text)
    plan["collectives"] = collective_stats(text)
    plan["collective_ops"] = largest_collectives(ops)
    plan["collectives_in_loops"] = sum(op["in_loop"] for op in ops)
    if hlo_path is not None and text:
        from sslax import paths

        paths.write_text(hlo_path, text)
    plan["versions"] = _versions(topology.platform)
    return plan


def _versions(platform: str) -> dict:
    from importlib import metadata

    names = ["jax", "jaxlib"] + {"tpu": ["libtpu"], "gpu": ["jax-cuda12-plugin"]}.get(platform, [])
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# --------------------------------------------------------------------------------------------
# The summary


def _size(n: int | float | None) -> str:
    if n is None:
        return "n/a"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _flop(n: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} FLOP"


def _fits(memory: dict) -> str:
    if memory.get("fits") is None:
        return "n/a (no HBM on a CPU topology)"
    if memory.get("peak_bytes") is None:
        return f"NO: the compiler ran out of memory ({memory.get('error')})"
    margin, usable = memory["margin_bytes"], memory["usable_bytes"]
    verdict = "yes" if memory["fits"] else "NO"
    return f"{verdict}, margin {_size(margin)} ({100 * margin / usable:.0f}% of {_size(usable)})"


def summary(plan: dict) -> str:
    """The printed summary of a plan."""
    c, memory, ev = plan["config"], plan["memory"], plan["eval_step"]
    lines = [
        f"{c['method']} {c['model']} at {c['image_size']} px, batch {c['batch_size']} "
        f"({plan['per_device_batch']} per device), {c['compute_dtype']}, remat {c['remat']}",
        f"on {plan['topology']}: {plan['num_devices']} x {plan['device_kind']}, mesh "
        f"{plan['mesh']}",
        "",
        f"  {'per device':<22} {'train step':>14} {'eval step':>14}",
    ]
    for label, key in (
        ("arguments", "argument_bytes"),
        ("outputs", "output_bytes"),
        ("aliased (donated)", "alias_bytes"),
        ("temporaries", "temp_bytes"),
        ("code", "code_bytes"),
        ("peak", "peak_bytes"),
    ):
        lines.append(
            f"  {label:<22} {_size(memory.get(key)):>14} {_size(ev['memory'].get(key)):>14}"
        )
    lines += [
        f"  {'HBM (usable)':<22} {_size(memory.get('usable_bytes')):>14}",
        f"  fits: train step {_fits(memory)}; eval step {_fits(ev['memory'])}",
        "",
    ]
    flops = plan["flops_per_step_per_device"]
    if flops is not None:
        lines.append(
            f"  FLOPs per step: {_flop(flops)} per device, "
            f"{_flop(plan['flops_per_step'])} in all; bytes accessed "
            f"{_size(plan['bytes_accessed_per_device'])} per device ({plan['cost_source']})"
        )
    if plan["roofline_step_s"]:
        chip = plan["chip"]
        lines.append(
            f"  roofline ({chip['name']}: {chip['peak_bf16_flops'] / 1e12:.0f} TFLOP/s bf16, "
            f"{chip['hbm_bytes_per_s'] / 1e9:.0f} GB/s): {1e3 * plan['roofline_step_s']:.3g} ms "
            f"per step, {plan['roofline_bound']}-bound, at most "
            f"{plan['images_per_s_ceiling']:,.0f} images/s"
        )
        if c["compute_dtype"] != "bfloat16":
            lines.append(f"  (the peak is bf16's: a {c['compute_dtype']} step runs slower)")
    moved = [
        f"{kind} {s['count']} ({_size(s['bytes_per_device'])})"
        for kind, s in plan["collectives"].items()
        if s["count"]
    ]
    lines.append("  collectives per step per device: " + (", ".join(moved) or "none"))
    if plan["collectives_in_loops"]:
        lines.append(f"  ({plan['collectives_in_loops']} of them inside loops, listed once)")
    times = [f"train step {plan['compile_s']:.1f} s" if plan["compile_s"] else "train step n/a"]
    if ev["compile_s"]:
        times.append(f"eval step {ev['compile_s']:.1f} s")
    if plan.get("cost_compile_s"):
        times.append(f"XLA:CPU cost compile {plan['cost_compile_s']:.1f} s")
    lines.append("  compiled here in: " + ", ".join(times))
    if plan.get("compiler_options"):
        lines.append(
            f"  note: compiled with {plan['compiler_options']}: XLA's Triton GEMM tiling failed "
            "without a GPU to autotune on, so matmuls went to cuBLAS"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The command line


def _fail(message, code: int = 2) -> None:
    from sslax import cli

    cli.fail("sslax.plan", message, code)


def _prepare_backends(topology: Topology, model: str | None) -> None:
    """Before JAX starts a backend: the CPU only, with as many devices as the plan needs."""
    import jax

    from sslax import runtime

    jax.config.update("jax_platforms", "cpu")  # nothing runs: no accelerator is touched
    if topology.platform in ("cpu", "gpu"):  # XLA:CPU compiles: the cpu topology, GPU costs
        runtime.use_tuned_xla_flags(model)
        jax.config.update("jax_num_cpu_devices", topology.num_devices)
    elif topology.platform == "tpu":
        # libtpu wants to know where it runs; these quiet its warnings (it runs nowhere here).
        kind = next(k for k, chip in CHIPS.items() if chip is topology.chip)
        os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{kind}-{topology.num_devices}")
        os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
        # libtpu lets one process at a time load it (/tmp/libtpu_lockfile); a plan opens no
        # TPU, so plans may run side by side, and beside a TPU job.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def main(argv: list[str], config_flag, topology_flag, out_flag, hlo_flag) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}")
    try:
        topology = parse_topology(topology_flag.value)
    except PlanError as e:
        _fail(e)
    try:
        config = config_flag.value
        config.method  # a config file that failed to load raises only on first use
    except Exception as e:
        _fail(f"cannot load --config: {e}")
    _prepare_backends(topology, config.get("model"))

    from absl import logging

    from sslax import configs

    logging.set_verbosity(logging.WARNING)
    from sslax import paths

    try:
        out = paths.resolve(out_flag.value)
        out.mkdir(parents=True, exist_ok=True)
        plan = make_plan(
            config, topology, hlo_path=out / "train_step.hlo.txt" if hlo_flag.value else None
        )
    except (configs.ConfigError, PlanError) as e:
        _fail(e)
    except (OSError, ValueError) as e:
        _fail(f"cannot write to --out={out_flag.value}: {e}")
    except Exception as e:  # the compiler failed for a reason of its own
        _fail(f"compiling for {topology.name} failed: {type(e).__name__}: {_first_line(e)}", 1)
    paths.write_text(out / "plan.json", json.dumps(plan, indent=2) + "\n")
    print(summary(plan))
    print(f"\nwritten to {out / 'plan.json'}")


def run() -> None:
    """The command line: flags are defined here, not at import, so importing has no effects."""
    from absl import app, flags

    from sslax import cli, train

    config_flag = cli.define_config_flag("sslax.plan", str(train.DEFAULT_CONFIG))
    topology_flag = flags.DEFINE_string(
        "topology", None, f"Where the run would run: {TOPOLOGY_HELP}."
    )
    out_flag = flags.DEFINE_string("out", ".", "Folder for plan.json.")
    hlo_flag = flags.DEFINE_bool("hlo", False, "Also write the train step's compiled HLO text.")
    flags.mark_flag_as_required("topology")

    app.run(
        functools.partial(
            main,
            config_flag=config_flag,
            topology_flag=topology_flag,
            out_flag=out_flag,
            hlo_flag=hlo_flag,
        ),
        flags_parser=cli.flags_parser("sslax.plan"),
    )


if __name__ == "__main__":
    run()
