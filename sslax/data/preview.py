"""Look at the views before spending pod-hours on them.

    python -m sslax.data.preview --config=CONFIG [--config.X=...] [--batches=K] [--out=DIR]

Writes the exact views the train step sees in its first K batches, after the host's crops
and the device's augmentation, made by the same functions as training (the method's
``views``, the pipeline's batches, the run's keys):

* ``DIR/views.npz``: per view size S, ``views_<S>`` uint8 [V, S, S, 3] (batch by batch, image by
  image, view by view) and ``index_<S>`` int64 [V], the dataset record each view was made from
  (after any undecodable record was replaced);
* ``DIR/views.png``: the first images of the first batch, one row each, their views side by
  side.
"""

from __future__ import annotations

import functools
import io

import numpy as np

COMMAND = "sslax.data.preview"
# Rows of views.png: enough to judge a recipe, few enough to stay a glance.
PICTURE_ROWS = 12


def preview(config, batches: int) -> dict[str, np.ndarray]:
    """``views_<S>`` and ``index_<S>`` of the first ``batches`` batches of ``config``'s run."""
    import jax

    from sslax import methods, train
    from sslax.data import images, pipeline

    method = methods.get(config.method).make(config)
    source, _ = train._sources(config)
    host_crops = pipeline.has_variable_size(config.dataset, config.data_dir or None)
    crops = images.TrainCrops.for_recipe(method.recipe, config.seed, config.dct_downscale)
    local = pipeline.train_batches(
        source,
        global_batch_size=config.batch_size,
        seed=config.seed,
        start_step=0,
        end_step=batches,
        crops=crops if host_crops else None,
        workers=pipeline.workers_for(source, config.data_workers),
    )
    _, rng = train.run_keys(config.seed)
    order = pipeline.example_order(source, config.seed)
    views_of = jax.jit(method.views)
    out: dict[int, list] = {}
    records: dict[int, list] = {}
    for step, batch in enumerate(local):
        fields = {k: v for k, v in batch.items() if k not in pipeline.HOST_FIELDS}
        if "bad_files" in batch:
            pipeline.warn_bad_files(batch["bad_files"])
        skipped = batch.get("skipped", np.zeros(len(batch["index"]), np.int64))
        record = [(order[int(i)] + s) % len(source) for i, s in zip(batch["index"], skipped)]
        for views in views_of(fields, rng, step):
            views = np.asarray(views)  # (N, k, S, S, 3) float in [0, 1]
            size = views.shape[2]
            out.setdefault(size, []).append(np.round(views * 255).astype(np.uint8))
            records.setdefault(size, []).append(np.repeat(record, views.shape[1]))
    pipeline.close(local)
    result = {}
    for size in out:
        result[f"views_{size}"] = np.concatenate([v.reshape(-1, size, size, 3) for v in out[size]])
        result[f"index_{size}"] = np.concatenate(records[size]).astype(np.int64)
    return result


def picture(views: dict[str, np.ndarray], views_per_image: dict[int, int], rows: int):
    """A PIL image: row i holds image i's views, side by side at their own sizes."""
    from PIL import Image

    pad = 2
    width = sum((size + pad) * k for size, k in views_per_image.items())
    height = max(views_per_image) + pad
    first = next(iter(views_per_image))
    shown = min(rows, len(views[f"views_{first}"]) // views_per_image[first])
    canvas = Image.new("RGB", (width, shown * height), "white")
    for row in range(shown):
        x = 0
        for size, k in views_per_image.items():
            for v in range(k):
                canvas.paste(
                    Image.fromarray(views[f"views_{size}"][row * k + v]), (x, row * height)
                )
                x += size + pad
    return canvas


def main(argv, config_flag, batches_flag, out_flag) -> None:
    from sslax import cli, configs, methods, paths, runtime
    from sslax.data import pipeline

    if len(argv) > 1:
        cli.fail(COMMAND, f"unexpected arguments {argv[1:]}")
    from absl import flags, logging

    if not flags.FLAGS["verbosity"].present:  # JAX's and grain's INFO lines
        logging.set_verbosity(logging.WARNING)
    config = config_flag.value
    runtime.use_tuned_xla_flags(config.model)
    runtime.quiet_absent_tpu()
    import jax

    try:
        configs.validate_config(config, num_devices=jax.device_count())
    except configs.ConfigError as e:
        cli.fail(COMMAND, e)
    try:
        views = preview(config, batches_flag.value)
    except pipeline.DatasetError as e:
        cli.fail(COMMAND, e)
    recipe = methods.get(config.method).make(config).recipe
    per_image = {s: sum(v.size == s for v in recipe.views) for s in recipe.sizes}
    arrays, image = io.BytesIO(), io.BytesIO()
    np.savez(arrays, **views)
    picture(views, per_image, PICTURE_ROWS).save(image, format="PNG")
    try:
        out = paths.resolve(out_flag.value)
        paths.write_bytes(out / "views.npz", arrays.getvalue())
        paths.write_bytes(out / "views.png", image.getvalue())
    except (OSError, ValueError) as e:
        cli.fail(COMMAND, f"cannot write to --out={out_flag.value}: {e}")
    counts = ", ".join(f"{len(views[f'views_{s}'])} of {s} px" for s in per_image)
    print(f"{batches_flag.value} batch(es) of {config.batch_size}: {counts} views")
    print(f"written to {out / 'views.npz'} and {out / 'views.png'}")


def run() -> None:
    """The command line: flags are defined here, not at import, so importing has no effects."""
    from absl import app, flags

    from sslax import cli, train

    config_flag = cli.define_config_flag(COMMAND, str(train.DEFAULT_CONFIG))
    batches_flag = flags.DEFINE_integer("batches", 1, "Batches to preview.", lower_bound=1)
    out_flag = flags.DEFINE_string("out", "preview", "Folder for views.npz and views.png.")
    app.run(
        functools.partial(
            main, config_flag=config_flag, batches_flag=batches_flag, out_flag=out_flag
        ),
        flags_parser=cli.flags_parser(COMMAND),
    )


if __name__ == "__main__":
    run()
