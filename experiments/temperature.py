r"""Temperature: how tau sharpens InfoNCE's softmax, and what it does to SimCLR's features.

The seed calls the temperature "the single most sensitive hyperparameter in contrastive
learning" and works one example: an anchor whose cosine similarity is 0.80 to its positive,
0.60 to a hard negative and 0.10 to an easy one. Its table gives P(positive) = 2981/3387 =
0.880 at tau 0.1 and 4.95/9.49 = 0.522 at tau 0.5, and it claims that at the low temperature
"the gradient pours onto that hard negative" while at the high one "the easy negative now
matters too"; too low a tau shatters the class structure, too high a tau blurs the negatives
together, and the sweet spot is small. SimCLR (Table 5, ImageNet linear top-1 at batch 4096)
measured tau 0.05 -> 59.7, 0.1 -> 64.4, 0.5 -> 60.7, 1.0 -> 58.0.

**Part 1: the seed's table, through the library's loss.** One anchor against one positive and
K negatives is one row of InfoNCE, which :func:`sslax.losses.moco_info_nce` computes on its own
(a query, its key and a queue of negatives; SimCLR's :func:`sslax.losses.info_nce` is the mean
of this row over all 2N anchors, with the other 2N - 2 views as the negatives). The script
builds unit vectors with exactly the seed's cosines: the anchor is ``e_0`` and candidate ``j``
is ``c_j e_0 + sqrt(1 - c_j^2) e_{j+1}``. Then

* ``P(positive) = exp(-loss)``;
* the anchor's gradient through the loss's own normalisation is
  ``(1/tau) (sum_j p_j s_j e_{j+1} - s_pos e_1)`` with ``s_j = sqrt(1 - c_j^2)``, so its
  component along ``e_{j+1}`` gives every candidate's softmax weight ``p_j`` from
  ``jax.grad``. ``p_j / tau`` is the gradient of the loss with respect to the negative's
  similarity, so the **hard-negative gradient share** is ``p_hard / (p_hard + p_easy)``: the
  part of the negatives' push that the hard negative receives.

Both are computed at the seed's two temperatures and the training sweep's, checked against
the closed-form softmax in float64, and swept over ``--sweep_points`` log-spaced tau from
``--sweep_min`` to ``--sweep_max``.

**Part 2: a real training sweep.** SimCLR on the built-in shapes data (the laptop config of
:func:`sweep.laptop_config`: ResNet-18 at width 1/4, LARS, colour strength 1, crop area >=
0.25) at each tau of ``--taus``, everything else equal: ``--steps`` steps at batch
``--batch_size`` (the same base as ``augment_strength.py``, so the two sweeps share the
tau 0.5 / strength 1 point), seed 0. Each run reports kNN top-1 and linear-probe top-1 on the
backbone features h of the 4,000 held-out images, and the alignment, uniformity and effective
rank of z that the final evaluation logs.

Usage::

    python experiments/temperature.py --out=experiments/results/temperature
    python experiments/temperature.py --out=/tmp/temp --steps=2000 --taus 0.05 0.1 0.2 0.5 1

Runtime: about 8.5 minutes on 2 CPU cores at the defaults (five runs of 250 steps at batch
256, each with its own compile and evaluation); part 1 alone takes seconds. Finished runs in
``OUT/runs/`` are reused, so a rerun only redraws.

Writes ``OUT/temperature.json`` (the settings, the table with the seed's printed values beside
it, the tau sweep, and per training run its results) and ``OUT/temperature.png`` (P(positive)
and the hard-negative share against tau; kNN and linear top-1 against tau with the paper's
Table 5 beside them).
"""

from __future__ import annotations

import argparse
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import sweep  # noqa: E402
from sslax.losses import moco_info_nce  # noqa: E402

NAME = "temperature"
# The seed's worked example: the anchor's cosine to its positive, a hard and an easy negative.
SEED_COSINES = {"positive": 0.80, "hard_negative": 0.60, "easy_negative": 0.10}
# The seed's table as printed, tau -> the exps of the positive, hard and easy negative, their
# sum and P(positive); strings, because the check allows half a unit of the last printed digit.
SEED_TABLE = {
    0.1: {
        "exp_positive": "2981",
        "exp_hard": "403",
        "exp_easy": "2.7",
        "sum": "3387",
        "p": "0.880",
    },
    0.5: {
        "exp_positive": "4.95",
        "exp_hard": "3.32",
        "exp_easy": "1.22",
        "sum": "9.49",
        "p": "0.522",
    },
}
# SimCLR Table 5: ImageNet linear top-1 (%) by temperature, normalised embeddings, batch 4096.
PAPER_TABLE5 = {0.05: 59.7, 0.1: 64.4, 0.5: 60.7, 1.0: 58.0}
DEFAULTS: dict[str, Any] = {
    "taus": (0.05, 0.1, 0.2, 0.5, 1.0),
    "steps": 250,
    "batch_size": 256,
    "seed": 0,
    "sweep_min": 0.02,
    "sweep_max": 2.0,
    "sweep_points": 61,
    "overrides": {},  # further laptop-config overrides (tests pass sweep.TINY)
}


def candidate_vectors(cosines: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(anchor [1, D], candidates [K, D]): unit vectors with the given cosines to the anchor.

    Candidate ``j`` leaves the anchor's axis along its own axis ``j + 1``, so the candidates'
    parts orthogonal to the anchor are orthogonal to each other and the anchor's gradient
    separates into one term per candidate.
    """
    c = np.asarray(cosines, np.float64)
    if np.any(np.abs(c) >= 1):
        raise ValueError(f"cosines must lie in (-1, 1), got {cosines}")
    dim = len(c) + 1
    anchor = np.eye(dim)[:1]
    candidates = c[:, None] * anchor + np.sqrt(1 - c**2)[:, None] * np.eye(dim)[1:]
    return anchor.astype(np.float32), candidates.astype(np.float32)


def softmax_through_loss(cosines: list[float], tau: float) -> dict[str, Any]:
    """The anchor's InfoNCE row for candidates at ``cosines`` (the positive first).

    Returns the loss, P(positive) = exp(-loss), and every candidate's softmax weight read off
    the loss's gradient with respect to the anchor.
    """
    anchor, candidates = candidate_vectors(cosines)
    loss, grad = _loss_and_anchor_grad(anchor, candidates, jnp.float32(tau))
    sines = np.sqrt(1 - np.asarray(cosines, np.float64) ** 2)
    # grad = (1/tau) (sum_j p_j s_j e_{j+1} - s_pos e_1): undo the 1/tau and the sines.
    weights = np.asarray(grad, np.float64)[0, 1:] * tau / sines
    weights[0] += 1.0
    return {"loss": float(loss), "p_positive": math.exp(-float(loss)), "weights": weights}


@jax.jit
def _loss_and_anchor_grad(anchor, candidates, tau):
    def loss_fn(q):
        return moco_info_nce(q, candidates[:1], candidates[1:], temperature=tau)

    return jax.value_and_grad(loss_fn)(anchor)


def closed_form_softmax(cosines: list[float], tau: float) -> np.ndarray:
    """softmax(c / tau) in float64: the values the loss must reproduce."""
    logits = np.asarray(cosines, np.float64) / tau
    e = np.exp(logits - logits.max())
    return e / e.sum()


def softmax_row(tau: float) -> dict[str, float]:
    """The seed's example at ``tau``: P(positive), the negatives' weights, the hard share."""
    cosines = list(SEED_COSINES.values())
    row = softmax_through_loss(cosines, tau)
    p = row["weights"]
    exact = closed_form_softmax(cosines, tau)
    return {
        "tau": tau,
        "exp_positive": math.exp(cosines[0] / tau),
        "exp_hard_negative": math.exp(cosines[1] / tau),
        "exp_easy_negative": math.exp(cosines[2] / tau),
        "loss": row["loss"],
        "p_positive": row["p_positive"],
        "p_positive_from_gradient": float(p[0]),
        "p_hard_negative": float(p[1]),
        "p_easy_negative": float(p[2]),
        "hard_negative_gradient_share": float(p[1] / (p[1] + p[2])),
        "p_positive_closed_form": float(exact[0]),
        "hard_negative_share_closed_form": float(exact[1] / (exact[1] + exact[2])),
        "max_abs_error_vs_closed_form": float(
            max(np.max(np.abs(p - exact)), abs(row["p_positive"] - exact[0]))
        ),
    }


def seed_table_check(table: dict[float, dict[str, float]]) -> dict[str, Any]:
    """The seed's printed numbers beside the recomputed ones, and whether each agrees to within
    half a unit of its last printed digit."""
    out = {}
    for tau, printed in SEED_TABLE.items():
        row = table[tau]
        exps = [row["exp_positive"], row["exp_hard_negative"], row["exp_easy_negative"]]
        recomputed = dict(zip(printed, [*exps, sum(exps), row["p_positive"]]))
        agrees = {}
        for key, text in printed.items():
            decimals = len(text.split(".")[1]) if "." in text else 0
            agrees[key] = abs(float(text) - recomputed[key]) <= 0.5 * 10**-decimals
        out[f"{tau:g}"] = {
            "seed_printed": {k: float(v) for k, v in printed.items()},
            "recomputed": recomputed,
            "agrees_to_printed_precision": agrees,
        }
    return out


def train_sweep(out: pathlib.Path, s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    runs = {}
    for tau in s["taus"]:
        config = sweep.laptop_config(
            "simclr",
            {
                "temperature": float(tau),
                "total_steps": s["steps"],
                "batch_size": s["batch_size"],
                "seed": s["seed"],
                **s["overrides"],
            },
        )
        results, history = sweep.run(config, out / "runs" / f"tau_{tau:g}")
        runs[f"{tau:g}"] = {"tau": float(tau), **sweep.run_summary(results, history)}
    return runs


def _plot(path: pathlib.Path, report: dict[str, Any]) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    curve = report["tau_sweep"]
    taus = curve["tau"]
    cos = SEED_COSINES

    ax = axes[0]
    ax.plot(taus, curve["p_positive"], color="C0", label="P(positive)")
    ax.plot(taus, curve["p_hard_negative"], color="C3", label="P(hard negative)")
    ax.plot(taus, curve["p_easy_negative"], color="C2", label="P(easy negative)")
    seed_taus = [float(t) for t in SEED_TABLE]
    ax.scatter(
        seed_taus,
        [float(SEED_TABLE[t]["p"]) for t in SEED_TABLE],
        color="k",
        zorder=3,
        label="seed table",
    )
    ax.set(
        xscale="log",
        xlabel="temperature tau",
        ylabel="softmax probability",
        title=f"anchor: cos {cos['positive']} / {cos['hard_negative']} / "
        f"{cos['easy_negative']} (pos / hard / easy)",
        ylim=(0, 1),
    )
    ax.legend(fontsize=8)

    ax = axes[1]
    ax.plot(taus, curve["hard_negative_gradient_share"], color="C3")
    ax.axhline(0.5, color="0.6", ls="--", lw=1, label="tau -> inf: equal shares")
    ax.set(
        xscale="log",
        xlabel="temperature tau",
        ylabel="p_hard / (p_hard + p_easy)",
        title="hard negative's share of the negatives' gradient",
        ylim=(0.45, 1.01),
    )
    ax.legend(fontsize=8)

    ax = axes[2]
    runs = list(report["runs"].values())
    x = [r["tau"] for r in runs]
    ax.plot(x, [r["knn_top1"] for r in runs], "o-", color="C0", label="kNN top-1 (h)")
    ax.plot(x, [r["linear_top1"] for r in runs], "s-", color="C1", label="linear top-1 (h)")
    ax.axhline(runs[0]["knn_top1_raw_pixels"], color="0.5", ls=":", label="kNN, raw pixels")
    ax.axhline(runs[0]["knn_top1_random_init"], color="0.7", ls="--", label="kNN, random init")
    ax.set(
        xscale="log",
        xlabel="temperature tau",
        ylabel="held-out top-1 (shapes)",
        title=f"SimCLR, {report['settings']['steps']} steps x batch "
        f"{report['settings']['batch_size']}",
    )
    paper = ax.twinx()
    paper.plot(
        [float(t) for t in PAPER_TABLE5],
        list(PAPER_TABLE5.values()),
        "^--",
        color="C7",
        label="SimCLR Table 5 (ImageNet, right axis)",
    )
    paper.set_ylabel("ImageNet linear top-1 (%)", color="C7")
    handles = ax.get_legend_handles_labels()
    extra = paper.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="lower center")
    sweep.save_figure(fig, path)


def run(out_dir: str | pathlib.Path, **settings: Any) -> dict[str, Any]:
    """Part 1 and the training sweep; writes ``temperature.json`` and ``.png``, returns the json."""
    s = sweep.settings(DEFAULTS, settings)
    s["taus"] = [float(t) for t in s["taus"]]
    if not s["taus"] or min(s["taus"]) <= 0 or s["steps"] < 1:
        raise ValueError("need at least one positive tau and steps >= 1")
    clash = {"temperature", "total_steps", "batch_size", "seed"} & set(s["overrides"])
    if clash:
        raise ValueError(f"set {sorted(clash)} by their own settings, not overrides")
    out = pathlib.Path(out_dir)

    table_taus = sorted({*map(float, SEED_TABLE), *s["taus"]})
    table = {tau: softmax_row(tau) for tau in table_taus}
    grid = np.geomspace(s["sweep_min"], s["sweep_max"], s["sweep_points"])
    rows = [softmax_row(float(t)) for t in grid]
    keys = ("p_positive", "p_hard_negative", "p_easy_negative", "hard_negative_gradient_share")
    tau_sweep = {"tau": [float(t) for t in grid], **{k: [r[k] for r in rows] for k in keys}}

    report = {
        "settings": s,
        "seed_cosines": SEED_COSINES,
        "table": [table[t] for t in table_taus],
        "seed_table_check": seed_table_check(table),
        "tau_sweep": tau_sweep,
        "paper_table5_imagenet_linear_top1": {f"{t:g}": v for t, v in PAPER_TABLE5.items()},
        "runs": train_sweep(out, s),
    }
    _plot(out / f"{NAME}.png", report)
    sweep.write_json(out, NAME, report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--taus", type=float, nargs="+", default=list(DEFAULTS["taus"]))
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--sweep_min", type=float, default=DEFAULTS["sweep_min"])
    parser.add_argument("--sweep_max", type=float, default=DEFAULTS["sweep_max"])
    parser.add_argument("--sweep_points", type=int, default=DEFAULTS["sweep_points"])
    args = vars(parser.parse_args())
    out = args.pop("out")
    report = run(out, **args)
    print("tau     P(pos)  P(hard) P(easy) hard share   (seed's anchor, through moco_info_nce)")
    for row in report["table"]:
        print(
            f"{row['tau']:<7g} {row['p_positive']:.4f}  {row['p_hard_negative']:.4f}  "
            f"{row['p_easy_negative']:.4f}  {row['hard_negative_gradient_share']:.4f}"
        )
    for tau, check in report["seed_table_check"].items():
        wrong = [k for k, ok in check["agrees_to_printed_precision"].items() if not ok]
        print(f"seed table at tau {tau}: " + (f"differs in {wrong}" if wrong else "agrees"))
    print("tau     kNN     linear  uniformity")
    for name, r in report["runs"].items():
        print(f"{name:<7} {r['knn_top1']:.4f}  {r['linear_top1']:.4f}  {r['uniformity']:.3f}")
    print(f"wrote {out / (NAME + '.json')} and {out / (NAME + '.png')}")


if __name__ == "__main__":
    main()
