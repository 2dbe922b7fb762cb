"""The convolutions of a ResNet-18 (CIFAR stem, 32 px) alone: forward + both gradients, summed.

    python experiments/benchmarks/conv_layers.py --side=jax [--xla=tuned|default] [--views=128]
        [--repeats=5]
    python experiments/benchmarks/conv_layers.py --side=torch          # needs '.[bench]'

Times, for every convolution of the network (shape, stride, count), one jitted forward and
backward (input and weight gradients) on ``views`` images, median of ``repeats`` calls after a
warm-up call, and prints the per-layer times and their sum. Set next to a full step's time
(``run.py``), it says how much of the step the convolutions explain and how much is the rest.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run  # noqa: E402  (its timing helper and --repeats)

_SIDE = flags.DEFINE_enum("side", "jax", ["jax", "torch"], "Which framework.")
_XLA = flags.DEFINE_enum("xla", "tuned", ["tuned", "default"], "sslax's XLA:CPU flags or none.")
_VIEWS = flags.DEFINE_integer("views", 128, "Batch of the convolutions (2 x images).")

# (input side, in channels, out channels, stride, kernel, how many in the network)
RESNET18_CIFAR = (
    (32, 3, 64, 1, 3, 1),
    (32, 64, 64, 1, 3, 4),
    (32, 64, 128, 2, 3, 1),
    (32, 64, 128, 2, 1, 1),
    (16, 128, 128, 1, 3, 3),
    (16, 128, 256, 2, 3, 1),
    (16, 128, 256, 2, 1, 1),
    (8, 256, 256, 1, 3, 3),
    (8, 256, 512, 2, 3, 1),
    (8, 256, 512, 2, 1, 1),
    (4, 512, 512, 1, 3, 3),
)


def _jax_layer(side, cin, cout, stride, k, views, repeats):
    import jax
    import jax.numpy as jnp

    pad = k // 2

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x,
            w,
            (stride, stride),
            ((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((views, side, side, cin), np.float32))
    w = jnp.asarray(rng.random((k, k, cin, cout), np.float32))
    grads = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w)), argnums=(0, 1)))
    return run._median_s(lambda: jax.block_until_ready(grads(x, w)), repeats, warmup=1)


def _torch_layer(side, cin, cout, stride, k, views, repeats):
    import torch
    import torch.nn.functional as F

    fmt = torch.channels_last
    x = torch.rand(views, cin, side, side).contiguous(memory_format=fmt).requires_grad_()
    w = torch.rand(cout, cin, k, k).contiguous(memory_format=fmt).requires_grad_()

    def step():
        x.grad = w.grad = None
        F.conv2d(x, w, None, stride, k // 2).sum().backward()

    return run._median_s(step, repeats, warmup=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if _SIDE.value == "jax" and _XLA.value == "tuned":
        from sslax import runtime

        runtime.use_tuned_xla_flags("resnet18")
    layer = _jax_layer if _SIDE.value == "jax" else _torch_layer
    total = 0.0
    for side, cin, cout, stride, k, count in RESNET18_CIFAR:
        seconds = layer(side, cin, cout, stride, k, _VIEWS.value, run._REPEATS.value)
        total += count * seconds
        print(
            f"{k}x{k} {cin:3d}->{cout:3d} stride {stride} at {side:2d} px  x{count}: "
            f"{seconds * 1e3:7.1f} ms each"
        )
    label = _SIDE.value + (f" ({_XLA.value} XLA flags)" if _SIDE.value == "jax" else "")
    print(
        f"{label}: all convolutions, forward + backward, {_VIEWS.value} views: {total * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    app.run(main)
