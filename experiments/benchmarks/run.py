"""The benchmark harness: every case measured the same way, side by side with PyTorch.

    python experiments/benchmarks/run.py --suite=cpu --out=DIR [--cases=NAME,...]
        [--repeats=5] [--warmup=2] [--notorch] [--noxla_default]

Writes ``DIR/bench.json`` (machine, versions, date, the matmul peaks and one record per case)
and prints a table. A benchmark, not a test: nothing here asserts a speed.

Every case runs in a fresh subprocess, so XLA flags, threads and memory never leak from one
case to the next, and the JAX and torch sides never share the cores. For a train-step case the
child process builds the method from a config file, jits the whole step (augmentation,
forward, loss, backward, update; state donated) on a random uint8 batch, and reports

- images/s: batch / median step time over ``repeats`` calls after ``warmup`` calls;
- flops_per_step: the compiled step's cost analysis (left out for programs with a loop, such
  as the chunked loss, whose body the analysis counts once);
- mfu: achieved FLOP/s over the dense-matmul peak measured in the same run, in the case's
  compute dtype (a measured, not a datasheet, peak);
- compile_s, and the compiled memory analysis: temp_bytes and peak_bytes (arguments + outputs
  - aliased + temporaries);
- with torch installed, the same model and SimCLR step in PyTorch (``torch_ref.py``), best of
  channels-last and contiguous, and the ratio;
- by default the JAX step once more under XLA's own default flags, so what sslax's tuned
  XLA:CPU flags (``sslax.runtime``) buy is measured, not assumed.

Other kinds: the InfoNCE loss alone (dense and chunked, value and gradient), view making
alone (``augment.two_views``), and the grain input pipeline alone next to the step that
consumes it.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "experiments" / "configs"

_SUITE = flags.DEFINE_enum("suite", "cpu", ["cpu", "gpu"], "Which sizes to run.")
_OUT = flags.DEFINE_string("out", None, "Folder for bench.json.")
_CASES = flags.DEFINE_list("cases", [], "Only these cases (names; default: the whole suite).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per measurement.", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls after compiling.", lower_bound=1)
_TORCH = flags.DEFINE_bool("torch", True, "Run the PyTorch side where a case has one.")
_XLA_DEFAULT = flags.DEFINE_bool(
    "xla_default", True, "Also time each step case under XLA's default flags (CPU only)."
)
_CHILD = flags.DEFINE_string("child", None, "Internal: run one measurement and print json.")


@dataclasses.dataclass(frozen=True)
class Case:
    """One measurement. ``kind`` is step | loss | augment | pipeline | peak."""

    name: str
    kind: str
    config: str = "simclr.py"  # under experiments/configs
    overrides: tuple = ()  # (field, value) pairs applied to the config
    torch: bool = False  # a PyTorch twin exists (SimCLR ResNets and ViTs)
    options: tuple = ()  # kind-specific (key, value) pairs

    def config_dict(self):
        """The case's config with its overrides applied (imports the config file)."""
        spec = importlib.util.spec_from_file_location("bench_config", CONFIGS / self.config)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
        with config.unlocked():
            for field, value in self.overrides:
                node = config
                *parents, leaf = field.split(".")
                for p in parents:
                    node = node[p]
                node[leaf] = value
        return config


def _r18_cifar(batch, dtype):
    return (
        ("model", "resnet18"),
        ("width", 1.0),
        ("stem", "cifar"),
        ("batch_size", batch),
        ("compute_dtype", dtype),
    )


def _vit_tiny_32(batch, dtype):
    return (
        ("model", "vit_tiny"),
        ("patch_size", 4),
        ("batch_size", batch),
        ("compute_dtype", dtype),
    )


def _suite(name: str) -> list[Case]:
    """Sizes per suite: the 2-core CPU runs each step in seconds, the GPU at paper batches."""
    cpu = name == "cpu"

    def b(cpu_size, gpu_size):
        return cpu_size if cpu else gpu_size

    accel = "float32" if cpu else "bfloat16"
    # The two networks run side by side with PyTorch, in both dtypes.
    cases = [
        Case(f"{label}_{suffix}", "step", overrides=overrides(b(64, 512), dtype), torch=True)
        for label, overrides in (
            ("simclr_resnet18_cifar32", _r18_cifar),
            ("simclr_vit_tiny4_32px", _vit_tiny_32),
        )
        for dtype, suffix in (("float32", "f32"), ("bfloat16", "bf16"))
    ]
    cases += [
        Case("simclr_laptop_default", "step"),  # the README command's config, as is
        Case(
            "simclr_resnet50_224px",
            "step",
            "simclr_imagenet.py",
            (("batch_size", b(8, 256)), ("compute_dtype", accel)),
            torch=True,
        ),
        Case(
            "byol_resnet50_224px",
            "step",
            "byol_imagenet.py",
            (("batch_size", b(8, 256)), ("compute_dtype", accel)),
        ),
        Case(
            "dino_vit_small16_multicrop",
            "step",
            "dino_imagenet.py",
            (("batch_size", b(4, 128)), ("compute_dtype", accel)),
        ),
        Case(
            "dino_vit_base16_multicrop",
            "step",
            "dino_imagenet.py",
            (("batch_size", b(2, 64)), ("compute_dtype", accel), ("model", "vit_base")),
        ),
    ]
    for n in b((256, 1024, 4096), (4096, 16384, 65536)):
        for chunk in (0, 256 if cpu else 1024):
            label = f"chunked{chunk}" if chunk else "dense"
            cases.append(
                Case(
                    f"loss_info_nce_{label}_b{n}",
                    "loss",
                    options=(("batch", n), ("dim", 128), ("chunk", chunk)),
                )
            )
    cases += [
        Case("augment_two_views_32px", "augment", options=(("batch", b(256, 4096)), ("size", 32))),
        Case(
            "augment_two_views_224px",
            "augment",
            "simclr_imagenet.py",
            options=(("batch", b(32, 512)), ("size", 224)),
        ),
        Case(
            "input_pipeline_shapes_32px",
            "pipeline",
            options=(("consumer", "simclr_laptop_default"),),
        ),
    ]
    return cases


# ----------------------------------------------------------------------------- child side


def _median_s(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    temp, args = m.temp_size_in_bytes, m.argument_size_in_bytes
    out, alias = m.output_size_in_bytes, m.alias_size_in_bytes
    return {"temp_bytes": int(temp), "peak_bytes": int(args + out - alias + temp)}


def _loops_hold_matmuls(hlo_text: str) -> bool:
    """Whether a while loop of the program runs a dot or convolution (at any nesting depth).

    XLA's cost analysis counts a loop body once, so such a program's FLOPs are under-counted
    (the chunked loss). The random-number loops of every step (threefry rounds) hold none.
    """
    bodies, name = {}, None
    for line in hlo_text.splitlines():
        if line.startswith(("%", "ENTRY")) and line.rstrip().endswith("{"):
            name = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            bodies[name] = []
        elif name:
            bodies[name].append(line)
    refs = re.compile(r"%([\w.\-]+)")
    todo = [
        m
        for text in bodies.values()
        for line in text
        if " while(" in line
        for m in re.findall(r"body=%([\w.\-]+)", line)
    ]
    seen = set()
    while todo:
        comp = todo.pop()
        if comp in seen or comp not in bodies:
            continue
        seen.add(comp)
        for line in bodies[comp]:
            if " dot(" in line or " convolution(" in line:
                return True
            for key in ("calls=", "body=", "to_apply=", "branch_computations="):
                if key in line:
                    todo += refs.findall(line.split(key, 1)[1].split(", metadata")[0])
    return False


def _flops(compiled) -> float | None:
    """The compiled program's FLOPs; None when a loop hides matmuls XLA would count once."""
    if _loops_hold_matmuls(compiled.as_text()):
        return None
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _random_batch(n: int, size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "index": np.arange(n, dtype=np.int32),
    }


def _child_step(case: Case, repeats: int, warmup: int) -> dict:
    import jax

    from sslax import methods

    config = case.config_dict()
    method = methods.get(config.method).make(config)
    batch = _random_batch(config.batch_size, config.image_size)
    key = jax.random.key(0)
    state = jax.jit(method.init)(key, batch["image"][:1])
    start = time.perf_counter()
    compiled = jax.jit(method.train_step, donate_argnums=0).lower(state, batch, key).compile()
    compile_s = time.perf_counter() - start
    holder = [state]

    def step():
        holder[0], metrics = compiled(holder[0], batch, key)
        jax.block_until_ready(metrics)
        return metrics

    seconds = _median_s(step, repeats, warmup)
    loss = float(step()["loss"])
    if loss != loss:
        raise FloatingPointError(f"{case.name}: the step's loss is NaN")
    return {
        "batch_size": config.batch_size,
        "image_size": config.image_size,
        "model": config.model,
        "compute_dtype": config.compute_dtype,
        "step_ms": seconds * 1e3,
        "images_per_s": config.batch_size / seconds,
        "flops_per_step": _flops(compiled),
        "compile_s": compile_s,
        **_memory(compiled),
    }


def _child_loss(case: Case, repeats: int, warmup: int) -> dict:
    import jax

    from sslax import losses

    opts = dict(case.options)
    n, dim, chunk = opts["batch"], opts["dim"], opts["chunk"]
    z1, z2 = jax.random.normal(jax.random.key(0), (2, n, dim))

    def loss(a, b):
        return losses.info_nce(a, b, temperature=0.1, chunk_size=chunk or None)

    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(z1, z2).compile()
    compile_s = time.perf_counter() - start
    seconds = _median_s(lambda: jax.block_until_ready(compiled(z1, z2)), repeats, warmup)
    return {
        "batch_size": n,
        "compute_dtype": "float32",
        "step_ms": seconds * 1e3,
        "images_per_s": n / seconds,
        "flops_per_step": _flops(compiled),
        "compile_s": compile_s,
        **_memory(compiled),
    }


def _child_augment(case: Case, repeats: int, warmup: int) -> dict:
    import jax

    from sslax import augment
    from sslax.methods import common

    opts = dict(case.options)
    config = case.config_dict()
    with config.unlocked():
        config.image_size = opts["size"]
    recipe = common.view_recipe(config)
    batch = _random_batch(opts["batch"], opts["size"])
    fn = jax.jit(lambda k, x, i: augment.two_views(k, x, recipe, indices=i))
    args = (jax.random.key(0), batch["image"], batch["index"])
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    seconds = _median_s(lambda: jax.block_until_ready(compiled(*args)), repeats, warmup)
    return {
        "batch_size": opts["batch"],
        "image_size": opts["size"],
        "compute_dtype": "float32",
        "step_ms": seconds * 1e3,
        "images_per_s": opts["batch"] / seconds,
        "flops_per_step": _flops(compiled),
        "compile_s": compile_s,
        **_memory(compiled),
    }


def _child_pipeline(case: Case, repeats: int, warmup: int) -> dict:
    from sslax.data import pipeline

    config = case.config_dict()  # the consumer's config: the laptop default
    source = pipeline.get_source(config.dataset, config.train_split, image_size=config.image_size)
    steps = (warmup + repeats) * 10
    batches = pipeline.train_batches(
        source, global_batch_size=config.batch_size, seed=0, start_step=0, end_step=steps
    )
    for _ in range(warmup * 10):
        next(batches)
    start = time.perf_counter()
    for _ in range(repeats * 10):
        next(batches)
    seconds = (time.perf_counter() - start) / (repeats * 10)
    return {
        "batch_size": config.batch_size,
        "image_size": config.image_size,
        "step_ms": seconds * 1e3,
        "images_per_s": config.batch_size / seconds,
    }


def _child_peak(repeats: int, warmup: int) -> dict:
    """Dense matmul FLOP/s per dtype (float32 accumulation), the roofline for MFU."""
    import jax
    import jax.numpy as jnp

    n = 4096 if jax.default_backend() == "cpu" else 16384
    peaks = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        a = jnp.ones((n, n), dtype)
        fn = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
        seconds = _median_s(lambda: jax.block_until_ready(fn(a, a)), repeats, warmup)
        peaks[name] = 2 * n**3 / seconds
    return peaks


def _child_torch(case: Case, repeats: int, warmup: int) -> dict:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import torch_ref

    config = case.config_dict()
    convnet = config.model.startswith("resnet")
    runs = [
        torch_ref.time_simclr_step(config, channels_last=cl, repeats=repeats, warmup=warmup)
        for cl in ((True, False) if convnet else (False,))
    ]
    best = min(runs, key=lambda r: r["step_s"])
    return {
        "torch_images_per_s": config.batch_size / best["step_s"],
        "torch_setting": best["setting"],
    }


def _child_model(name: str, suite: str) -> str:
    """The model a child measures, which picks its XLA:CPU preset."""
    case = {c.name: c for c in _suite(suite)}[name.partition(":")[2]]
    return case.config_dict().model


def child_main(name: str, suite: str, repeats: int, warmup: int) -> dict:
    if name == "peak":
        return _child_peak(repeats, warmup)
    side, _, case_name = name.partition(":")
    case = {c.name: c for c in _suite(suite)}[case_name]
    if side == "torch":
        return _child_torch(case, repeats, warmup)
    return {
        "step": _child_step,
        "loss": _child_loss,
        "augment": _child_augment,
        "pipeline": _child_pipeline,
    }[case.kind](case, repeats, warmup)


# ---------------------------------------------------------------------------- parent side


def _run_child(name: str, *, tuned_xla: bool) -> dict:
    """One measurement in a fresh interpreter; its json is the last line of its stdout."""
    env = dict(os.environ)
    env["SSLAX_XLA_FLAGS"] = "tuned" if tuned_xla else "default"
    cmd = [
        sys.executable,
        __file__,
        f"--child={name}",
        f"--suite={_SUITE.value}",
        f"--repeats={_REPEATS.value}",
        f"--warmup={_WARMUP.value}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine() -> dict:
    versions = {"python": platform.python_version()}
    for module in ("jax", "jaxlib", "flax", "optax", "grain", "numpy", "torch"):
        try:
            versions[module] = importlib.import_module(module).__version__
        except ImportError:
            pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def print_table(records: list[dict]) -> None:
    header = (
        f"{'case':38} {'img/s':>9} {'torch':>8} {'ratio':>6} {'xla dflt':>9} "
        f"{'GFLOP/step':>11} {'MFU':>6} {'compile s':>9} {'temp MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in records:
        if "error" in r:
            print(f"{r['name']:38} error: {r['error'].splitlines()[-1][:80]}")
            continue
        flops = r.get("flops_per_step")
        temp = r.get("temp_bytes")
        print(
            f"{r['name']:38} {_fmt(r.get('jax_images_per_s'), ',.1f'):>9} "
            f"{_fmt(r.get('torch_images_per_s'), ',.1f'):>8} {_fmt(r.get('ratio'), '.2f'):>6} "
            f"{_fmt(r.get('xla_default_images_per_s'), ',.1f'):>9} "
            f"{_fmt(flops / 1e9 if flops else None, ',.1f'):>11} "
            f"{_fmt(r['mfu'] * 100, '.1f') + '%' if r.get('mfu') else '-':>6} "
            f"{_fmt(r.get('compile_s'), '.1f'):>9} "
            f"{_fmt(temp / 2**20 if temp is not None else None, ',.1f'):>9}"
        )


def parent_main() -> None:
    if not _OUT.value:
        raise app.UsageError("--out=DIR is required")
    cases = _suite(_SUITE.value)
    known = {c.name for c in cases}
    unknown = [name for name in _CASES.value if name not in known]
    if unknown:
        raise app.UsageError(
            f"unknown case(s) {', '.join(unknown)}; the {_SUITE.value} suite has: "
            + ", ".join(sorted(known))
        )
    if _CASES.value:
        cases = [c for c in cases if c.name in _CASES.value]
    out = pathlib.Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    # torch_ref runs on the CPU: its numbers sit beside the CPU suite only.
    use_torch = _TORCH.value and _SUITE.value == "cpu" and _torch_available()
    if _TORCH.value and _SUITE.value == "cpu" and not use_torch:
        print("torch is not installed (pip install -e '.[bench]'): JAX side only")
    from sslax import runtime

    report = {
        "machine": _machine(),
        "suite": _SUITE.value,
        "repeats": _REPEATS.value,
        "warmup": _WARMUP.value,
        "tuned_xla_flags": {
            p: runtime.tuned_xla_flags("", m)
            for p, m in (("convnet", "resnet"), ("transformer", "vit"))
        },
        # Under XLA's default flags: both presets take YNNPACK's bfloat16 matmul path away
        # (65-70 GFLOP/s instead of ~310 on the 2-core CPU), which no step here relies on.
        "peak_flops": _run_child("peak", tuned_xla=False),
        "cases": [],
    }
    peaks = report["peak_flops"]
    # The parent never starts a JAX backend (on a GPU it would hold the memory the children
    # need): the peak child says which backend the children see.
    report["machine"]["jax_backend"] = peaks.pop("backend", None)
    report["machine"]["devices"] = peaks.pop("devices", None)
    cpu = report["machine"]["jax_backend"] == "cpu"
    step_rates = {}
    for case in cases:
        print(f"[{datetime.datetime.now():%H:%M:%S}] {case.name}", flush=True)
        result = _run_child(f"jax:{case.name}", tuned_xla=True)
        record = {"name": case.name, "kind": case.kind, **result}
        if "images_per_s" in result:
            record["jax_images_per_s"] = record.pop("images_per_s")
            flops, dtype = result.get("flops_per_step"), result.get("compute_dtype")
            if flops and dtype in peaks:
                record["mfu"] = flops / (result["step_ms"] / 1e3) / peaks[dtype]
            if case.kind == "step":
                step_rates[case.name] = record["jax_images_per_s"]
                if cpu and _XLA_DEFAULT.value:
                    default = _run_child(f"jax:{case.name}", tuned_xla=False)
                    record["xla_default_images_per_s"] = default.get("images_per_s")
            if case.kind == "pipeline":
                consumer = dict(case.options)["consumer"]
                record["consumer_images_per_s"] = step_rates.get(consumer)
        if case.torch and use_torch and "error" not in result:
            theirs = _run_child(f"torch:{case.name}", tuned_xla=True)
            if "error" in theirs:
                theirs = {"torch_error": theirs["error"]}
            record.update(theirs)
            if "torch_images_per_s" in theirs:
                record["ratio"] = record["jax_images_per_s"] / theirs["torch_images_per_s"]
        report["cases"].append(record)
        (out / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    print_table(report["cases"])
    print(
        "peak matmul FLOP/s: "
        + ", ".join(f"{k} {v / 1e9:,.0f} G" for k, v in peaks.items() if isinstance(v, float))
    )
    print(f"wrote {out / 'bench.json'}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _CHILD.value:
        # The matmul peak always runs under XLA's defaults (parent_main).
        if _CHILD.value != "peak" and os.environ.get("SSLAX_XLA_FLAGS", "tuned") == "tuned":
            from sslax import runtime

            runtime.use_tuned_xla_flags(_child_model(_CHILD.value, _SUITE.value))
        result = child_main(_CHILD.value, _SUITE.value, _REPEATS.value, _WARMUP.value)
        print(json.dumps(result))
        return
    parent_main()


if __name__ == "__main__":
    app.run(main)
