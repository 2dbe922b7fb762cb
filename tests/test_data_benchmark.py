"""experiments/benchmarks/data.py: the run records its fields, and the peer crops as torchvision.

No speed is asserted (benchmarks record numbers; tests check the recording).
"""

import json
import pathlib
import random
import sys

import numpy as np
import pytest
from PIL import Image

BENCH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"
sys.path.insert(0, str(BENCH))
import data


def test_main_writes_every_field_with_one_worker(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSLAX_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "jpegs"
    data.make_folder(folder, train=12, classes=3, sides=(64, 160))
    record = data.main(
        [
            f"--folder={folder}",
            "--workers=1",
            "--seconds=1",
            "--batch=8",
            "--rounds=1",
            f"--out={tmp_path}",
        ]
    )
    written = json.loads((tmp_path / "data.json").read_text())
    assert written == record
    assert written["views_per_s"] > 0 and written["exact_views_per_s"] > 0
    assert written["views_per_s_per_worker"] == written["views_per_s"]
    assert written["ratio"] == written["views_per_s"] / written["peer_views_per_s"]
    assert written["sslax_details"]["timed_batches"] >= 1
    assert written["peer_views_per_s"] > 0
    assert written["peer_views_per_s_per_worker"] == written["peer_views_per_s"]
    assert written["peer"] == data.peer_name()
    assert written["images"] == 12 and written["workers"] == 1 and written["seconds"] == 1
    assert written["folder"] == str(folder / "train")
    assert written["mean_file_kb"] > 0 and 64 * 64 <= written["mean_pixels"] <= 160 * 160
    for key in ("cpu_count", "date", "pillow", "libjpeg_turbo"):
        assert key in written
    assert "peer" in capsys.readouterr().out


def test_make_folder_is_imagenet_like_and_deterministic(tmp_path):
    a = data.make_folder(tmp_path / "a", train=4, validation=2, classes=2, sides=(40, 90))
    b = data.make_folder(tmp_path / "b", train=4, validation=2, classes=2, sides=(40, 90))
    files = sorted(p.relative_to(a) for p in a.rglob("*.JPEG"))
    assert [str(p) for p in files[:2]] == [
        "train/n00000000/n00000000_0.JPEG",
        "train/n00000000/n00000000_2.JPEG",
    ]
    assert len(files) == 6 and files == sorted(p.relative_to(b) for p in b.rglob("*.JPEG"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    with Image.open(a / files[0]) as img:
        assert 40 <= min(img.size) and max(img.size) <= 90 and img.mode == "RGB"
    with pytest.raises(FileExistsError):
        data.make_folder(a, train=1)


class NeverFits(random.Random):
    """Every try asks for four times the image's area, so the sampler must fall back."""

    def uniform(self, a, b):
        return 4.0 if a > 0 else 0.0


def test_crop_sampler_falls_back_to_the_central_in_ratio_box():
    assert data.crop_params(NeverFits(), 100, 400) == (0, 133, 100, 133)  # too wide: h = H
    assert data.crop_params(NeverFits(), 400, 100) == (133, 0, 133, 100)  # too tall: w = W
    assert data.crop_params(NeverFits(), 100, 120) == (0, 0, 100, 120)  # in ratio: all of it


@pytest.mark.parametrize("height, width", [(333, 800), (500, 375), (224, 224), (40, 400)])
def test_crop_sampler_follows_torchvision_rules(height, width):
    rng = random.Random(0)
    fallback = data.crop_params(NeverFits(), height, width)
    fractions, aspects = [], []
    for _ in range(2000):
        top, left, h, w = box = data.crop_params(rng, height, width)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h and w
        if box == fallback:
            continue
        # Each side was rounded, so the drawn area and aspect lie within half a pixel per side.
        assert (w + 0.5) * (h + 0.5) >= 0.08 * height * width
        assert (w - 0.5) / (h + 0.5) <= 4 / 3 and (w + 0.5) / (h - 0.5) >= 3 / 4
        fractions.append(h * w / (height * width))
        aspects.append(w / h)
    if len(fractions) > 1900:  # most draws fit: they should span the whole range, up to the
        largest = fallback[2] * fallback[3] / (height * width)  # largest in-ratio box
        assert min(fractions) < 0.1 and max(fractions) > 0.9 * largest
        assert min(aspects) < 0.8 and max(aspects) > 1.25


def test_peer_views_are_two_224px_uint8_crops_of_the_decoded_image(tmp_path):
    folder = data.make_folder(tmp_path / "f", train=2, classes=1, sides=(100, 300))
    dataset = data.PilImageFolder(folder / "train", seed=0)
    views, label = dataset[1]
    assert views.shape == (2, 224, 224, 3) and views.dtype == np.uint8 and label == 0
    assert not np.array_equal(views[0], views[1])


def test_batch_indices_walk_shuffled_epochs_without_gaps():
    batches = [data.batch_indices(step, 10, 4, seed=0) for step in range(5)]
    flat = [i for b in batches for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert all(len(b) == 4 for b in batches)
