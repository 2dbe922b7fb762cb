r"""BYOL and SimSiam with and without stop-gradient: the embedding's spread over training.

The seed claims that BYOL's ``torch.no_grad()`` around the target "is the entire trick": with
stop-gradient on, "the representation stays diverse and healthy"; turned off, so that gradients
flow into the target, "the diversity bar crashes to zero", because a constant output matches
any target perfectly. Its summary table gives SimSiam the same mechanism without the EMA
target ("predictor + stop-grad"), and the SimSiam paper (Chen & He 2021, Fig. 2) shows its
variant without stop-gradient collapsing at once to a constant output.

This script trains four ordinary sslax runs on the built-in shapes data: ``byol`` and
``simsiam``, each with ``<method>.stop_gradient`` True and False (False: BYOL's targets are the
online projections themselves, gradient and all, with no EMA network; SimSiam's gradient also
flows through z). The diversity bar is sslax's ``embedding_std`` of the training batch's
L2-normalised projections z (SimSiam's collapse monitor, Sec. 4.1), logged every
``--log_every`` steps as the mean over that interval and shown times sqrt(D), D =
:func:`sslax.methods.embedding_dim`: 1 for directions spread evenly over the sphere, 0 when
every image gives the same z. The json adds, per run, the final loss, the same spread of the
test images' z in evaluation mode (``eval_spread``), the alignment, uniformity (0: one point)
and effective rank of z for two views of held-out images, kNN and linear top-1 on h, and
``collapse_warning_step`` (the step at which sslax.train warned that the spread had stayed below
``collapse_threshold`` = 0.1 for three log intervals; null if it never did).

**SimSiam's spread cannot reach 0 in training mode.** Its projector ends in BatchNorm, which
gives every dimension of a training batch's z unit variance, so a batch cannot be one point:
without stop-gradient nearly every image lands on one point and a few outliers carry the
variance. The spread then stays near 0.2 (no collapse warning), while the eval-mode measures
show the collapse: uniformity near 0 and an effective rank near 1. BYOL's projector has no
final BatchNorm and its spread goes to 0.

**Configs.** Each run starts from the method's laptop config file,
``experiments/configs/<method>.py`` (loaded with its ``get_config()``, so these runs are what
``python -m sslax.train --config=experiments/configs/byol.py`` trains: BYOL with target momentum
0.9 and LARS, SimSiam with SGD at lr 0.5 and weight decay 1e-4), not from the bare
``sweep.laptop_config``, whose shared LARS-at-lr-1.0 base is not SimSiam's optimiser. Only the
switch, ``total_steps`` (``--steps``; the cosine schedules span it, the warm-up stays 25 steps),
``batch_size``, ``log_every`` and ``seed`` are overridden. Collapse shows within the first
hundred steps, so the default runs are 200 steps, a quarter of a full laptop run; kNN top-1 is
therefore lower than after the configs' 800 steps.

Usage::

    python experiments/stop_gradient.py --out=experiments/results/stop_gradient
    python experiments/stop_gradient.py --out=/tmp/sg --steps=800 --methods=byol

Runtime: about 6 minutes on 2 CPU cores at the defaults (four 200-step runs at batch 256, each
with its own compile and final evaluation). Training runs land in ``OUT/runs/<run>/``; a
finished run is reused and an interrupted one resumes.

Writes ``OUT/stop_gradient.json`` (the settings and, per run, the numbers above and the logged
curves) and ``OUT/stop_gradient.png`` (spread x sqrt(D) and loss over steps, one column per
method).
"""

from __future__ import annotations

import argparse
import math
import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402

import sweep  # noqa: E402
from sslax import methods as sslax_methods  # noqa: E402

NAME = "stop_gradient"
METHODS = ("byol", "simsiam")
DEFAULTS: dict[str, Any] = {
    "methods": METHODS,
    "switches": (True, False),  # stop_gradient values to train (the smoke test trains one)
    "steps": 200,
    "batch_size": 256,
    "log_every": 10,
    "seed": 0,
}
# The loss at a constant output, where both variants without stop-gradient head.
LOSS_MINIMUM = {"byol": 0.0, "simsiam": -1.0}


def recipe_config(method: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """``experiments/configs/<method>.py``'s config with dotted ``overrides``."""
    return sweep.file_config(method, overrides)


def run_name(method: str, stop_gradient: bool) -> str:
    return f"{method}_{'with' if stop_gradient else 'without'}_stop_gradient"


def _train(method: str, stop_gradient: bool, s: dict[str, Any], size, out: pathlib.Path):
    overrides = {
        f"{method}.stop_gradient": stop_gradient,
        "total_steps": s["steps"],
        "batch_size": s["batch_size"],
        "log_every": s["log_every"],
        "seed": s["seed"],
        **size,
    }
    config = recipe_config(method, overrides)
    results, history = sweep.run(config, out / "runs" / run_name(method, stop_gradient))
    scale = math.sqrt(sslax_methods.embedding_dim(config))
    steps, stds = sweep.curve(history, "embedding_std")
    _, losses = sweep.curve(history, "loss")
    final_eval = [r for r in history if "knn_top1" in r][-1]
    return {
        "method": method,
        "stop_gradient": stop_gradient,
        "embedding_dim": round(scale**2),
        "final_loss": results["final_loss"],
        "loss_minimum": LOSS_MINIMUM[method],
        # The last logged interval of the training batches, and the test images in eval mode.
        "final_spread": stds[-1] * scale,
        "eval_spread": results["embedding_std"] * scale,
        # Of z for two views of held-out images, eval mode: uniformity 0 is one point.
        "effective_rank": final_eval["effective_rank"],
        "alignment": final_eval["alignment"],
        "uniformity": final_eval["uniformity"],
        "knn_top1": results["knn_top1"],
        "knn_top1_random_init": results["knn_top1_random_init"],
        "linear_top1": results["linear_top1"],
        "collapse_warning_step": results["collapse_warning_step"],
        "images_per_s": results["images_per_s"],
        "wall_time_s": results["wall_time_s"],
        "curves": {
            "step": steps,
            "spread": [round(v * scale, 5) for v in stds],
            "loss": [round(v, 5) for v in losses],
        },
    }


def _plot(path: pathlib.Path, report: dict[str, Any], threshold: float) -> None:
    chosen = report["settings"]["methods"]
    fig, axes = plt.subplots(2, len(chosen), figsize=(6 * len(chosen), 7.5), squeeze=False)
    for column, method in enumerate(chosen):
        top, bottom = axes[0, column], axes[1, column]
        for stop_gradient, colour in ((True, "C0"), (False, "C3")):
            if stop_gradient not in report["settings"]["switches"]:
                continue
            r = report["runs"][run_name(method, stop_gradient)]
            switch = f"stop-gradient {'on' if stop_gradient else 'off'}"
            label = (
                f"{switch}: kNN {r['knn_top1']:.3f}, uniformity {r['uniformity']:.2f}, "
                f"eff. rank {r['effective_rank']:.1f}"
            )
            top.plot(r["curves"]["step"], r["curves"]["spread"], color=colour, label=label)
            bottom.plot(r["curves"]["step"], r["curves"]["loss"], color=colour, label=switch)
            if r["collapse_warning_step"] is not None:
                top.axvline(r["collapse_warning_step"], color=colour, ls=":", lw=1)
        dim = report["runs"][run_name(method, report["settings"]["switches"][0])]["embedding_dim"]
        top.axhline(1.0, color="0.5", ls="--", lw=1, label="1: spread evenly")
        top.axhline(threshold, color="0.5", ls=":", lw=1, label="collapse threshold")
        top.set(
            title=f"{method}: embedding std x sqrt(D), D = {dim}",
            xlabel="step",
            ylim=(0, 1.15),
        )
        top.legend(fontsize=8)
        bottom.axhline(LOSS_MINIMUM[method], color="0.5", ls="--", lw=1, label="constant output")
        bottom.set(title=f"{method}: training loss", xlabel="step")
        bottom.legend(fontsize=8)
    fig.suptitle(
        "Stop-gradient on vs off (dotted verticals: sslax.train's collapse warning; kNN top-1 "
        f"of random init {next(iter(report['runs'].values()))['knn_top1_random_init']:.3f})"
    )
    sweep.save_figure(fig, path)


def run(
    out: str | pathlib.Path, *, size: dict[str, Any] | None = None, **settings: Any
) -> dict[str, Any]:
    """Trains the runs, writes ``stop_gradient.json`` and ``.png``; returns the json.

    ``size``: further config overrides for every run (the tests pass ``sweep.TINY``).
    """
    s = sweep.settings(DEFAULTS, settings)
    s["methods"] = list(s["methods"])
    if not s["methods"] or set(s["methods"]) - set(METHODS):
        raise ValueError(f"methods must be some of {METHODS}, got {s['methods']}")
    s["switches"] = list(s["switches"])
    if not s["switches"] or set(s["switches"]) - {True, False}:
        raise ValueError(f"switches must be some of True, False, got {s['switches']}")
    out = pathlib.Path(out)
    size = dict(size or {})
    runs = {
        run_name(m, sg): _train(m, sg, s, size, out) for m in s["methods"] for sg in s["switches"]
    }
    report = {"settings": {**s, "size": size}, "runs": runs}
    sweep.write_json(out, NAME, report)
    threshold = recipe_config(s["methods"][0], {}).collapse_threshold
    _plot(out / f"{NAME}.png", report, threshold)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated: byol,simsiam"
    )
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--log_every", type=int, default=DEFAULTS["log_every"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = vars(parser.parse_args())
    out = args.pop("out")
    args["methods"] = args["methods"].split(",")
    report = run(out, **args)
    for name, r in report["runs"].items():
        print(
            f"{name}: spread x sqrt(D) {r['final_spread']:.3f} (eval {r['eval_spread']:.3f}), "
            f"loss {r['final_loss']:.3f}, kNN {r['knn_top1']:.3f}, "
            f"collapse warning at {r['collapse_warning_step']}"
        )
    print(f"wrote {out / (NAME + '.json')} and {out / (NAME + '.png')}")


if __name__ == "__main__":
    main()
