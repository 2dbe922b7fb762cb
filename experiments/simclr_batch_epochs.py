"""SimCLR's batch size x epochs x learning-rate scaling (Table B.1) at CPU scale, built-in data.

The paper (Chen et al. 2020, App. B.1, Table B.1) pretrains ResNet-50 on ImageNet at batch 256
to 8192 for 100 to 800 epochs, with the learning rate scaled linearly (0.3 x B/256) or with the
square root of the batch (0.075 x sqrt(B)), and finds that

* at a fixed number of epochs, bigger batches are better, most of all when training is short
  (at 100 epochs, 57.5% at batch 256 against 64.8% at 8192, linear scaling);
* the advantage shrinks as training gets longer (at 800 epochs, 66.6% against 69.0%);
* square-root scaling beats linear scaling for small batches and short training (62.8% against
  57.5% at batch 256, 100 epochs), and the two meet at large batches or long training.

This script runs the same grid on sslax's laptop setting: SimCLR on the built-in shapes data
(20,000 training images, so an "epoch" is 20,000 images), the laptop ResNet-18 at width 1/4, one
run per cell, each with its own warm-up (10% of its steps, the paper's 10 of 100 epochs) and
cosine decay to the end, the paper's two rules and base rates (LARS, 0.3 x B/256 and 0.075 x
sqrt(B)), and the laptop's temperature (0.5) and views. Each cell is scored by the linear probe
on h over the held-out split (the paper's metric; kNN top-1 is recorded too). The json and the
figure put the paper's numbers beside ours in the paper's layout (rows batch, columns epochs,
each cell "linear / sqrt"); only the shape of the two tables is comparable, not the values.

Usage::

    python experiments/simclr_batch_epochs.py --out=experiments/results/simclr_batch_epochs
    # a bigger machine: the paper's grid shape, longer
    python experiments/simclr_batch_epochs.py --out=DIR --batch_sizes=32,64,128,256,512,1024 \\
        --epochs=2,4,8,16 --image_size=32

The default grid is batch 32 to 512 x epochs 1 and 3 x both rules (20 runs) at 16 px, about 10
minutes on 2 CPU cores. Every cell is an ordinary training workdir under ``OUT/runs/``; an
interrupted sweep reuses its finished cells when started again.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
import sweep
from simclr_table_b1 import PAPER

from sslax.data import shapes

NAME = "simclr_batch_epochs"
TRAIN_IMAGES = shapes.SPLIT_SIZES["train"]
# The paper's base rates for its two rules (App. B.1): 0.3 x B/256 and 0.075 x sqrt(B).
BASE_LEARNING_RATE = {"linear": 0.3, "sqrt": 0.075}
WARMUP_FRACTION = 0.1
DEFAULTS = {
    "batch_sizes": (32, 64, 128, 256, 512),
    "epochs": (1, 3),
    "lr_scalings": ("linear", "sqrt"),
    "image_size": 16,
    "eval_train_examples": 5_000,
    "eval_test_examples": 2_000,
    "seed": 0,
}


def cell_config(
    batch_size,
    epochs,
    lr_scaling,
    *,
    images_per_epoch,
    image_size,
    eval_train,
    eval_test,
    seed,
    extra,
):
    steps = max(1, epochs * images_per_epoch // batch_size)
    return sweep.laptop_config(
        "simclr",
        {
            "image_size": image_size,
            "batch_size": batch_size,
            "total_steps": steps,
            "warmup_steps": max(1, round(WARMUP_FRACTION * steps)),
            "learning_rate": BASE_LEARNING_RATE[lr_scaling],
            "lr_scaling": lr_scaling,
            "knn_train_examples": eval_train,
            "knn_test_examples": eval_test,
            "diagnostics_examples": min(512, eval_test),
            "log_every": max(1, steps // 10),
            "checkpoint_every": steps,  # an interrupted cell restarts; finished ones are reused
            "seed": seed,
            **extra,
        },
    )


def run(
    out: pathlib.Path,
    *,
    batch_sizes=DEFAULTS["batch_sizes"],
    epochs=DEFAULTS["epochs"],
    lr_scalings=DEFAULTS["lr_scalings"],
    image_size=DEFAULTS["image_size"],
    images_per_epoch=TRAIN_IMAGES,
    eval_train_examples=DEFAULTS["eval_train_examples"],
    eval_test_examples=DEFAULTS["eval_test_examples"],
    seed=DEFAULTS["seed"],
    extra_overrides: dict | None = None,
) -> dict:
    """Trains every cell, writes ``NAME.json`` and ``NAME.png`` under ``out``; returns the json.

    An epoch is ``images_per_epoch`` images (by default the whole training split);
    ``extra_overrides`` are applied to every cell's config (the smoke test shrinks the model).
    """
    out = pathlib.Path(out)
    cells = []
    for batch_size in batch_sizes:
        for n_epochs in epochs:
            for rule in lr_scalings:
                config = cell_config(
                    batch_size,
                    n_epochs,
                    rule,
                    images_per_epoch=images_per_epoch,
                    image_size=image_size,
                    eval_train=eval_train_examples,
                    eval_test=eval_test_examples,
                    seed=seed,
                    extra=extra_overrides or {},
                )
                name = f"b{batch_size:04d}-e{n_epochs}-{rule}"
                print(f"== {name}: {config.total_steps} steps", flush=True)
                results, _ = sweep.run(config, out / "runs" / name)
                cells.append(
                    {
                        "batch_size": batch_size,
                        "epochs": n_epochs,
                        "lr_scaling": rule,
                        "steps": config.total_steps,
                        "peak_learning_rate": _peak(config),
                        "linear_top1": results["linear_top1"],
                        "knn_top1": results["knn_top1"],
                        "final_loss": results["final_loss"],
                        "images_per_s": results["images_per_s"],
                        "wall_time_s": results["wall_time_s"],
                    }
                )
    report = {
        "settings": {
            "batch_sizes": list(batch_sizes),
            "epochs": list(epochs),
            "lr_scalings": list(lr_scalings),
            "image_size": image_size,
            "images_per_epoch": images_per_epoch,
            "base_learning_rate": BASE_LEARNING_RATE,
            "warmup_fraction": WARMUP_FRACTION,
            "eval_train_examples": eval_train_examples,
            "eval_test_examples": eval_test_examples,
            "seed": seed,
            "extra_overrides": extra_overrides or {},
        },
        "cells": cells,
        "knn_top1_random_init": results["knn_top1_random_init"],
        "paper_table_b1": {
            str(b): {str(e): dict(zip(("linear", "sqrt"), v)) for e, v in row.items()}
            for b, row in PAPER.items()
        },
        # The runs' own times (a rerun that reuses finished cells does not change it).
        "runs_wall_time_s": sum(c["wall_time_s"] for c in cells),
    }
    sweep.write_json(out, NAME, report)
    plot(report, out / f"{NAME}.png")
    return report


def _peak(config) -> float:
    from sslax import optim

    return optim.scaled_learning_rate(
        config.learning_rate, batch_size=config.batch_size, rule=config.lr_scaling
    )


def table(cells: list[dict], key: str = "linear_top1") -> dict:
    """{batch: {epochs: {rule: value}}} of one metric, the layout of the paper's table."""
    grid: dict = {}
    for c in cells:
        grid.setdefault(c["batch_size"], {}).setdefault(c["epochs"], {})[c["lr_scaling"]] = c[key]
    return grid


def format_markdown(report: dict) -> str:
    """Ours beside the paper's, rows batch and columns epochs, each cell "linear / sqrt" (%)."""
    ours, epochs = table(report["cells"]), report["settings"]["epochs"]
    rules = report["settings"]["lr_scalings"]
    lines = [
        "| batch \\ epochs | " + " | ".join(str(e) for e in epochs) + " |",
        "|---|" + "---|" * len(epochs),
    ]
    for b, row in sorted(ours.items()):
        cells = [" / ".join(f"{100 * row[e][r]:.1f}" for r in rules) for e in epochs]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = report["settings"]["lr_scalings"]
    ours = table(report["cells"])
    paper = {
        b: {e: dict(zip(("linear", "sqrt"), v)) for e, v in row.items()} for b, row in PAPER.items()
    }
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    panels = (
        ("sslax, shapes (CPU scale): linear-probe top-1 (%)", ours, 100.0),
        ("SimCLR paper, ImageNet ResNet-50: Table B.1 (%)", paper, 1.0),
    )
    for ax, (title, grid, scale) in zip(axes[:2], panels):
        batches = sorted(grid)
        epochs = sorted(next(iter(grid.values())))
        values = np.array(
            [[np.mean([grid[b][e][r] for r in rules]) for e in epochs] for b in batches]
        )
        ax.imshow(values * scale, cmap="viridis", aspect="auto")
        middle = (values.min() + values.max()) / 2
        for i, b in enumerate(batches):
            for j, e in enumerate(epochs):
                text = " / ".join(f"{grid[b][e][r] * scale:.1f}" for r in rules)
                colour = "k" if values[i, j] > middle else "w"  # legible on viridis
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
        ax.set_yticks(range(len(batches)), [str(b) for b in batches])
        ax.set_xlabel("epochs")
        ax.set_ylabel("batch size")
        ax.set_title(title + "\ncell: " + " / ".join(rules) + " LR scaling", fontsize=10)
    ax = axes[2]
    for e, marker in zip(sorted({c["epochs"] for c in report["cells"]}), "osd^v"):
        for rule, style in (("linear", "-"), ("sqrt", "--")):
            if rule not in rules:
                continue
            points = sorted(
                (c["batch_size"], c["linear_top1"])
                for c in report["cells"]
                if c["epochs"] == e and c["lr_scaling"] == rule
            )
            xs, ys = zip(*points)
            ax.plot(xs, 100 * np.array(ys), style, marker=marker, label=f"{e} ep, {rule}")
    ax.axhline(100 * report["knn_top1_random_init"], color="grey", lw=0.8, label="kNN, random init")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("linear-probe top-1 (%)")
    ax.set_title("sslax: top-1 over batch size", fontsize=10)
    ax.legend(fontsize=8)
    sweep.save_figure(fig, path)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--batch_sizes", type=_ints, default=DEFAULTS["batch_sizes"])
    parser.add_argument("--epochs", type=_ints, default=DEFAULTS["epochs"])
    parser.add_argument(
        "--lr_scalings",
        type=lambda s: tuple(s.split(",")),
        default=DEFAULTS["lr_scalings"],
        help="linear and/or sqrt",
    )
    parser.add_argument("--image_size", type=int, default=DEFAULTS["image_size"])
    parser.add_argument(
        "--images_per_epoch",
        type=int,
        default=TRAIN_IMAGES,
        help="images per epoch (default: the whole training split)",
    )
    parser.add_argument("--eval_train_examples", type=int, default=DEFAULTS["eval_train_examples"])
    parser.add_argument("--eval_test_examples", type=int, default=DEFAULTS["eval_test_examples"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = parser.parse_args()
    unknown = set(args.lr_scalings) - set(BASE_LEARNING_RATE)
    if unknown:
        parser.error(f"--lr_scalings: unknown {sorted(unknown)}; choose from linear, sqrt")
    report = run(
        args.out,
        batch_sizes=args.batch_sizes,
        epochs=args.epochs,
        lr_scalings=args.lr_scalings,
        image_size=args.image_size,
        images_per_epoch=args.images_per_epoch,
        eval_train_examples=args.eval_train_examples,
        eval_test_examples=args.eval_test_examples,
        seed=args.seed,
    )
    print(format_markdown(report))
    print(f"wrote {args.out / (NAME + '.json')} and {args.out / (NAME + '.png')}")


if __name__ == "__main__":
    main()
