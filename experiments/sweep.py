"""What the experiment scripts share: laptop configs, in-process training runs, their records.

An experiment is a handful of ordinary sslax training runs that differ in one knob. Each run is
``sslax.train.train_and_evaluate`` on a config built from the laptop default
(:func:`sslax.configs.shapes_config`) plus the experiment's overrides, in its own workdir under
``OUT/runs/``, so every run is also a normal training workdir (config.json, metrics.jsonl,
curves.png, results.json, checkpoints) that ``python -m sslax.eval`` can read. An interrupted
experiment resumes: a finished run with the same config is read back, not retrained, and an
unfinished one continues from its newest checkpoint.

>>> c = laptop_config("simclr", {"temperature": 0.1, "simclr.projection_head": "linear"})
>>> c.temperature, c.simclr.projection_head, c.is_locked
(0.1, 'linear', True)
>>> laptop_config("simclr", {"temprature": 0.1})
Traceback (most recent call last):
ValueError: no config field 'temprature' (overrides of the laptop config for simclr)
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable

import ml_collections

from sslax import configs

CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"

# The shared views and SimCLR temperature that every number in experiments/README.md was measured
# with: the laptop setting before issue 19 retuned it to colour strength 3, crop area >= 50% and
# tau 0.1 (README, "How the laptop recipe was found"). Pinned, so that each command still
# reproduces its table; the experiments' own overrides (a method's temperature, a swept knob)
# apply on top.
MEASURED_VIEWS = {"augment_strength": 1.0, "crop_min_scale": 0.25}
MEASURED_TEMPERATURE = 0.5

# Smoke-test sizes: seconds per run, the whole script path exercised, nothing measured.
TINY = {
    "batch_size": 16,
    "image_size": 16,
    "width": 0.125,
    "proj_hidden_dim": 32,
    "proj_dim": 16,
    "knn_train_examples": 200,
    "knn_test_examples": 64,
    "diagnostics_examples": 32,
    "warmup_steps": 1,
}


def laptop_config(method: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """The laptop config of ``method`` with ``overrides`` (dotted keys reach method sections)."""
    config = configs.shapes_config(method)
    config.update({**MEASURED_VIEWS, "temperature": MEASURED_TEMPERATURE})
    for dotted, value in overrides.items():
        *sections, name = dotted.split(".")
        node = config
        for section in sections:
            node = node.get(section) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise ValueError(
                f"no config field {dotted!r} (overrides of the laptop config for {method})"
            )
        node[name] = value
    return config.lock()


def file_config(
    name: str, overrides: dict[str, Any], variant: str | None = None
) -> ml_collections.ConfigDict:
    """``experiments/configs/NAME.py``'s ``get_config()`` (``get_config(variant)`` when given,
    as ``--config=NAME.py:variant``) with dotted ``overrides``.

    For experiments that start from a method's own laptop recipe (its optimiser, views and
    heads) rather than the bare :func:`laptop_config`. The config stays locked, so a misspelt
    key raises KeyError.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config() if variant is None else module.get_config(variant)
    # Only the views: a method's file sets its own temperature where it has one.
    config.update_from_flattened_dict({**MEASURED_VIEWS, **overrides})
    return config


def settings(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given``; a name not in ``defaults`` raises TypeError."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    return {**defaults, **given}


def save_figure(fig, path: pathlib.Path) -> None:
    """Lays out, writes and closes a matplotlib figure (every experiment's NAME.png)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def read_history(workdir: pathlib.Path) -> list[dict]:
    """The records of ``metrics.jsonl``, one per log or evaluation step, in order."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def curve(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric over a run (the last record wins for a repeated step)."""
    points = {r["step"]: r[key] for r in history if key in r}
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def run(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    *,
    log_hook: Callable[[int, Any], dict[str, float]] | None = None,
) -> tuple[dict, list[dict]]:
    """Trains and evaluates ``config`` in ``workdir``; returns (results.json, history).

    A workdir whose results.json was written by a run of this same config is read back without
    training (with the history its run logged, hook metrics included); one holding a run of
    another config is refused by sslax.train, untouched. ``log_hook`` is passed to
    :func:`sslax.train.train_and_evaluate`.
    """
    from sslax import train

    workdir = pathlib.Path(workdir)
    results_path, config_path = workdir / "results.json", workdir / "config.json"
    if results_path.is_file() and json.loads(config_path.read_text()) == json.loads(
        config.to_json()
    ):
        print(f"reusing the finished run in {workdir}", flush=True)
        return json.loads(results_path.read_text()), read_history(workdir)
    results = train.train_and_evaluate(config, workdir, log_hook=log_hook)
    return results, read_history(workdir)


def run_summary(results: dict, history: list[dict]) -> dict:
    """What every SimCLR-style experiment reports of one run: its results and final geometry.

    Accuracy and the run's own facts from results.json; alignment, uniformity and effective
    rank of z from the last evaluation record of the history.
    """
    final_eval = [r for r in history if "knn_top1" in r][-1]
    return {
        "knn_top1": results["knn_top1"],
        "linear_top1": results["linear_top1"],
        "final_loss": results["final_loss"],
        "embedding_std": results["embedding_std"],
        "alignment": final_eval["alignment"],
        "uniformity": final_eval["uniformity"],
        "effective_rank": final_eval["effective_rank"],
        "collapse_warning_step": results["collapse_warning_step"],
        "wall_time_s": results["wall_time_s"],
        "knn_top1_random_init": results["knn_top1_random_init"],
        "knn_top1_raw_pixels": results["knn_top1_raw_pixels"],
    }


def write_json(out: pathlib.Path, name: str, report: dict) -> pathlib.Path:
    """Writes ``OUT/NAME.json`` (indented, one trailing newline); returns its path."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path
