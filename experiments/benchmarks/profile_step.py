"""Where one jitted train step spends its time: a JAX profiler trace, summed per XLA op.

    python experiments/benchmarks/profile_step.py --case=simclr_resnet18_cifar32_f32 \
        [--suite=cpu|gpu] [--steps=2] [--top=15] [--xla=tuned|default]

Builds the case of ``run.py``, runs ``steps`` steps under ``jax.profiler``, and sums the
traced time of every XLA op (fusions and library calls) per kind (the op name without its
number: ``transpose_copy_fusion``, ``ynn_fusion``...), then lists the costliest single ops
with their output shapes. Per-step milliseconds; the ops of both CPU threads are summed, so
the total can exceed the step's wall time. Caveat measured on XLA:CPU: Eigen convolutions run
asynchronously and are not in the trace (their time is the wall time the ops do not explain;
``conv_layers.py`` times them alone).
"""

from __future__ import annotations

import collections
import glob
import os
import pathlib
import re
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run  # noqa: E402  (the harness's cases)

_CASE = flags.DEFINE_string("case", "simclr_resnet18_cifar32_f32", "A step case of run.py.")
_STEPS = flags.DEFINE_integer("steps", 2, "Profiled steps.", lower_bound=1)
_TOP = flags.DEFINE_integer("top", 15, "Single ops listed.")
_XLA = flags.DEFINE_enum("xla", "tuned", ["tuned", "default"], "sslax's XLA:CPU flags or none.")


def _op_shapes(hlo_text: str) -> dict[str, str]:
    shapes = {}
    for m in re.finditer(r"%([\w.\-]+) = (\S+) ", hlo_text):
        shapes[m.group(1)] = m.group(2)
    return shapes


def profile(case: run.Case, steps: int) -> dict:
    import jax

    from sslax import methods

    config = case.config_dict()
    method = methods.get(config.method).make(config)
    batch = run._random_batch(config.batch_size, config.image_size)
    key = jax.random.key(0)
    state = jax.jit(method.init)(key, batch["image"][:1])
    compiled = jax.jit(method.train_step).lower(state, batch, key).compile()
    jax.block_until_ready(compiled(state, batch, key))
    trace_dir = tempfile.mkdtemp(prefix="sslax_profile_")
    start = time.perf_counter()
    jax.profiler.start_trace(trace_dir)
    for _ in range(steps):
        jax.block_until_ready(compiled(state, batch, key))
    jax.profiler.stop_trace()
    wall_ms = (time.perf_counter() - start) * 1e3 / steps
    path = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
    data = jax.profiler.ProfileData.from_file(path)
    per_op = collections.Counter()
    for plane in data.planes:
        if not plane.name.startswith("/host:CPU") and not plane.name.startswith("/device:"):
            continue
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                name = event.name
                if name.startswith(("ThunkExecutor", "SlinkyThreadPool", "$")):
                    continue
                per_op[name] += event.duration_ns / 1e6 / steps
    kinds = collections.Counter()
    for name, ms in per_op.items():
        kinds[re.sub(r"[._]\d+$", "", name)] += ms
    shapes = _op_shapes(compiled.as_text())
    return {
        "case": case.name,
        "step_wall_ms": wall_ms,
        "traced_ms": sum(per_op.values()),
        "by_kind_ms": dict(kinds.most_common()),
        "top_ops": [(name, ms, shapes.get(name, "?")) for name, ms in per_op.most_common()],
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    cases = {c.name: c for c in run._suite(run._SUITE.value) if c.kind == "step"}
    if _CASE.value not in cases:
        raise app.UsageError(f"--case must be one of {', '.join(cases)}")
    case = cases[_CASE.value]
    if _XLA.value == "tuned":
        from sslax import runtime

        runtime.use_tuned_xla_flags(case.config_dict().model)
    result = profile(case, _STEPS.value)
    print(
        f"{case.name}: {result['step_wall_ms']:.0f} ms per step (wall, under the profiler); "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    print(f"traced op time {result['traced_ms']:.0f} ms per step, by kind:")
    total = result["traced_ms"] or 1.0
    for kind, ms in list(result["by_kind_ms"].items())[:12]:
        print(f"  {ms:8.1f} ms {ms / total:6.1%}  {kind}")
    print(f"costliest {_TOP.value} ops:")
    for name, ms, shape in result["top_ops"][: _TOP.value]:
        print(f"  {ms:8.1f} ms  {name:32} {shape}")


if __name__ == "__main__":
    app.run(main)
