r"""The projection head: SimCLR with an MLP head, a linear head and no head; probes on h and z.

The seed calls SimCLR's projection head g its "quiet masterstroke": the loss is put on
z = g(h), not on the backbone's representation h, and g is thrown away after training. It
claims that this "nearly doubles downstream accuracy" and that a linear probe "does markedly
better on h than on z", because the head absorbs the invariance the loss demands and so h keeps
what the augmentations touch. SimCLR (Sec 4.2, REFERENCES.md) measures on ImageNet: the
nonlinear head beats a linear one by about 3% and no head by more than 10%, and h beats z by
more than 10% (linear evaluation).

This script trains the library's SimCLR (:mod:`sslax.methods.simclr`) three times on the
built-in shapes data, identical except for ``simclr.projection_head``:

* ``mlp``: the paper's g, Dense(``proj_hidden_dim``)-BN-ReLU-Dense(``proj_dim``), the default;
* ``linear``: one Dense to ``proj_dim``;
* ``none``: the loss on h itself (z = h).

Same seed, same batches and views, same optimiser (LARS, the laptop's learning rate 1.0,
temperature 0.5), same number of steps. After each run :func:`sslax.eval.evaluate_checkpoint`
reads the final checkpoint and reports, on h and on z, the weighted kNN top-1 (k=20, against
the same training images as the run's own kNN) and the linear-probe top-1 (L-BFGS softmax with
a held-out weight-decay choice) on the 4,000 test images. At the laptop scale h is the
128-d pooled output of the ResNet-18 at width 1/4; z is 64-d for the two heads and is h for
``none``. A linear probe on the linear head's z is a probe on h restricted to the 64-d image of
the head, so it can only lose to h by what that projection drops.

Usage::

    python experiments/projection_head.py --out=experiments/results/projection_head
    python experiments/projection_head.py --out=/tmp/head --steps=2000 --heads mlp none

Default: 3 runs of 300 steps at batch 256, about 6.5 minutes on 2 CPU cores (training,
evaluation and the probes). Writes ``OUT/projection_head.json`` (per head the kNN and linear
top-1 on h and z, the final loss, the random-init kNN) and ``OUT/projection_head.png`` (grouped
bars h vs z per head for the linear probe and for kNN, and the loss curves); the training runs
are in ``OUT/runs/<head>/``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import matplotlib
import numpy as np

import sweep

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = "projection_head"
HEADS = ("mlp", "linear", "none")
DEFAULTS: dict[str, Any] = {
    "heads": HEADS,
    "steps": 300,
    "batch_size": 256,
    "seed": 0,
    "overrides": {},  # further laptop-config overrides, e.g. sweep.TINY in the smoke test
}
SCORES = ("knn_top1_h", "knn_top1_z", "linear_top1_h", "linear_top1_z")


def config_of(s: dict[str, Any], head: str):
    return sweep.laptop_config(
        "simclr",
        {
            **s["overrides"],
            "total_steps": s["steps"],
            "batch_size": s["batch_size"],
            "seed": s["seed"],
            "simclr.projection_head": head,
        },
    )


def evaluate(workdir: pathlib.Path, config, steps: int) -> dict:
    """``evaluate_checkpoint`` of the run's final checkpoint, read back if already done."""
    from sslax import eval as sslax_eval

    path = workdir / "eval.json"
    if path.is_file():
        done = json.loads(path.read_text())
        if done["checkpoint_step"] == steps:
            return done
    return sslax_eval.evaluate_checkpoint(
        workdir,
        max_train_examples=config.knn_train_examples,
        max_test_examples=config.knn_test_examples,
    )


def _plot(path: pathlib.Path, report: dict, histories: dict[str, list[dict]]) -> None:
    heads = list(report["heads"])
    x = np.arange(len(heads))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, kind, title in [
        (axes[0], "linear", "linear probe top-1 (test)"),
        (axes[1], "knn", "kNN top-1 (k=20, test)"),
    ]:
        for offset, feature, colour in [(-0.2, "h", "C0"), (0.2, "z", "C1")]:
            values = [report["heads"][h][f"{kind}_top1_{feature}"] for h in heads]
            label = {"h": "h (backbone)", "z": "z (after the head; z = h for none)"}[feature]
            bars = ax.bar(x + offset, values, 0.4, color=colour, label=label)
            ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.axhline(0.1, color="0.5", ls=":", lw=1, label="chance")
        if kind == "knn":
            ax.axhline(
                report["knn_top1_random_init"], color="0.3", ls="--", lw=1, label="random init (h)"
            )
        ax.set_xticks(x, [f"head: {h}" for h in heads])
        top = max(report["heads"][h][f"{kind}_top1_{f}"] for h in heads for f in "hz")
        ax.set(title=title, ylim=(0, 1.45 * max(top, 0.1)))
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    for head in heads:
        steps, loss = sweep.curve(histories[head], "loss")
        axes[2].plot(steps, loss, label=f"head: {head}")
    axes[2].set(title="SimCLR training loss (InfoNCE on z)", xlabel="step")
    axes[2].legend(fontsize=8)
    fig.suptitle(
        f"SimCLR projection-head ablation: {report['settings']['steps']} steps at batch "
        f"{report['settings']['batch_size']}, shapes data"
    )
    sweep.save_figure(fig, path)


def run(out_dir: str | pathlib.Path, **settings: Any) -> dict[str, Any]:
    """Trains one SimCLR run per head, probes h and z; writes the json and png, returns it."""
    s = sweep.settings(DEFAULTS, settings)
    s["heads"] = tuple(s["heads"])
    bad = set(s["heads"]) - set(HEADS)
    if bad or not s["heads"]:
        raise ValueError(f"heads must be a non-empty subset of {HEADS}, got {s['heads']}")
    own = {
        "total_steps",
        "batch_size",
        "seed",
        "simclr.projection_head",
    } & set(s["overrides"])
    if own:
        raise ValueError(f"set {sorted(own)} by their own settings, not overrides")
    out_dir = pathlib.Path(out_dir)
    heads, histories = {}, {}
    for head in s["heads"]:
        config = config_of(s, head)
        workdir = out_dir / "runs" / head
        results, histories[head] = sweep.run(config, workdir)
        scores = evaluate(workdir, config, s["steps"])
        heads[head] = {
            **{k: scores[k] for k in SCORES},
            # The training loop's own probe and kNN on h: the same features, so the same numbers.
            "run_knn_top1": results["knn_top1"],
            "run_linear_top1": results["linear_top1"],
            "final_loss": results["final_loss"],
            "embedding_std": results["embedding_std"],
            "wall_time_s": results["wall_time_s"],
        }
    first = json.loads((out_dir / "runs" / s["heads"][0] / "results.json").read_text())
    report = {
        "settings": {**s, "heads": list(s["heads"])},
        "knn_top1_random_init": first["knn_top1_random_init"],
        "knn_top1_raw_pixels": first["knn_top1_raw_pixels"],
        "heads": heads,
    }
    sweep.write_json(out_dir, NAME, report)
    _plot(out_dir / f"{NAME}.png", report, histories)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = vars(parser.parse_args())
    out = args.pop("out")
    report = run(out, **args)
    print(f"random-init kNN top-1 (h): {report['knn_top1_random_init']:.4f}")
    print(f"{'head':<8} {'kNN h':>7} {'kNN z':>7} {'lin h':>7} {'lin z':>7}")
    for head, r in report["heads"].items():
        print(f"{head:<8}", *(f"{r[k]:>7.4f}" for k in SCORES))
    print(f"wrote {out / (NAME + '.json')} and {out / (NAME + '.png')}")


if __name__ == "__main__":
    main()
