"""grain pipelines: step-addressed batches, per-process slices, TFDS sources and their errors."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sslax.data import pipeline


@pytest.fixture
def source():
    rng = np.random.default_rng(0)
    return pipeline.ArraySource(
        rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8), np.arange(50, dtype=np.int32) % 10
    )


def _batches(source, **kw):
    args = dict(global_batch_size=8, seed=1, start_step=0, end_step=14)
    args.update(kw)
    return list(pipeline.train_batches(source, **args))


def test_batches_are_a_function_of_seed_and_step(source):
    full = _batches(source)
    resumed = _batches(source, start_step=9)
    assert len(full) == 14 and len(resumed) == 5
    for a, b in zip(full[9:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["index"], b["index"])
    other_seed = _batches(source, seed=2)
    assert not np.array_equal(full[0]["label"], other_seed[0]["label"]) or not np.array_equal(
        full[0]["image"], other_seed[0]["image"]
    )


def test_every_example_once_per_epoch_and_reshuffled_between_epochs(source):
    batches = _batches(source, global_batch_size=10, end_step=10)
    labels_seen = [
        tuple(sorted(np.concatenate([b["label"] for b in batches[e * 5 : e * 5 + 5]])))
        for e in range(2)
    ]
    expected = tuple(sorted(source.labels))
    assert labels_seen == [expected, expected]
    first, second = (
        np.concatenate([b["image"] for b in batches[e * 5 : e * 5 + 5]]) for e in range(2)
    )
    assert not np.array_equal(first, second)


def test_process_slices_tile_the_global_batch(source):
    whole = _batches(source)
    halves = [_batches(source, process_index=p, process_count=2) for p in range(2)]
    for step, batch in enumerate(whole):
        for key in ("image", "label", "index"):
            np.testing.assert_array_equal(
                batch[key], np.concatenate([halves[0][step][key], halves[1][step][key]])
            )
    np.testing.assert_array_equal(whole[3]["index"], np.arange(24, 32))
    with pytest.raises(ValueError, match="divide"):
        _batches(source, process_count=3)


def test_dataset_names_are_checked():
    pipeline.check_dataset_name("shapes")
    pipeline.check_dataset_name("tfds:cifar10")
    with pytest.raises(pipeline.DatasetError, match="unknown dataset 'imagenet'"):
        pipeline.check_dataset_name("imagenet")
    with pytest.raises(pipeline.DatasetError, match="unknown TFDS dataset 'no_such_data'"):
        pipeline.check_dataset_name("tfds:no_such_data")


def test_tfds_source_reads_records_through_grain():
    with tfds.testing.mock_data(num_examples=12):
        source = pipeline.get_source("tfds:cifar10", "train", image_size=16)
        assert len(source) == 12
        record = source[5]
        assert record["image"].shape == (16, 16, 3) and record["image"].dtype == np.uint8
        batches = list(
            pipeline.train_batches(source, global_batch_size=4, seed=0, start_step=0, end_step=2)
        )
        assert batches[1]["image"].shape == (4, 16, 16, 3)
        images, labels = pipeline.split_arrays(source, max_examples=10, batch_size=4)
        assert images.shape == (10, 16, 16, 3) and labels.shape == (10,)


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(
        pipeline.DatasetError, match="tfds build cifar10 --file_format=array_record"
    ):
        pipeline.get_source("tfds:cifar10", "train", image_size=32, data_dir=str(tmp_path))


def test_bad_records_name_the_dataset_and_index():
    class Broken:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"image": np.zeros((8, 8, 4), np.float32), "label": 0}

    wrapped = pipeline._FixedSizeImages(Broken(), "tfds:broken", 8)
    with pytest.raises(pipeline.DatasetError, match=r"tfds:broken: record 2 .*\(8, 8, 4\)"):
        wrapped[2]


def test_grayscale_and_other_sizes_become_rgb_at_the_configured_size():
    class Gray:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": np.full((20, 30, 1), 7, np.uint8), "label": 3}

    record = pipeline._FixedSizeImages(Gray(), "gray", 8)[0]
    assert record["image"].shape == (8, 8, 3) and record["label"] == 3
    assert (record["image"] == 7).all()
