"""Short in-process runs whose every number is compared bit for bit (tests/golden/)."""

import json
import pathlib

from sslax import configs

# Fields of results.json and metrics.jsonl that are clocks, not computations.
TIMING = ("images_per_s", "input_wait_share", "compile_s", "wall_time_s", "workdir")

# Each exercises logging, checkpointing and a mid-run evaluation at different steps; DINO also
# its teacher, centre, frozen last layer and schedules.
RUNS = {
    "simclr": dict(method="simclr"),
    "dino": {
        "method": "dino",
        "dino.freeze_last_layer_steps": 2,
        "dino.out_dim": 64,
        "dino.hidden_dim": 32,
        "dino.bottleneck_dim": 16,
        "dino.local_size": 8,
        "dino.num_local": 2,
    },
}
COMMON = dict(
    total_steps=6,
    warmup_steps=2,
    batch_size=16,
    image_size=16,
    width=0.125,
    proj_hidden_dim=32,
    proj_dim=16,
    knn_train_examples=200,
    knn_test_examples=64,
    diagnostics_examples=32,
    log_every=2,
    checkpoint_every=3,
    eval_every=3,
)


def config_of(name: str, **extra):
    overrides = {**COMMON, **RUNS[name], **extra}
    config = configs.shapes_config(overrides.pop("method"))
    config.update_from_flattened_dict(overrides)  # dotted keys reach method sections
    return config


def short_run(name: str, workdir: pathlib.Path, **extra) -> dict:
    """Runs ``RUNS[name]`` (with ``extra`` fields) in ``workdir``; returns its results and
    metric records, minus clocks."""
    from sslax import train

    results = train.train_and_evaluate(config_of(name, **extra), workdir)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    strip = lambda d: {k: v for k, v in d.items() if k not in TIMING}  # noqa: E731
    return {"results": strip(results), "metrics": [strip(r) for r in records]}
