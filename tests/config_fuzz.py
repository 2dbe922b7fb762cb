"""Random configs for the property tests of tests/test_config_fuzz.py.

A draw starts from the laptop config of a random method and changes a random handful of fields,
each to a value from its pool: typical values, edge values (0, 1, the largest that works, one
beyond) and deliberately bad ones. A pool entry is ``(value, bad)``: ``bad`` is True when the
value is refused whatever the other fields hold, None when that depends on them (a patch size
against the image size, a queue against the batch). So a draw that holds a ``bad`` value must
fail validation, and any other draw must either fail it or run.

Small models, images and batches keep a trace fast; the large models are drawn too (tracing
costs the same whatever the width).
"""

from __future__ import annotations

import dataclasses
import random

from sslax import configs, methods

OK, BAD, DEPENDS = False, True, None


def _ok(*values):
    return [(v, OK) for v in values]


def _bad(*values):
    return [(v, BAD) for v in values]


def _depends(*values):
    return [(v, DEPENDS) for v in values]


# The pools. "{total}" stands for the drawn total_steps and "{batch}" for the drawn batch size,
# so that edges at and beyond them are drawn: resolved by _resolve.
TOP = {
    "model": _ok("resnet18", "resnet18", "resnet34", "resnet50", "vit_tiny", "vit_small")
    + _ok("vit_base")
    + _bad("resnet19", ""),
    "width": _ok(0.125, 0.125, 0.25, 0.01, 1.0) + _bad(0.0, -0.5),
    "stem": _ok("imagenet", "cifar") + _bad("tiny"),
    "patch_size": _depends(4, 8, 16, 3, 32) + _bad(0, -8),
    "image_size": _depends(8, 16, 16, 24, 32, 48) + _bad(7, 1, 0, -32),
    "compute_dtype": _ok("float32", "bfloat16") + _bad("float16"),
    "proj_hidden_dim": _ok(1, 16, 64) + _bad(0, -1),
    "proj_dim": _ok(1, 8, 16) + _bad(0),
    "batch_size": _depends(1, 2, 3, 8, 16, 16, 24, 32) + _bad(0, -16),
    "total_steps": _ok(1, 2, 10, 100, 800) + _bad(0, -1),
    "optimizer": _ok("lars", "sgd", "adamw") + _bad("adam"),
    "learning_rate": _ok(0.1, 1.0, 1e3, 1e-9) + _bad(0.0, -1.0),
    "lr_scaling": _ok("linear", "sqrt", "none") + _bad("cubic"),
    "warmup_steps": _ok(0, 1, 25, "{total}", "{total}+1", "{total}*10") + _bad(-1),
    "weight_decay": _ok(0.0, 1e-6, 0.5) + _bad(-1e-4),
    "momentum": _ok(0.0, 0.9, 1.0) + _bad(1.5, -0.1),
    "temperature": _ok(0.05, 0.5, 10.0) + _bad(0.0, -0.5),
    "recipe": _ok("simclr", "moco_v2", "byol", "crop") + _bad("dino", "none"),
    "augment_strength": _ok(0.0, 0.5, 1.0, 3.0) + _bad(-0.5),
    "augment_blur": _ok(True, False),
    "crop_min_scale": _ok(0.08, 0.25, 1.0) + _bad(0.0, 1.5, -0.1),
    "data_workers": _ok(-1, 0, 2) + _bad(-2),
    "dct_downscale": _ok(True, False),
    "crop_fraction": _ok(0.875, 1.0, 0.5) + _bad(0.0, 1.5),
    "prefetch_batches": _ok(0, 2) + _bad(-1),
    "seed": _ok(0, 1, 2**31, 2**62 - 1) + _bad(-1, 2**62, 2**63),
    "log_every": _ok(0, 1, 2, "{total}", "{total}+1") + _bad(-1),
    "checkpoint_every": _ok(0, 1, 3, "{total}", "{total}*2") + _bad(-2),
    "eval_every": _ok(0, 1, "{total}", "{total}+5") + _bad(-1),
    "profile_steps": _ok((), (0, 1), (0, "{total}"))
    + _depends((1, 2), (5, 7))
    + _bad((3, 3), (2, 1), (-1, 1), (0, "{total}+1"), (1,)),
    "collapse_threshold": _ok(0.0, 0.1, 10.0) + _bad(-0.1),
    "collapse_patience": _ok(1, 3) + _bad(0, -1),
    "knn_k": _ok(1, 20) + _depends(200, 20_000) + _bad(0, -5, 20_001),
    "knn_temperature": _ok(0.07, 1.0) + _bad(0.0, -0.07),
    "knn_train_examples": _ok(2, 200, 20_000, 10**9) + _depends(1, 19) + _bad(0, -1),
    "knn_test_examples": _ok(2, 64, 4_000, 10**9) + _depends(1) + _bad(0, -1),
    "diagnostics_examples": _ok(2, 32, 512, 10**9) + _bad(1, 0, -1),
    "eval_linear_probe": _ok(True, False),
    "mesh": _ok((("data", -1),), (("data", 2), ("fsdp", 4)), (("fsdp", -1),), (("data", 8),))
    + _depends((("data", 4), ("fsdp", 2)))
    + _bad((("data", 3),), (("data", 16),), (("model", 8),), (("data", -1), ("fsdp", -1)), ()),
    "dataset": _ok("shapes") + _bad("imagenet", "tfds:no_such_dataset_xyz"),
    "train_split": _ok("train") + _bad("validation"),
    "eval_split": _ok("test") + _bad("val"),
}

SECTIONS = {
    "simclr": {
        "loss_chunk_size": _ok(0) + _depends(2, 4, 8, 16, 3, 64) + _bad(-4),
        "projection_head": _ok("mlp", "linear", "none") + _bad("mpl"),
    },
    "moco_v2": {
        "momentum": _ok(0.0, 0.99, 1.0) + _bad(1.01),
        "queue_size": _depends("{batch}", "{batch}*4", 64, 4096, "{batch}+1") + _bad(0, -64),
        "shuffle_bn_groups": _depends(1, 2, 4, 8, 3) + _bad(0, -2),
        "symmetric": _ok(True, False),
        "negatives": _ok(True, False),
    },
    "moco_v3": {
        "momentum_base": _ok(0.0, 0.99, 1.0) + _bad(-0.1, 1.2),
        "pred_hidden_dim": _ok(1, 32) + _bad(0),
        "negatives": _ok(True, False),
    },
    "byol": {
        "predictor_hidden_dim": _ok(1, 32) + _bad(0),
        "ema_base": _ok(0.0, 0.9, 1.0) + _bad(1.5),
        "stop_gradient": _ok(True, False),
    },
    "simsiam": {
        "predictor_hidden_dim": _ok(1, 16) + _bad(0, -16),
        "fixed_predictor_lr": _ok(True, False),
        "stop_gradient": _ok(True, False),
    },
    "dino": {
        "out_dim": _ok(1, 2, 64) + _bad(0),
        "hidden_dim": _ok(1, 32) + _bad(0),
        "bottleneck_dim": _ok(1, 16) + _bad(0),
        "num_layers": _ok(1, 2, 3, 4) + _bad(0, -1),
        "use_bn_in_head": _ok(True, False),
        "norm_last_layer": _ok(True, False),
        "local_size": _depends(8, 16, 24, 32, 4, 6, 1, 64) + _bad(0, -8),
        "num_local": _ok(0, 1, 2, 6) + _bad(-1),
        "teacher_momentum_base": _ok(0.0, 0.996, 1.0) + _bad(1.001),
        "student_temp": _ok(0.1, 1.0) + _bad(0.0),
        "teacher_temp": _ok(0.04, 0.07) + _bad(-0.04),
        "warmup_teacher_temp": _ok(0.04, 0.02) + _bad(0.0),
        "warmup_teacher_temp_steps": _ok(0, 1, "{total}", "{total}*3") + _bad(-1),
        "center_momentum": _ok(0.0, 0.9, 1.0) + _bad(2.0),
        "centering": _ok(True, False),
        "sharpening": _ok(True, False),
        "weight_decay_end": _ok(0.0, 0.4) + _bad(-0.4),
        "clip_grad": _ok(0.0, 3.0) + _bad(-1.0),
        "freeze_last_layer_steps": _ok(0, 1, "{total}", "{total}+10") + _bad(-1),
        "drop_path_rate": _ok(0.0, 0.1, 0.9) + _bad(1.0, -0.1),
        "koleo_weight": _ok(0.0, 0.1) + _bad(-0.1),
        "views": _ok("dino", "recipe") + _bad("simclr"),
        "centering_mode": _ok("centering", "sinkhorn_knopp") + _bad("none"),
        "sinkhorn_iters": _ok(1, 3) + _bad(0),
    },
    "barlow_twins": {
        "expander_dim": _ok(1, 32) + _bad(0),
        "lambd": _ok(0.0, 0.005) + _bad(-1.0),
        "redundancy_reduction": _ok(True, False),
        "bias_lr_ratio": _ok(0.0, 0.024, 1.0) + _bad(-0.1),
    },
    "vicreg": {
        "expander_dim": _ok(1, 32) + _bad(0),
        "sim_coeff": _ok(0.0, 25.0) + _bad(-25.0),
        "std_coeff": _ok(0.0, 25.0) + _bad(-1.0),
        "cov_coeff": _ok(0.0, 1.0) + _bad(-1.0),
        "variance": _ok(True, False),
    },
    "swav": {
        "num_prototypes": _ok(1, 2, 30) + _bad(0),
        "epsilon": _ok(0.05, 1.0) + _bad(0.0),
        "sinkhorn_iters": _ok(1, 3) + _bad(0),
        "freeze_prototypes_steps": _ok(0, 1, "{total}+10") + _bad(-1),
        "queue_size": _ok(0, "{batch}", "{batch}*3") + _depends(5) + _bad(-16),
        "queue_start_step": _ok(0, 1, "{total}+1") + _bad(-1),
        "num_local": _ok(0, 1, 2) + _bad(-1),
        "local_size": _depends(8, 16, 4, 64) + _bad(0),
        "local_min_scale": _depends(0.05, 0.3, 0.9) + _bad(0.0, 1.5),
    },
    "nnclr": {
        "queue_size": _ok("{batch}", "{batch}*4") + _depends(7) + _bad(0),
        "pred_hidden_dim": _ok(1, 32) + _bad(0),
        "proj_layers": _ok(1, 2, 3) + _bad(0),
    },
    "supcon": {},
    "mae": {
        "mask_ratio": _ok(0.5, 0.75) + _depends(0.9) + _bad(0.0, 1.0),
        "decoder_dim": _ok(16, 32) + _depends(6) + _bad(0),
        "decoder_depth": _ok(1, 2) + _bad(0),
        "decoder_heads": _ok(1, 2) + _bad(0),
        "norm_pix": _ok(True, False),
        "adam_b2": _ok(0.95, 0.0) + _bad(1.0),
    },
    "dinov2": {
        "koleo_weight": _ok(0.0, 0.1) + _bad(-1.0),
        "ibot_weight": _ok(0.0, 1.0) + _bad(-1.0),
        "mask_probability": _ok(0.0, 0.5, 1.0) + _bad(1.5),
        "mask_ratio_min": _depends(0.1, 0.6) + _bad(-0.1),
        "mask_ratio_max": _depends(0.5, 0.05, 1.0) + _bad(2.0),
        "centering_mode": _ok("centering", "sinkhorn_knopp") + _bad("none"),
        "use_bn_in_head": _ok(False) + _bad(True),
        "sinkhorn_iters": _ok(1, 3) + _bad(0),
        "local_size": _depends(8, 16, 4, 6) + _bad(0),
        "num_local": _ok(0, 1, 2) + _bad(-1),
    },
}


@dataclasses.dataclass
class Draw:
    """One random config, what was changed, and the fields set to values always refused."""

    config: object
    changes: dict
    bad_fields: list

    def describe(self) -> str:
        return f"{self.config.method}: " + ", ".join(f"{k}={v!r}" for k, v in self.changes.items())


def _resolve(value, total: int, batch: int):
    """Fills in "{total}" and "{batch}" (also inside tuples): "{total}+1" -> total + 1."""
    if isinstance(value, tuple):
        return tuple(_resolve(v, total, batch) for v in value)
    if isinstance(value, str) and value.startswith("{"):
        return eval(value.format(total=total, batch=batch), {})  # noqa: S307 - own pools only
    return value


def tiny_base(method: str):
    """The laptop config at sizes that trace fast: 16 px, batch 16, narrow heads."""
    c = configs.shapes_config(method)
    c.image_size, c.batch_size, c.total_steps = 16, 16, 10
    c.proj_hidden_dim, c.proj_dim, c.patch_size = 32, 16, 8
    c.knn_train_examples, c.knn_test_examples, c.diagnostics_examples = 200, 64, 32
    c.moco_v2.queue_size = 64
    c.moco_v2.shuffle_bn_groups = 2
    c.dino.out_dim, c.dino.hidden_dim, c.dino.bottleneck_dim = 64, 32, 16
    if method == "dino":  # other methods refuse local crops changed from DINO's defaults
        c.dino.local_size, c.dino.num_local = 8, 2
    for section in ("barlow_twins", "vicreg"):
        c[section].expander_dim = 32
    c.byol.predictor_hidden_dim = c.moco_v3.pred_hidden_dim = 32
    c.swav.num_prototypes, c.swav.local_size, c.swav.num_local = 10, 8, 2
    c.nnclr.queue_size, c.nnclr.pred_hidden_dim = 64, 32
    c.mae.decoder_dim, c.mae.decoder_heads = 16, 2
    c.dinov2.out_dim, c.dinov2.hidden_dim, c.dinov2.bottleneck_dim = 64, 32, 16
    c.dinov2.local_size, c.dinov2.num_local = 8, 2
    return c


def draw(
    rng: random.Random, *, max_changes: int = 6, bad_share: float = 0.25, fixed: dict | None = None
) -> Draw:
    """A random config: a method's tiny base with 1 to ``max_changes`` fields redrawn.

    About ``bad_share`` of the draws set one field to a value that is always refused; the other
    fields get values that may work or not depending on the rest. ``fixed`` fields (top-level)
    are set on the base and never redrawn, e.g. ``{"total_steps": 2}`` for a run that is short.
    """
    fixed = fixed or {}
    method = rng.choice(methods.METHODS)
    config = tiny_base(method)
    config.update(fixed)
    pools = [(None, name) for name in TOP if name not in fixed]
    # The method's own section is drawn twice as often: it is where most of the edges are.
    pools += 2 * [(method, name) for name in SECTIONS[method]]
    chosen = list(dict.fromkeys(rng.sample(pools, rng.randint(1, max_changes))))
    # total_steps and batch_size first: the other pools' edges are relative to them.
    chosen.sort(key=lambda p: p[1] not in ("total_steps", "batch_size"))
    bad_at = rng.randrange(len(chosen)) if rng.random() < bad_share else None
    changes, bad_fields = {}, []
    for i, (section, name) in enumerate(chosen):
        pool = (SECTIONS[section] if section else TOP)[name]
        wanted = [entry for entry in pool if bool(entry[1]) == (i == bad_at)]
        value, bad = rng.choice(wanted or pool)
        value = _resolve(value, max(config.total_steps, 1), max(config.batch_size, 1))
        field = f"{section}.{name}" if section else name
        config.update_from_flattened_dict({field: value})
        changes[field] = value
        if bad:
            bad_fields.append(field)
    return Draw(config=config, changes=changes, bad_fields=bad_fields)


def as_flags(d: Draw) -> list[str]:
    """The draw as ``python -m sslax.train`` flags over the default config file."""
    base = tiny_base(d.config.method)
    flags = [f"--config.method={d.config.method}"]
    for key in base:
        if key not in methods.METHODS and key != "method":
            flags.append(_flag(key, d.config[key]))
    for key in base[d.config.method]:
        flags.append(_flag(f"{d.config.method}.{key}", d.config[d.config.method][key]))
    return flags


def _flag(field: str, value) -> str:
    return f"--config.{field}={value if isinstance(value, str) else repr(value)}"


# --------------------------------------------------------------------------------------------
# Checking a draw: refused with a ConfigError, or traced. Anything else is a finding.

NUM_DEVICES = 8  # the test setting's simulated devices


def check(d: Draw, num_devices: int = NUM_DEVICES) -> tuple[str, str | None]:
    """("refused" | "traced", None), or (the outcome, what went wrong) for a finding.

    Traced: ``jax.eval_shape`` of the state's init, of the jitted train step over the mesh (of
    the first ``num_devices`` devices) and of the encoder, as
    :func:`sslax.train.build_program` builds them: nothing is compiled.
    """
    import jax

    from sslax import configs, parallel, train

    try:
        configs.validate_config(d.config, num_devices=num_devices)
    except configs.ConfigError as e:
        if "\n" in str(e):
            return "refused", f"a ConfigError of several lines: {e!r}"
        return "refused", None
    except Exception as e:  # noqa: BLE001 - anything but a ConfigError is the finding
        return "crashed", f"validation raised {type(e).__name__}: {e}"
    if d.bad_fields:
        return "accepted", f"validation let through {', '.join(d.bad_fields)}"
    try:
        mesh = parallel.make_mesh(d.config.mesh, devices=jax.devices()[:num_devices])
        with jax.set_mesh(mesh):
            program = train.build_program(d.config, mesh)
            key = jax.random.key(0)
            batch = program.batch_shapes()
            jax.eval_shape(program.step, program.state_shapes, batch, key)
            jax.eval_shape(program.method.encode, program.state_shapes, batch["image"])
    except Exception as e:  # noqa: BLE001
        return "crashed", f"tracing raised {type(e).__name__}: {str(e)[:500]}"
    return "traced", None


def run(seed: int, draws: int, shard: int = 0, shards: int = 1) -> dict:
    """Checks draws ``shard, shard + shards, ...`` of ``draws`` from ``seed``: their outcomes."""
    rng = random.Random(seed)
    counts = {"refused": 0, "traced": 0}
    findings = []
    for i in range(draws):
        d = draw(rng)  # every shard draws every config, to keep the sequence of the seed
        if i % shards != shard:
            continue
        outcome, finding = check(d)
        counts[outcome] = counts.get(outcome, 0) + 1
        if finding:
            findings.append(f"draw {i} ({d.describe()}): {finding}")
    return {"counts": counts, "findings": findings}


def main(argv) -> None:
    """``python tests/config_fuzz.py SEED DRAWS SHARD SHARDS``: prints run()'s result as JSON.

    Runs in the test setting (the repository's conftest.py: 8 CPU devices, tuned XLA flags).
    """
    import importlib.util
    import json
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("root_conftest", root / "conftest.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    seed, draws, shard, shards = (int(a) for a in argv)
    print(json.dumps(run(seed, draws, shard, shards)))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
