"""The built-in dataset: deterministic, balanced, cached, and hard for raw pixels."""

import numpy as np
import pytest

from sslax import eval as sslax_eval
from sslax.data import shapes


def test_same_seed_same_images_other_seed_other_images():
    a_images, a_labels = shapes.generate(64, seed=3)
    b_images, b_labels = shapes.generate(64, seed=3)
    c_images, _ = shapes.generate(64, seed=4)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert np.mean(a_images != c_images) > 0.5


def test_chunk_size_does_not_change_labels_and_shapes_and_classes_are_balanced():
    images, labels = shapes.generate(200, image_size=48, seed=0, chunk=50)
    assert images.shape == (200, 48, 48, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels), np.full(shapes.NUM_CLASSES, 20))


def test_nuisances_vary_within_a_class():
    images, labels = shapes.generate(400, seed=1)
    disks = images[labels == 0].astype(np.float32)
    # Mean colour differs a lot between images of the same class.
    assert disks.mean(axis=(1, 2)).std(axis=0).min() > 20
    assert images.min() == 0 or images.max() == 255 or images.std() > 40


def test_load_caches_and_splits_differ(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAX_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(shapes, "SPLIT_SIZES", {"train": 300, "test": 100})
    train_images, _ = shapes.load("train", image_size=16)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    again, _ = shapes.load("train", image_size=16)
    np.testing.assert_array_equal(train_images, again)
    test_images, _ = shapes.load("test", image_size=16)
    assert test_images.shape == (100, 16, 16, 3)
    assert not any((test_images[0] == im).all() for im in train_images)
    files[0].write_bytes(b"damaged")
    np.testing.assert_array_equal(shapes.load("train", image_size=16)[0], train_images)
    with pytest.raises(ValueError, match="splits"):
        shapes.load("validation")


def test_raw_pixels_are_far_from_solving_it():
    train_images, train_labels = shapes.generate(4000, seed=10)
    test_images, test_labels = shapes.generate(1000, seed=11)

    def flat(x):
        x = x.reshape(len(x), -1).astype(np.float32)
        return x - x.mean(axis=1, keepdims=True)

    acc = sslax_eval.knn_top1(flat(train_images), train_labels, flat(test_images), test_labels)
    # Chance is 0.10 and the shape alone determines the class. Measured: 0.354.
    assert 0.15 < acc < 0.45, acc


def test_factors_come_with_the_same_images_and_say_where_and_how_big_the_object_is():
    images, labels = shapes.generate(1200, image_size=32, seed=5)
    again, labels_again, factors = shapes.generate(1200, image_size=32, seed=5, with_factors=True)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert set(factors) == set(shapes.FACTORS)
    for name, values in shapes.FACTORS.items():
        assert factors[name].shape == (1200,) and factors[name].dtype == np.int32
        np.testing.assert_array_equal(np.unique(factors[name]), np.arange(len(values)))
    # On flat backgrounds the object is the pixels far from the image's median colour: their
    # centroid lies in the factor's quadrant, and large objects cover more than small ones.
    flat = factors["background"] == 0
    x = images[flat].astype(np.float32)
    far = np.abs(x - np.median(x, axis=(1, 2), keepdims=True)).max(axis=-1) > 40
    rows, cols = np.mgrid[0:32, 0:32] + 0.5
    area = far.sum(axis=(1, 2))
    below = (far * rows).sum(axis=(1, 2)) / area > 16
    right = (far * cols).sum(axis=(1, 2)) / area > 16
    assert np.mean(2 * below + right == factors["position"][flat]) > 0.7  # chance 0.25
    size = factors["size"][flat]
    assert area[size == 0].mean() < area[size == 1].mean() < area[size == 2].mean()


def test_load_factors_matches_the_split_and_refuses_unknown_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAX_DATA_DIR", str(tmp_path))
    factors = shapes.load_factors("test", image_size=8)
    assert {name: len(v) for name, v in factors.items()} == dict.fromkeys(shapes.FACTORS, 4000)
    with pytest.raises(ValueError, match="shapes has splits"):
        shapes.load_factors("validation")
