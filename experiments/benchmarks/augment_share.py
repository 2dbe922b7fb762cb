"""Share of the train step's time spent making views, for a config (default: the laptop run).

    python experiments/benchmarks/augment_share.py [--config=experiments/configs/simclr.py]
        [--config.batch_size=...] [--repeats=10]

Times the whole jitted SimCLR train step (augmentation, forward, loss, backward, update) and
`augment.two_views` alone on the same batch, each as the median of `repeats` calls after a
compiling warm-up, and prints both and their ratio. A benchmark, not a test.
"""

import statistics
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from sslax import augment, methods, train
from sslax.methods import common

_CONFIG = config_flags.DEFINE_config_file("config", str(train.DEFAULT_CONFIG), lock_config=True)
_REPEATS = flags.DEFINE_integer("repeats", 10, "timed calls per measurement")


def _median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(_):
    config = _CONFIG.value
    method = methods.get(config.method).make(config)
    rng = np.random.default_rng(0)
    size, n = config.image_size, config.batch_size
    batch = {
        "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "index": np.arange(n, dtype=np.int32),
    }
    key = jax.random.key(0)
    state = jax.jit(method.init)(key, batch["image"][:1])
    step = jax.jit(method.train_step)
    views = jax.jit(lambda k, x, i: augment.two_views(k, x, common.view_recipe(config), indices=i))

    step_s = _median_seconds(lambda: step(state, batch, key), _REPEATS.value)
    views_s = _median_seconds(lambda: views(key, batch["image"], batch["index"]), _REPEATS.value)
    print(f"config: {config.method} {config.model} width {config.width} at {size} px, batch {n}")
    print(f"train step:        {step_s * 1e3:8.1f} ms  ({n / step_s:,.0f} images/s)")
    print(f"two_views alone:   {views_s * 1e3:8.1f} ms  ({2 * n / views_s:,.0f} views/s)")
    print(f"augmentation share of the step: {views_s / step_s:.1%}")


if __name__ == "__main__":
    app.run(main)
