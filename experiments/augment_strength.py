r"""Augmentation strength (InfoMin): SimCLR's kNN accuracy from weak to strong colour distortion.

The seed: "If the two views are too similar ... the network can match them with a trivial
low-level feature - a color histogram, a texture - and never learn anything deep. If the views
are too different ... the task becomes noise." At low strength the task is trivial, at extreme
strength impossible, and "somewhere in the middle is the InfoMin sweet spot: hard but
solvable" (Tian et al. 2020). SimCLR's Table 1 (ImageNet linear top-1, ResNet-50) rises with
colour strength: 1/8 -> 59.6, 1/4 -> 61.0, 1/2 -> 62.6, 1 -> 63.2, 1 with blur -> 64.5; the
paper stops at 1, so it shows the weak side of the curve only.

**What the knob scales.** The config field ``augment_strength`` is SimCLR's colour strength s,
passed to :func:`sslax.augment.simclr_recipe`: colour jitter (probability 0.8) with brightness,
contrast and saturation factors drawn from U[max(0, 1 - 0.8 s), 1 + 0.8 s] and a hue shift
from U[-0.2 s, 0.2 s] (capped at 0.5 turns). Nothing else moves: every run keeps the random
resized crop (area in [``crop_min_scale``, 1] = [0.25, 1] of the laptop config, aspect ratio
3/4 to 4/3), the flip (p 0.5) and the grayscale conversion (p 0.2), and blur stays off at 32 px
(SimCLR's CIFAR recipe). So strength 0 is "crop, flip and 20% grayscale", not "no
augmentation", and the sweep is the colour axis of InfoMin; the json lists each run's recipe as
the library built it. The crop is the other axis: ``--crop_min_scales`` adds runs at strength
1 with the crop's minimum area changed (1.0 means no crop at all); they are not in the default
sweep, which fills the time budget.

**Measured.** SimCLR on the built-in shapes data (the laptop config of
:func:`sweep.laptop_config`, temperature 0.5), ``--steps`` steps at batch ``--batch_size``
(the same base as ``temperature.py``, so its tau 0.5 run and the strength 1 run here are the
same config), seed 0, one run per strength. In the shapes data an object's colour and the
background are random per image and the class is the shape, so colour is exactly the
nuisance the jitter should teach the network to ignore. Each run reports kNN and linear-probe
top-1 on the backbone features h of the 4,000 held-out images, and the alignment and
uniformity of z from its final evaluation. Those two are measured on two views of 512
held-out images drawn with *the run's own recipe*: alignment is how well the network matches
the views it was trained to match, so it grows with the strength because the task is harder.

Usage::

    python experiments/augment_strength.py --out=experiments/results/augment_strength
    python experiments/augment_strength.py --out=/tmp/aug --strengths 0 1 2 \
        --crop_min_scales 1.0 0.08 --steps=1000

Runtime: about 8 minutes on 2 CPU cores at the defaults (five runs of 250 steps at batch 256,
each with its own compile and evaluation); each extra run adds about 1.7 minutes. Finished runs
in ``OUT/runs/`` are reused.

Writes ``OUT/augment_strength.json`` (the settings, the paper's Table 1, and per run its recipe
and results) and ``OUT/augment_strength.png`` (kNN and linear top-1 against the strength with
the paper's numbers beside them; alignment and uniformity against the strength; the crop runs
if any).
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import sweep  # noqa: E402
from sslax.methods import common  # noqa: E402

NAME = "augment_strength"
# SimCLR Table 1: ImageNet linear top-1 (%) by colour strength; "1+blur" adds Gaussian blur.
PAPER_TABLE1 = {0.125: 59.6, 0.25: 61.0, 0.5: 62.6, 1.0: 63.2}
PAPER_TABLE1_BLUR = 64.5
RECIPE_FIELDS = (
    "crop_scale",
    "crop_ratio",
    "flip_prob",
    "jitter_prob",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "grayscale_prob",
    "blur_prob",
)
DEFAULTS: dict[str, Any] = {
    "strengths": (0.0, 0.5, 1.0, 1.5, 2.0),
    "crop_min_scales": (),
    "steps": 250,
    "batch_size": 256,
    "seed": 0,
    "overrides": {},  # further laptop-config overrides (tests pass sweep.TINY)
}


def recipe_of(config) -> dict[str, Any]:
    """The first view's recipe as the library builds it from ``config`` (both views are equal)."""
    view = common.view_recipe(config).views[0]
    return {k: getattr(view, k) for k in RECIPE_FIELDS}


def _one_run(out: pathlib.Path, name: str, s: dict[str, Any], knobs: dict) -> dict[str, Any]:
    config = sweep.laptop_config(
        "simclr",
        {
            "total_steps": s["steps"],
            "batch_size": s["batch_size"],
            "seed": s["seed"],
            **s["overrides"],
            **knobs,
        },
    )
    results, history = sweep.run(config, out / "runs" / name)
    return {
        "augment_strength": config.augment_strength,
        "crop_min_scale": config.crop_min_scale,
        "recipe": recipe_of(config),
        **sweep.run_summary(results, history),
    }


def _accuracy_panel(ax, runs: list[dict], key: str, xlabel: str, title: str) -> None:
    x = [r[key] for r in runs]
    ax.plot(x, [r["knn_top1"] for r in runs], "o-", color="C0", label="kNN top-1 (h)")
    ax.plot(x, [r["linear_top1"] for r in runs], "s-", color="C1", label="linear top-1 (h)")
    ax.axhline(runs[0]["knn_top1_raw_pixels"], color="0.5", ls=":", label="kNN, raw pixels")
    ax.axhline(runs[0]["knn_top1_random_init"], color="0.7", ls="--", label="kNN, random init")
    ax.set(xlabel=xlabel, ylabel="held-out top-1 (shapes)", title=title)


def _plot(path: pathlib.Path, report: dict[str, Any]) -> None:
    crop_runs = list(report["crop_runs"].values())
    fig, axes = plt.subplots(1, 3 if crop_runs else 2, figsize=(16 if crop_runs else 11, 4.6))
    s = report["settings"]
    runs = list(report["runs"].values())

    ax = axes[0]
    _accuracy_panel(
        ax,
        runs,
        "augment_strength",
        "colour strength s (augment_strength)",
        f"SimCLR, {s['steps']} steps x batch {s['batch_size']}",
    )
    paper = ax.twinx()
    paper.plot(
        list(PAPER_TABLE1),
        list(PAPER_TABLE1.values()),
        "^--",
        color="C7",
        label="SimCLR Table 1 (ImageNet, right axis)",
    )
    paper.scatter([1.0], [PAPER_TABLE1_BLUR], marker="*", s=80, color="C7", label="... 1 + blur")
    paper.set_ylabel("ImageNet linear top-1 (%)", color="C7")
    handles, labels = ax.get_legend_handles_labels()
    more = paper.get_legend_handles_labels()
    ax.legend(handles + more[0], labels + more[1], fontsize=7, loc="lower right")

    ax = axes[1]
    x = [r["augment_strength"] for r in runs]
    ax.plot(x, [r["alignment"] for r in runs], "o-", color="C3", label="alignment (lower: closer)")
    ax.plot(
        x, [r["uniformity"] for r in runs], "s-", color="C2", label="uniformity (lower: spread)"
    )
    ax.set(
        xlabel="colour strength s (augment_strength)",
        title="z on two views of held-out images, each run's own recipe",
    )
    ax.legend(fontsize=8)

    if crop_runs:
        both = sorted(
            crop_runs + [r for r in runs if r["augment_strength"] == 1.0],
            key=lambda r: r["crop_min_scale"],
        )
        _accuracy_panel(
            axes[2], both, "crop_min_scale", "crop minimum area (crop_min_scale)", "strength 1"
        )
        axes[2].set_xscale("log")
        axes[2].legend(fontsize=7)
    sweep.save_figure(fig, path)


def run(out_dir: str | pathlib.Path, **settings: Any) -> dict[str, Any]:
    """Trains one SimCLR run per strength (and per crop scale); writes the json and png."""
    s = sweep.settings(DEFAULTS, settings)
    s["strengths"] = [float(v) for v in s["strengths"]]
    s["crop_min_scales"] = [float(v) for v in s["crop_min_scales"]]
    if not s["strengths"] or min(s["strengths"]) < 0 or s["steps"] < 1:
        raise ValueError("need at least one strength >= 0 and steps >= 1")
    clash = {"augment_strength", "crop_min_scale", "total_steps", "batch_size", "seed"}
    clash &= set(s["overrides"])
    if clash:
        raise ValueError(f"set {sorted(clash)} by their own settings, not overrides")
    out = pathlib.Path(out_dir)
    runs = {
        f"{v:g}": _one_run(out, f"strength_{v:g}", s, {"augment_strength": v})
        for v in s["strengths"]
    }
    crop_runs = {
        f"{v:g}": _one_run(out, f"crop_{v:g}", s, {"augment_strength": 1.0, "crop_min_scale": v})
        for v in s["crop_min_scales"]
    }
    report = {
        "settings": s,
        "paper_table1_imagenet_linear_top1": {
            **{f"{k:g}": v for k, v in PAPER_TABLE1.items()},
            "1+blur": PAPER_TABLE1_BLUR,
        },
        "runs": runs,
        "crop_runs": crop_runs,
    }
    report = _json_ready(report)
    _plot(out / f"{NAME}.png", report)
    sweep.write_json(out, NAME, report)
    return report


def _json_ready(value: Any) -> Any:
    """Tuples (the recipe's ranges) as lists, so the returned report equals the json."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--strengths", type=float, nargs="+", default=list(DEFAULTS["strengths"]))
    parser.add_argument(
        "--crop_min_scales",
        type=float,
        nargs="*",
        default=list(DEFAULTS["crop_min_scales"]),
        help="extra runs at strength 1 with this crop minimum area (1.0: no crop)",
    )
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = vars(parser.parse_args())
    out = args.pop("out")
    report = run(out, **args)
    print("strength  kNN     linear  alignment  uniformity")
    for name, r in report["runs"].items():
        print(
            f"{name:<9} {r['knn_top1']:.4f}  {r['linear_top1']:.4f}  "
            f"{r['alignment']:.3f}      {r['uniformity']:.3f}"
        )
    for name, r in report["crop_runs"].items():
        print(f"crop_min_scale {name}: kNN {r['knn_top1']:.4f}, linear {r['linear_top1']:.4f}")
    print(f"wrote {out / (NAME + '.json')} and {out / (NAME + '.png')}")


if __name__ == "__main__":
    main()
