r"""DINO's centring and sharpening: the teacher's distribution over prototypes, each switched off.

The seed: distribution matching between a student and an EMA teacher "collapses, and in two
distinct ways". Turn centring off "and watch one cluster swallow everything (one-dimension
collapse)"; turn sharpening off "and watch it flatten to uniform (uniform collapse)"; with both,
"a confident peak that isn't always the same cluster". The DINO paper (Caron et al. 2021,
Sec. 5.3, Fig. 7) makes the same claim with the same two measures: without centring the
teacher's entropy goes to 0, without sharpening to log K, and in both cases the KL between
teacher and student goes to 0 (nothing is learnt).

This script trains three ordinary sslax DINO runs on the built-in shapes data, differing only
in ``dino.centering`` and ``dino.sharpening`` (off means the centre stays 0, or the teacher
takes the student's temperature 0.1 instead of 0.04), and plots three per-step metrics that
:mod:`sslax.methods.dino` logs from the teacher's targets softmax((t - c) / tau_t) of the two
global crops (averaged over each ``--log_every`` interval):

* ``teacher_entropy``: the mean over images of the entropy of each image's target; 0 for a
  one-hot target, log K for a uniform one (K = ``dino.out_dim`` prototypes);
* ``teacher_max_prob``: the mean over images of the largest probability; 1 one-hot, 1/K
  uniform;
* ``teacher_batch_entropy``: the entropy of the batch-mean target, i.e. how many prototypes the
  batch uses; it tells the two confident regimes apart: near 0 when every image picks the same
  prototype (collapse), near log K when confident images spread over many prototypes. Its
  excess over ``teacher_entropy`` is the mutual information between image and prototype, in
  nats, reported in the json: 0 in both collapses.

The json also holds per run the final loss, the student's ``embedding_std`` x sqrt(K), kNN
top-1 on the backbone features h, and sslax.train's ``collapse_warning_step``.

**Config.** The runs start from DINO v1's laptop recipe, ``experiments/configs/dino.py:v1`` (AdamW
at 5e-4 x B/256, 10% warm-up, K = 1024 prototypes, two 32 px global and four 16 px local crops,
teacher momentum 0.99 cosine to 1, teacher temperature 0.04 and student 0.1; the laptop config until
2026-12-02, whose default now replaces centring by Sinkhorn-Knopp), not from the bare
``sweep.laptop_config``, whose shared LARS at lr 1.0 is not DINO's optimiser. Overridden: the two
switches, ``total_steps`` (``--steps``), the warm-up (kept at the recipe's 10% of it),
``batch_size``, ``log_every`` and ``seed``. The default runs are 200 steps rather than the recipe's
800, for time. Both collapses head the way the seed says within them but level off before they are
complete, as the learning rate decays to 0 and the teacher's momentum rises to 1 (numbers in
experiments/README.md); tests/test_dino_centering.py reaches both complete collapses in 200 steps of
tiny networks with a fast teacher.

Usage::

    python experiments/dino_centering.py --out=experiments/results/dino_centering
    python experiments/dino_centering.py --out=/tmp/dino --steps=800

Runtime: about 7.5 minutes on 2 CPU cores at the defaults (three 200-step runs at batch 256 with
multi-crop, each with its own compile and final evaluation). Training runs land in
``OUT/runs/<run>/``; a finished run is reused and an interrupted one resumes.

Writes ``OUT/dino_centering.json`` (the settings, log K and 1/K, and per run the final values
above and the logged curves) and ``OUT/dino_centering.png`` (entropy, max probability and batch
entropy over steps, with log K and 1/K marked).
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

NAME = "dino_centering"
# name -> (centering, sharpening)
RUNS = {
    "both_on": (True, True),
    "centering_off": (False, True),
    "sharpening_off": (True, False),
}
DEFAULTS: dict[str, Any] = {
    "runs": tuple(RUNS),
    "steps": 200,
    "batch_size": 256,
    "log_every": 10,
    "seed": 0,
}
TEACHER_KEYS = ("teacher_entropy", "teacher_max_prob", "teacher_batch_entropy")
# Means over the last log intervals: the state a run ended in, not one interval's noise.
TAIL = 3


def recipe_config(overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """DINO v1's laptop recipe (``experiments/configs/dino.py:v1``) with dotted ``overrides``."""
    return sweep.file_config("dino", overrides, variant="v1")


def _train(name: str, s: dict[str, Any], size: dict[str, Any], out: pathlib.Path):
    centering, sharpening = RUNS[name]
    overrides = {
        "dino.centering": centering,
        "dino.sharpening": sharpening,
        "total_steps": s["steps"],
        "warmup_steps": max(s["steps"] // 10, 1),  # the recipe's 10%
        "batch_size": s["batch_size"],
        "log_every": s["log_every"],
        "seed": s["seed"],
        **size,
    }
    config = recipe_config(overrides)
    results, history = sweep.run(config, out / "runs" / name)
    steps, _ = sweep.curve(history, "teacher_entropy")
    curves = {"step": steps}
    for key in (*TEACHER_KEYS, "embedding_std", "loss"):
        curves[key] = [round(v, 5) for v in sweep.curve(history, key)[1]]
    final = {key: sum(curves[key][-TAIL:]) / len(curves[key][-TAIL:]) for key in TEACHER_KEYS}
    return {
        "centering": centering,
        "sharpening": sharpening,
        **final,
        "mutual_information": final["teacher_batch_entropy"] - final["teacher_entropy"],
        "final_loss": results["final_loss"],
        "spread": curves["embedding_std"][-1] * math.sqrt(config.dino.out_dim),
        "knn_top1": results["knn_top1"],
        "knn_top1_random_init": results["knn_top1_random_init"],
        "linear_top1": results["linear_top1"],
        "collapse_warning_step": results["collapse_warning_step"],
        "images_per_s": results["images_per_s"],
        "wall_time_s": results["wall_time_s"],
        "curves": curves,
    }


COLOURS = {"both_on": "C0", "centering_off": "C3", "sharpening_off": "C2"}


def _plot(path: pathlib.Path, report: dict[str, Any]) -> None:
    k = report["out_dim"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    titles = {
        "teacher_entropy": "teacher entropy per image (nats)",
        "teacher_max_prob": "teacher max probability per image",
        "teacher_batch_entropy": "entropy of the batch-mean teacher distribution",
    }
    for ax, key in zip(axes, TEACHER_KEYS):
        for name, r in report["runs"].items():
            label = f"{name.replace('_', ' ')} (kNN {r['knn_top1']:.3f})"
            ax.plot(r["curves"]["step"], r["curves"][key], color=COLOURS[name], label=label)
        if key == "teacher_max_prob":
            ax.axhline(1.0, color="0.5", ls=":", lw=1, label="1: one-hot")
            ax.axhline(1 / k, color="0.5", ls="--", lw=1, label=f"1/K = {1 / k:.4f}")
            ax.set_yscale("log")
        else:
            ax.axhline(math.log(k), color="0.5", ls="--", lw=1, label=f"log K = {math.log(k):.3f}")
            ax.set_ylim(-0.1, math.log(k) * 1.08)
        ax.set(title=titles[key], xlabel="step")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"DINO teacher over K = {k} prototypes: centring and sharpening switched off one at a time"
    )
    sweep.save_figure(fig, path)


def run(
    out: str | pathlib.Path, *, size: dict[str, Any] | None = None, **settings: Any
) -> dict[str, Any]:
    """Trains the runs, writes ``dino_centering.json`` and ``.png``; returns the json.

    ``size``: further config overrides for every run (the tests pass small sizes).
    """
    s = sweep.settings(DEFAULTS, settings)
    s["runs"] = list(s["runs"])
    if not s["runs"] or set(s["runs"]) - set(RUNS):
        raise ValueError(f"runs must be some of {tuple(RUNS)}, got {s['runs']}")
    out = pathlib.Path(out)
    size = dict(size or {})
    out_dim = recipe_config(size).dino.out_dim
    report = {
        "settings": {**s, "size": size},
        "out_dim": out_dim,
        "log_k": math.log(out_dim),
        "one_over_k": 1 / out_dim,
        "runs": {name: _train(name, s, size, out) for name in s["runs"]},
    }
    sweep.write_json(out, NAME, report)
    _plot(out / f"{NAME}.png", report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated: " + ",".join(RUNS))
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--log_every", type=int, default=DEFAULTS["log_every"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = vars(parser.parse_args())
    out = args.pop("out")
    args["runs"] = args["runs"].split(",")
    report = run(out, **args)
    print(f"K = {report['out_dim']}, log K = {report['log_k']:.3f}")
    for name, r in report["runs"].items():
        print(
            f"{name}: entropy {r['teacher_entropy']:.3f}, max prob {r['teacher_max_prob']:.4f}, "
            f"batch entropy {r['teacher_batch_entropy']:.3f}, mutual information "
            f"{r['mutual_information']:.3f}, kNN {r['knn_top1']:.3f}"
        )
    print(f"wrote {out / (NAME + '.json')} and {out / (NAME + '.png')}")


if __name__ == "__main__":
    main()
