"""``python -m sslax.data.preview``: the views the train step sees, host crops included.

Views of coordinate-coded photos (each pixel's colour is its position in the original) show
where every crop came from: they must follow torchvision's RandomResizedCrop over the whole
original image, not over a centre square of it.
"""

import os
import subprocess
import sys

import ml_collections
import numpy as np
import photos
import pytest
import scipy.stats
from test_augment import torchvision_crop_params

from sslax import configs
from sslax.data import preview

SHAPES = ((240, 320), (320, 180))  # a 4:3 landscape and a 9:16 portrait photo
SIZE = 32


@pytest.fixture(scope="module")
def coordinate_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("coords")
    files = {
        f"{split}/c{k}/{i}.png": photos.png(photos.coordinate_image(*SHAPES[k]))
        for split in ("train", "val")
        for k in range(len(SHAPES))
        for i in range(2)
    }
    return photos.write(root, files)


def _config(folder) -> ml_collections.ConfigDict:
    config = configs.shapes_config("simclr")
    config.update_from_flattened_dict(
        {
            "dataset": f"folder:{folder}",
            "eval_split": "val",
            "recipe": "crop",  # crop and flip only: the colours stay coordinates
            "crop_min_scale": 0.08,
            "image_size": SIZE,
            "batch_size": 64,
            "data_workers": 0,
            "knn_train_examples": 4,
            "knn_test_examples": 4,
            "diagnostics_examples": 4,
            "knn_k": 2,
        }
    )
    return config


def _boxes(views: np.ndarray, shape) -> np.ndarray:
    """(top, left, height, width) of each view's box in the original, from its colours."""
    height, width = shape
    rows = views[..., 0].astype(float) / 255 * (height - 1)
    cols = views[..., 1].astype(float) / 255 * (width - 1)
    # Output pixel p samples the box at p + 0.5 of S steps: extrapolate to the box's edges.
    first, last = rows[:, 0, :].mean(1), rows[:, -1, :].mean(1)
    h = (last - first) * SIZE / (SIZE - 1)
    top = first - 0.5 * h / SIZE + 0.5
    lo, hi = cols[:, :, 0].mean(1), cols[:, :, -1].mean(1)  # a flip swaps them
    w = np.abs(hi - lo) * SIZE / (SIZE - 1)
    left = np.minimum(lo, hi) - 0.5 * w / SIZE + 0.5
    return np.stack([top, left, h, w], 1)


def test_views_are_crops_of_the_whole_original(coordinate_folder):
    views = preview.preview(_config(coordinate_folder), batches=4)
    assert views["views_32"].shape == (4 * 64 * 2, SIZE, SIZE, 3)
    classes = views["index_32"] // 2  # records 0, 1 are the landscape photos, 2, 3 the portrait
    rng = np.random.default_rng(0)
    for k, shape in enumerate(SHAPES):
        height, width = shape
        ours = _boxes(views["views_32"][classes == k], shape)
        ref = np.array(
            [
                torchvision_crop_params(rng, height, width, (0.08, 1.0), (3 / 4, 4 / 3))
                for _ in range(4000)
            ],
            float,
        )
        area, ref_area = (b[:, 2] * b[:, 3] / (height * width) for b in (ours, ref))
        # Area fractions: the same law (quantiles within 0.05), in [0.08, 1].
        for q in (0.1, 0.25, 0.5, 0.75, 0.9):
            assert np.quantile(area, q) == pytest.approx(np.quantile(ref_area, q), abs=0.05)
        assert scipy.stats.ks_2samp(area, ref_area).pvalue > 1e-3
        aspect = ours[:, 3] / ours[:, 2]
        assert aspect.min() > 3 / 4 * 0.95 and aspect.max() < 4 / 3 * 1.05
        # Crops reach every edge of the original, not only a centre square of it: a centre
        # square of side min(H, W) would keep every box inside its margin of |H - W| / 2.
        margin = abs(height - width) / 2
        reach = ours[:, 0] if height > width else ours[:, 1]
        far = (ours[:, 0] + ours[:, 2]) if height > width else (ours[:, 1] + ours[:, 3])
        assert (reach < margin / 4).mean() > 0.05
        assert (far > max(shape) - margin / 4).mean() > 0.05
        assert reach.min() >= -1.5 and far.max() <= max(shape) + 1.5
        for stat in (lambda b: b[:, 0] + b[:, 2] / 2, lambda b: b[:, 1] + b[:, 3] / 2):
            assert scipy.stats.ks_2samp(stat(ours), stat(ref)).pvalue > 1e-3  # where boxes sit


def test_the_command_writes_views_and_a_picture(coordinate_folder, tmp_path):
    out = tmp_path / "preview"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sslax.data.preview",
            f"--config.dataset=folder:{coordinate_folder}",
            "--config.eval_split=val",
            "--config.method=dino",  # two global and local crops: two sizes
            "--config.image_size=32",
            "--config.dino.local_size=16",
            "--config.dino.num_local=3",
            "--config.batch_size=4",
            "--config.knn_train_examples=4",
            "--config.knn_test_examples=4",
            "--config.diagnostics_examples=4",
            "--config.knn_k=2",
            "--batches=2",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    views = np.load(out / "views.npz")
    assert views["views_32"].shape == (2 * 4 * 2, 32, 32, 3)
    assert views["views_16"].shape == (2 * 4 * 3, 16, 16, 3)
    assert views["index_16"].shape == (24,) and set(views["index_16"]) <= {0, 1, 2, 3}
    assert (out / "views.png").stat().st_size > 0


def test_the_command_refuses_a_bad_folder_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sslax.data.preview", f"--config.dataset=folder:{tmp_path}/x"],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("sslax.data.preview: error: folder dataset")
    assert len(result.stderr.strip().splitlines()) == 1
