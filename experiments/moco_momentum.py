r"""MoCo's momentum: kNN accuracy and the consistency of the queue's keys for m in {0 ... 0.999}.

MoCo keeps a FIFO queue of keys from recent batches as negatives. The keys come from a key
encoder that is an exponential moving average of the query encoder,
``theta_k <- m theta_k + (1 - m) theta_q``, so that keys computed many steps apart still come
from nearly the same network. The seed claims that with momentum 0 (the key encoder is the query
encoder, "always fresh") "the keys become inconsistent the instant the network updates" and
"MoCo's accuracy collapses". The MoCo paper (He et al. 2020, arXiv 1911.05722, Sec 4.1,
"Ablation: momentum", ResNet-50, queue K = 4096, ImageNet linear top-1) reports m = 0: training
fails (the loss oscillates); 0.9: 55.2; 0.99: 57.8; 0.999: 59.0; 0.9999: 58.9.

This script trains the library's MoCo v2 (:mod:`sslax.methods.moco_v2`) at the laptop settings
of ``experiments/configs/moco_v2.py`` (SGD lr 0.3, weight decay 1e-4, temperature 0.2,
symmetric loss, queue 4,096 = 16 batches of 256, shuffling BN over 8 groups) once per momentum
``moco_v2.momentum``, everything else equal, and measures

* **kNN top-1** of the final backbone features h (the run's own evaluation: k = 20 against the
  20,000 training images, on the 4,000 test images), and the linear probe on h;
* **queue-key consistency** over training. The oldest key in the queue was enqueued
  ``L = queue_size / batch_size`` steps ago (16 steps here), by the key encoder of that step;
  the newest by today's. Consistency is how much those two encoders agree: at every log step a
  hook (:func:`consistency_hook`) encodes a fixed probe batch of ``--probe_examples`` held-out
  test images (one augmented view per image, drawn once with the run's view recipe) with the
  current KEY encoder, exactly as the train step computes keys (its ``target_params`` and
  ``target_batch_stats``, train-mode BatchNorm over the same shuffled groups, a fixed shuffle,
  L2-normalised), and reports the mean over the probe images of the cosine between each image's
  key now and its key L steps earlier. 1 means the oldest negatives in the queue are what the
  key encoder would compute today; lower means the loss contrasts the query with stale keys.
  ``log_every`` divides L so that the key of step t - L is always on hand. The hook runs one
  jitted forward pass of the probe batch per log step and keeps only host copies of the keys
  (a 64-d key per probe image per log step), never the training state.

The method also logs ``key_distance`` (the relative L2 distance between the key and query
encoders' parameters), ``positive_cosine`` (query against its own key) and ``embedding_std``;
all are in the json. Consistency alone cannot tell a good key encoder from a collapsed one: an
encoder that maps every image to one fixed point gives keys that never change (consistency 1),
so the figure shows ``embedding_std`` beside it.

**Scale.** These runs are short: ``--steps`` (200 by default) steps, where MoCo trains for
~200 epochs (about 10^6 steps at batch 256). The key encoder starts as a copy of the query
encoder, and after t steps the EMA still holds a share m^t of that random initialisation:
0.999^200 = 0.82, 0.99^200 = 0.13, 0.9^200 ~ 0. So at m = 0.999 the key encoder is still
mostly the random network at the end of the run, its keys are very consistent for the trivial
reason that it hardly moves, and the query encoder learns to match a random network's keys; the
paper's best momentum is therefore not expected to win here. The shapes default of
``moco_v2.momentum`` is 0.99 for this reason (``sslax.methods.moco_v2.defaults``), and recipes
that train for a fixed short budget ramp m towards 1 with a cosine schedule instead (BYOL,
MoCo v3, DINO: ``sslax.methods.common.cosine_ema_momentum``).

Usage::

    python experiments/moco_momentum.py --out=experiments/results/moco_momentum
    python experiments/moco_momentum.py --out=/tmp/moco --steps=3000 --momenta 0 0.99 0.999 0.9999

Default: 4 runs of 200 steps at batch 256, about 7 minutes on 2 CPU cores. Writes
``OUT/moco_momentum.json`` (per momentum: kNN and linear top-1, final loss, the consistency curve
and its mean over the run and its final value, key_distance and positive_cosine curves) and
``OUT/moco_momentum.png`` (consistency, embedding_std and key_distance over steps per m, kNN and
linear top-1 against m); the training runs are in ``OUT/runs/m=<m>/``.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any, Callable

import matplotlib
import numpy as np

import sweep

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = "moco_momentum"
MOMENTA = (0.0, 0.9, 0.99, 0.999)
# experiments/configs/moco_v2.py as overrides of the laptop config (a test checks they agree).
LAPTOP = {
    "moco_v2.symmetric": True,
    "optimizer": "sgd",
    "learning_rate": 0.3,
    "weight_decay": 1e-4,
    "temperature": 0.2,
}
DEFAULTS: dict[str, Any] = {
    "momenta": MOMENTA,
    "steps": 200,
    "batch_size": 256,
    "queue_size": 4096,
    "log_every": 8,  # must divide queue_size / batch_size
    "probe_examples": 256,
    "seed": 0,
    "overrides": {},  # further laptop-config overrides, e.g. sweep.TINY in the smoke test
}
CONSISTENCY = "key_consistency"


def config_of(s: dict[str, Any], momentum: float):
    return sweep.laptop_config(
        "moco_v2",
        {
            **LAPTOP,
            **s["overrides"],
            "total_steps": s["steps"],
            "batch_size": s["batch_size"],
            "seed": s["seed"],
            "log_every": s["log_every"],
            "moco_v2.queue_size": s["queue_size"],
            "moco_v2.momentum": momentum,
        },
    )


def probe_views(config, count: int) -> np.ndarray:
    """One fixed augmented view (float32 in [0, 1]) of the first ``count`` test images."""
    import jax
    import jax.numpy as jnp

    from sslax import augment
    from sslax.data import pipeline
    from sslax.methods import common

    source = pipeline.get_source(config.dataset, config.eval_split, image_size=config.image_size)
    images, _ = pipeline.split_arrays(source, max_examples=count)
    if len(images) < count:
        raise ValueError(f"the {config.eval_split} split has only {len(images)} images")
    recipe = common.view_recipe(config)
    views = jax.jit(
        lambda key, x: augment.two_views(key, x, recipe, indices=jnp.arange(count, dtype=jnp.int32))
    )(jax.random.key(config.seed + 2), images)
    return np.asarray(views[:, 1])  # view 2: the view the key encoder sees in training


def consistency_hook(config, probe: np.ndarray) -> Callable[[int, Any], dict[str, float]]:
    """``log_hook(step, state)`` reporting ``key_consistency`` (module docstring).

    At each log step: the probe's keys under the state's key encoder, computed like the train
    step's (train-mode BatchNorm over ``shuffle_bn_groups`` random groups, with one fixed
    shuffle), kept on the host; the mean cosine with the keys of ``L`` steps earlier, when
    the hook saw that step (not for the first L steps, nor for the first L after a resume).
    """
    import jax

    from sslax.methods import moco_v2

    lag = config.moco_v2.queue_size // config.batch_size
    groups = config.moco_v2.shuffle_bn_groups
    if lag % config.log_every:
        raise ValueError(f"log_every {config.log_every} must divide the queue's age {lag} steps")
    if len(probe) % groups or len(probe) // groups < 2:
        raise ValueError(f"probe_examples {len(probe)} must split into {groups} groups of >= 2")
    model = moco_v2.query_encoder(config)
    shuffle = jax.random.key(config.seed + 3)

    @jax.jit
    def keys_of(params, batch_stats, images):
        def forward(x):
            (_, z), _ = model.apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
            return z

        return moco_v2.l2_normalize(moco_v2.grouped(forward, images, groups, shuffle))

    earlier: dict[int, np.ndarray] = {}

    def hook(step: int, state) -> dict[str, float]:
        keys = np.asarray(keys_of(state.target_params, state.target_batch_stats, probe))
        earlier[step] = keys
        old = earlier.pop(step - lag, None)
        for s in [s for s in earlier if s < step - lag]:
            del earlier[s]  # only keys within the queue's age are ever needed
        if old is None:
            return {}
        return {CONSISTENCY: float(np.mean(np.sum(keys * old, axis=1)))}

    return hook


def _label(m: float) -> str:
    return f"m={m:g}"


def _plot(path: pathlib.Path, report: dict) -> None:
    runs = report["momenta"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for i, (name, r) in enumerate(runs.items()):
        axes[0, 0].plot(*r["curves"][CONSISTENCY], marker=".", color=f"C{i}", label=name)
        axes[1, 0].plot(*r["curves"]["embedding_std"], color=f"C{i}", label=name)
        axes[1, 1].plot(*r["curves"]["key_distance"], color=f"C{i}", label=name)
    axes[0, 0].set(
        title=f"queue-key consistency: cos(key now, key {report['queue_age_steps']} steps ago)",
        xlabel="step",
        ylabel="mean cosine over the probe images",
    )
    axes[1, 0].set(
        title="embedding_std of the queries (collapse: 0; uniform: 1/sqrt(D))",
        xlabel="step",
        yscale="log",
    )
    axes[1, 1].set(title="key_distance: |theta_k - theta_q| / |theta_q|", xlabel="step")
    for ax in (axes[0, 0], axes[1, 0], axes[1, 1]):
        ax.legend(fontsize=8)
    ax = axes[0, 1]
    names = list(runs)
    x = np.arange(len(names))
    bars = ax.bar(x - 0.2, [runs[n]["knn_top1"] for n in names], 0.4, label="kNN top-1 (h)")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    bars = ax.bar(
        x + 0.2, [runs[n]["linear_top1"] for n in names], 0.4, color="C2", label="linear probe (h)"
    )
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.axhline(report["knn_top1_random_init"], color="0.3", ls="--", lw=1, label="random init kNN")
    ax.axhline(0.1, color="0.5", ls=":", lw=1, label="chance")
    ax.set_xticks(x, names)
    top = max(max(r["knn_top1"], r["linear_top1"]) for r in runs.values())
    ax.set(title="accuracy against the key encoder's momentum", ylim=(0, 1.4 * top))
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    s = report["settings"]
    fig.suptitle(
        f"MoCo v2, {s['steps']} steps at batch {s['batch_size']}, queue {s['queue_size']} "
        f"({report['queue_age_steps']} batches), shapes data"
    )
    sweep.save_figure(fig, path)


def run(out_dir: str | pathlib.Path, **settings: Any) -> dict[str, Any]:
    """Trains one MoCo v2 run per momentum; writes the json and png, returns the json."""
    s = sweep.settings(DEFAULTS, settings)
    s["momenta"] = [float(m) for m in s["momenta"]]
    if not s["momenta"] or not all(0.0 <= m <= 1.0 for m in s["momenta"]):
        raise ValueError(f"momenta must be in [0, 1], got {s['momenta']}")
    own = {
        "total_steps",
        "batch_size",
        "seed",
        "log_every",
        "moco_v2.momentum",
        "moco_v2.queue_size",
    } & set(s["overrides"])
    if own:
        raise ValueError(f"set {sorted(own)} by their own settings, not overrides")
    out_dir = pathlib.Path(out_dir)
    probe = None
    runs, random_init = {}, None
    for m in s["momenta"]:
        config = config_of(s, m)
        if probe is None:
            probe = probe_views(config, s["probe_examples"])
        results, history = sweep.run(
            config, out_dir / "runs" / _label(m), log_hook=consistency_hook(config, probe)
        )
        random_init = results["knn_top1_random_init"]
        consistency = sweep.curve(history, CONSISTENCY)
        runs[_label(m)] = {
            "momentum": m,
            "knn_top1": results["knn_top1"],
            "linear_top1": results["linear_top1"],
            "final_loss": results["final_loss"],
            "embedding_std": results["embedding_std"],
            "consistency_final": consistency[1][-1] if consistency[1] else None,
            "consistency_mean": float(np.mean(consistency[1])) if consistency[1] else None,
            "wall_time_s": results["wall_time_s"],
            "curves": {
                key: list(sweep.curve(history, key))
                for key in (CONSISTENCY, "key_distance", "positive_cosine", "embedding_std", "loss")
            },
        }
    report = {
        "settings": s,
        "queue_age_steps": s["queue_size"] // s["batch_size"],
        "knn_top1_random_init": random_init,
        "momenta": runs,
    }
    sweep.write_json(out_dir, NAME, report)
    _plot(out_dir / f"{NAME}.png", report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--momenta", nargs="+", type=float, default=list(MOMENTA))
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--queue_size", type=int, default=DEFAULTS["queue_size"])
    parser.add_argument(
        "--log_every", type=int, default=DEFAULTS["log_every"], help="divides the queue's age"
    )
    parser.add_argument("--probe_examples", type=int, default=DEFAULTS["probe_examples"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = vars(parser.parse_args())
    out = args.pop("out")
    report = run(out, **args)
    print(f"random-init kNN top-1: {report['knn_top1_random_init']:.4f}")
    print(f"{'momentum':<10} {'kNN':>7} {'linear':>7} {'consistency mean/final':>24}")
    for name, r in report["momenta"].items():
        print(
            f"{name:<10} {r['knn_top1']:>7.4f} {r['linear_top1']:>7.4f} "
            f"{r['consistency_mean']:>11.4f} / {r['consistency_final']:.4f}"
        )
    print(f"wrote {out / (NAME + '.json')} and {out / (NAME + '.png')}")


if __name__ == "__main__":
    main()
