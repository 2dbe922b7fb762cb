r"""Pairs on a circle: InfoNCE pulls pairs together and spreads them; positives alone collapse.

The seed's first simulator shows the embeddings of a few images as points on the unit circle,
two augmented views per image, trained with real InfoNCE gradient steps. It claims that

* the positive term pulls each image's two views together (alignment);
* with negatives, every view also repels the others, so the images spread evenly round the
  circle (uniformity);
* with positives only, "everything collapses to one point".

This script trains both losses from the same initialisation, on the same augmentation draws,
with the same optimiser, and measures them with sslax's own :func:`sslax.losses.info_nce`,
:func:`sslax.diagnostics.alignment` and :func:`sslax.diagnostics.uniformity` (Wang & Isola
2020: alignment is 0 when every pair coincides; uniformity is 0 when all points coincide and
more negative the more they spread, down to the value for evenly spaced points, which the json
reports beside it as the reference).

**The encoder is shared, not a table of free points.** If every view were its own trainable
2-D point (``--encoder=points``), the positive term of image ``i`` would have no gradient on
image ``j``: each pair merges at its midpoint, the images stay wherever they started, and the
positives-only run does *not* collapse (its uniformity stays at its starting value; see
experiments/README.md for the numbers). Collapse to one point needs something that couples the
images, and in self-supervised learning that is the network shared by all of them, whose
cheapest way to make two views agree is to ignore its input. So by default
(``--encoder=mlp``) each image is a fixed random vector ``x_i`` in ``--dim`` dimensions, a view
is ``x_i`` plus Gaussian "augmentation" noise of scale ``--noise`` (fresh at every step), and a
one-hidden-layer tanh MLP (``--hidden`` units) maps each view to a 2-D point, which the loss
L2-normalises onto the circle. The trainable parameters are the MLP's weights; the points shown
and measured are its outputs on one fixed draw of the two views per image (the same draw before
and after, and at every step of the curves).

**Weight decay.** Both runs use decoupled weight decay (``--weight_decay``, on the weight
matrices, not the biases), as SSL training does. It is there for the positives-only run: once
its pairs agree, its loss no longer tells the weights where to go, and the decay picks the
smallest ones, the constant map. Without it (``--weight_decay=0``) the collapse still goes
most of the way but can stop at a few clusters of images that are far apart in input space.

**Initialisation.** The MLP's default random initialisation, used by both runs. It is smooth
in its input and the noise is small next to the distance between images, so most images' two
views start close together (a few start far apart: their outputs lie near the origin of the
plane, where normalising magnifies the noise), at random, unevenly spread positions. A plain
random network is the start that real training has, and it isolates the contrast the seed is
about: from this one start, the positives-only run loses its spread completely (uniformity rises
to 0) while the InfoNCE run closes its pairs and spreads the images towards the evenly spaced
reference. With ``--encoder=points``, each image gets a random angle and its two views start up
to ``--noise`` radians either side of it.

**Losses.** ``with_negatives`` is ``info_nce(z1, z2, temperature=--temperature)``.
``positives_only`` is InfoNCE's numerator alone, :math:`-\frac{1}{N}\sum_i \bar z_{1,i}^\top
\bar z_{2,i} / \tau`, computed as ``alignment(z1, z2) / (2 tau)``, which differs from it by a
constant; so both runs feel the same attractive force and differ only by the negatives. The
reported uniformity is the mean of the two views' (Wang & Isola's convention).

Usage::

    python experiments/circle_toy.py --out=experiments/results/circle_toy
    python experiments/circle_toy.py --out=/tmp/circle --images=64 --steps=2000 --dim=16
    python experiments/circle_toy.py --out=/tmp/circle_points --encoder=points

More images need a larger ``--dim``, so that their noisy views stay distinguishable: with 64
images and the default ``--dim=4`` InfoNCE barely spreads them (uniformity -1.52 from -1.56),
with ``--dim=16`` it reaches -1.632 against -1.638 for 64 evenly spaced points.

Writes ``OUT/circle_toy.json`` (the settings, the reference uniformity, the initial values, and
for ``with_negatives`` and ``positives_only`` the final ``alignment`` and ``uniformity`` and
their per-step curves) and ``OUT/circle_toy.png`` (the points before and after both runs,
views of one image in one colour, and the alignment, uniformity and loss curves).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sslax.diagnostics import alignment, uniformity  # noqa: E402
from sslax.losses import info_nce  # noqa: E402

DEFAULTS: dict[str, Any] = {
    "images": 16,
    "steps": 1000,
    "seed": 0,
    "temperature": 0.2,
    "optimizer": "adam",
    "lr": 0.03,
    "weight_decay": 0.1,
    "encoder": "mlp",
    "dim": 4,
    "hidden": 64,
    "noise": 0.3,
}
RUNS = ("with_negatives", "positives_only")


def evenly_spaced_uniformity(count: int) -> float:
    """Uniformity of ``count`` evenly spaced points on the unit circle, the best possible."""
    angles = 2 * np.pi * np.arange(count) / count
    z = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return float(uniformity(jnp.asarray(z, jnp.float32)))


def _setup(s: dict[str, Any]):
    """(initial params, views(params, key) -> (z1, z2), each [N, 2], and the key of the
    fixed evaluation views)."""
    n = s["images"]
    key_params, key_images, key_eval = jax.random.split(jax.random.key(s["seed"]), 3)
    if s["encoder"] == "points":
        base = jax.random.uniform(key_images, (n,), maxval=2 * jnp.pi)
        offset = s["noise"] * jax.random.uniform(key_params, (n,), minval=-1.0, maxval=1.0)
        angles = jnp.stack([base - offset, base + offset])
        params = {"points": jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)}

        def views(params, key):
            del key  # free points: the views are the parameters themselves
            return params["points"][0], params["points"][1]

    elif s["encoder"] == "mlp":
        dim, hidden = s["dim"], s["hidden"]
        inputs = jax.random.normal(key_images, (n, dim))
        k1, k2 = jax.random.split(key_params)
        params = {
            "w1": jax.random.normal(k1, (dim, hidden)) / math.sqrt(dim),
            "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden, 2)) / math.sqrt(hidden),
            "b2": jnp.zeros(2),
        }

        def encode(params, x):
            return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]

        def views(params, key):
            noisy = inputs + s["noise"] * jax.random.normal(key, (2, *inputs.shape))
            return encode(params, noisy[0]), encode(params, noisy[1])

    else:
        raise ValueError(f"encoder must be 'mlp' or 'points', got {s['encoder']!r}")
    return params, views, key_eval


def _optimizer(s: dict[str, Any], params: dict[str, jax.Array]):
    mask = {name: name.startswith("w") for name in params}  # decay weight matrices only
    if s["optimizer"] == "adam":
        return optax.adamw(s["lr"], weight_decay=s["weight_decay"], mask=mask)
    if s["optimizer"] == "sgd":
        return optax.chain(
            optax.add_decayed_weights(s["weight_decay"], mask=mask), optax.sgd(s["lr"])
        )
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {s['optimizer']!r}")


def _unit(z: jax.Array) -> np.ndarray:
    z = np.asarray(z, np.float64)
    return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def _train(s: dict[str, Any], negatives: bool) -> dict[str, Any]:
    params, views, key_eval = _setup(s)
    tau = s["temperature"]
    tx = _optimizer(s, params)

    def loss_fn(params, key):
        z1, z2 = views(params, key)
        if negatives:
            return info_nce(z1, z2, temperature=tau)
        return alignment(z1, z2) / (2 * tau)  # InfoNCE's numerator term, up to a constant

    def metrics(params):
        z1, z2 = views(params, key_eval)
        return alignment(z1, z2), 0.5 * (uniformity(z1) + uniformity(z2))

    @jax.jit
    def step(params, opt_state, key):
        align, uniform = metrics(params)
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, (loss, align, uniform)

    key_train = jax.random.fold_in(key_eval, 1)  # the same augmentation draws for both runs

    @jax.jit
    def train(params):
        def body(carry, i):
            params, opt_state, record = step(*carry, jax.random.fold_in(key_train, i))
            return (params, opt_state), record

        carry, curves = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(s["steps"]))
        return carry[0], curves

    final, curves = train(params)
    loss, align, uniform = (np.round(np.asarray(c, np.float64), 5).tolist() for c in curves)
    final_align, final_uniform = (float(m) for m in jax.jit(metrics)(final))
    return {
        "alignment": final_align,
        "uniformity": final_uniform,
        "curves": {
            # the value before each step, then for the metrics the value after the last one
            "loss": loss,
            "alignment": [*align, final_align],
            "uniformity": [*uniform, final_uniform],
        },
        "_points": {
            "before": [_unit(z) for z in views(params, key_eval)],
            "after": [_unit(z) for z in views(final, key_eval)],
        },
    }


def _plot(path: pathlib.Path, results: dict[str, Any], reference: float) -> None:
    n = len(results[RUNS[0]]["_points"]["before"][0])
    colours = plt.get_cmap("hsv")(np.arange(n) / n)
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.5))
    circle = np.linspace(0, 2 * np.pi, 200)
    panels = [
        (axes[0, 0], "start (both runs)", results[RUNS[0]]["_points"]["before"]),
        (axes[0, 1], "with negatives: after", results["with_negatives"]["_points"]["after"]),
        (axes[0, 2], "positives only: after", results["positives_only"]["_points"]["after"]),
    ]
    for ax, title, (z1, z2) in panels:
        ax.plot(np.cos(circle), np.sin(circle), color="0.8", lw=1, zorder=0)
        for i in range(n):
            ax.plot([z1[i, 0], z2[i, 0]], [z1[i, 1], z2[i, 1]], color=colours[i], lw=1)
        ax.scatter(z1[:, 0], z1[:, 1], c=colours, marker="o", s=40, edgecolors="k", lw=0.5)
        ax.scatter(z2[:, 0], z2[:, 1], c=colours, marker="^", s=40, edgecolors="k", lw=0.5)
        ax.set(title=title, xlim=(-1.25, 1.25), ylim=(-1.25, 1.25), aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
    styles = {"with_negatives": "C0", "positives_only": "C3"}
    for ax, name in [(axes[1, 0], "alignment"), (axes[1, 1], "uniformity")]:
        for run in RUNS:
            ax.plot(results[run]["curves"][name], color=styles[run], label=run)
        ax.set(title=name, xlabel="step")
    axes[1, 1].axhline(reference, color="0.4", ls="--", label=f"{n} evenly spaced")
    axes[1, 0].legend()
    axes[1, 1].legend()
    ax = axes[1, 2]
    for run in RUNS:
        ax.plot(results[run]["curves"]["loss"], color=styles[run], label=run)
    ax.set(title="training loss", xlabel="step")
    ax.legend()
    fig.suptitle(
        "Two views per image on the unit circle (circles / triangles: views, colour: image)\n"
        f"final uniformity: with negatives {results['with_negatives']['uniformity']:.3f}, "
        f"positives only {results['positives_only']['uniformity']:.3f}, "
        f"evenly spaced {reference:.3f}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(out_dir: str | pathlib.Path, **settings: Any) -> dict[str, Any]:
    """Trains both runs, writes ``circle_toy.json`` and ``circle_toy.png``; returns the json."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    s = {**DEFAULTS, **settings}
    if s["images"] < 2 or s["steps"] < 1:
        raise ValueError("need images >= 2 and steps >= 1")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {name: _train(s, negatives=name == "with_negatives") for name in RUNS}
    reference = evenly_spaced_uniformity(s["images"])
    _plot(out_dir / "circle_toy.png", results, reference)
    report = {
        "settings": s,
        "uniformity_evenly_spaced": reference,
        "initial": {
            "alignment": results[RUNS[0]]["curves"]["alignment"][0],
            "uniformity": results[RUNS[0]]["curves"]["uniformity"][0],
        },
        **{name: {k: v for k, v in r.items() if k != "_points"} for name, r in results.items()},
    }
    (out_dir / "circle_toy.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--images", type=int, default=DEFAULTS["images"])
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--temperature", type=float, default=DEFAULTS["temperature"])
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default=DEFAULTS["optimizer"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--weight_decay", type=float, default=DEFAULTS["weight_decay"])
    parser.add_argument("--encoder", choices=["mlp", "points"], default=DEFAULTS["encoder"])
    parser.add_argument("--dim", type=int, default=DEFAULTS["dim"], help="input size (mlp)")
    parser.add_argument("--hidden", type=int, default=DEFAULTS["hidden"], help="MLP width")
    parser.add_argument(
        "--noise", type=float, default=DEFAULTS["noise"], help="augmentation noise scale"
    )
    args = vars(parser.parse_args())
    out = args.pop("out")
    report = run(out, **args)
    print(f"evenly spaced uniformity ({args['images']} points): ", end="")
    print(f"{report['uniformity_evenly_spaced']:.4f}")
    print(f"initial: alignment {report['initial']['alignment']:.4f}", end=" ")
    print(f"uniformity {report['initial']['uniformity']:.4f}")
    for name in RUNS:
        print(f"{name}: alignment {report[name]['alignment']:.4f}", end=" ")
        print(f"uniformity {report[name]['uniformity']:.4f}")
    print(f"wrote {out / 'circle_toy.json'} and {out / 'circle_toy.png'}")


if __name__ == "__main__":
    main()
