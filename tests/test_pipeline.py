"""grain pipelines: step-addressed batches, per-process slices, TFDS sources and their errors."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sslax.data import images, pipeline


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


# ---------------------------------------------------------------- photos of every size


@pytest.fixture
def photo_folder(tmp_path, monkeypatch):
    import photos

    monkeypatch.setenv("SSLAX_CACHE", str(tmp_path / "cache"))
    root = photos.folder(tmp_path / "data", {"train": 4, "val": 2})
    return f"folder:{root}"


CROPS = images.TrainCrops(views=((16, (0.08, 1.0), (3 / 4, 4 / 3)),) * 2, seed=3)


def _photo_batches(source, **kw):
    args = dict(global_batch_size=6, seed=1, start_step=0, end_step=5, crops=CROPS)
    args.update(kw)
    iterator = pipeline.train_batches(source, **args)
    batches = list(iterator)
    pipeline.close(iterator)
    return batches


def test_photos_are_cropped_on_the_host_the_same_in_worker_processes(photo_folder):
    source = pipeline.get_source(photo_folder, "train", image_size=16)
    assert source.variable_size and len(source) == 12 and source.classes == ("ant", "bee", "cow")
    threads = _photo_batches(source)
    assert set(threads[0]) == {"crops_16", "label", "index", "skipped", "bad_files"}
    assert threads[0]["crops_16"].shape == (6, 2, 16, 16, 3)
    workers = _photo_batches(source, workers=2)
    resumed = _photo_batches(source, start_step=3)
    halves = [_photo_batches(source, process_index=p, process_count=2) for p in (0, 1)]
    for step, batch in enumerate(threads):
        for key in batch:
            np.testing.assert_array_equal(batch[key], workers[step][key])
            both = np.concatenate([halves[0][step][key], halves[1][step][key]])
            np.testing.assert_array_equal(batch[key], both)
            if step >= 3:
                np.testing.assert_array_equal(batch[key], resumed[step - 3][key])
    # An epoch is 2 steps of 6: each image once, its label with it.
    assert sorted(np.concatenate([b["label"] for b in threads[:2]])) == [0] * 4 + [1] * 4 + [2] * 4


def test_a_remote_folder_fetches_a_batch_concurrently_with_the_same_result(photo_folder):
    import threading

    source = pipeline.get_source(photo_folder, "train", image_size=16)
    local = _photo_batches(source, end_step=1)
    # The same files, read as if from object storage: the 6 reads of a batch can only pass a
    # barrier of 6 if they are in flight at once.
    reader = source._reader
    barrier = threading.Barrier(6, timeout=30)

    class Remote:
        remote = True

        def record(self, index):
            barrier.wait()
            return reader.record(index)

        def describe(self, index):
            return reader.describe(index)

    source._reader = Remote()
    remote = _photo_batches(source, end_step=1)
    for key in local[0]:
        np.testing.assert_array_equal(local[0][key], remote[0][key])


def test_photos_need_crops(photo_folder):
    source = pipeline.get_source(photo_folder, "train", image_size=16)
    with pytest.raises(ValueError, match="needs crops"):
        pipeline.train_batches(source, global_batch_size=2, seed=0, start_step=0, end_step=1)


def test_evaluation_photos_are_centre_crops_of_the_training_classes(photo_folder):
    train = pipeline.get_source(photo_folder, "train", image_size=16)
    val = pipeline.get_source(photo_folder, "val", image_size=16, classes=train.classes)
    x, y = pipeline.split_arrays(val, batch_size=4)
    assert x.shape == (6, 16, 16, 3) and x.dtype == np.uint8 and y.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(x[3], val.eval_image(val.record(3)[0]))


def test_bad_files_are_skipped_replaced_and_counted(tmp_path, monkeypatch, capfd):
    import photos

    monkeypatch.setenv("SSLAX_CACHE", str(tmp_path / "cache"))
    root = photos.folder(tmp_path / "data", {"train": 2}, classes=("ant",))  # 000.jpg, 001.jpg
    photos.write(root, {f"train/ant/{name}": data for name, data in photos.BAD_FILES.items()})
    photos.write(root, {f"train/ant/{name}": data for name, data in photos.IGNORED_FILES.items()})
    source = pipeline.get_source(f"folder:{root}", "train", image_size=16)
    names = [source.describe(i).rsplit("/", 1)[1] for i in range(len(source))]
    assert names == ["000.jpg", "001.jpg", "empty.jpg", "text.png", "truncated.jpg"]
    good_0 = source.record(0)[0]
    # Records 2 (empty), 3 and 4 do not decode: each is replaced by the next that does, 0.
    decoded, label, bad = pipeline.decode_or_replace(source, 2, CROPS_OF(0))
    assert label == 0 and [line.split("\t")[0].rsplit("/", 1)[1] for line in bad] == names[2:]
    np.testing.assert_array_equal(decoded["crops_16"], CROPS_OF(0)(good_0)["crops_16"])
    batches = _photo_batches(source, global_batch_size=5, end_step=2, workers=1)
    assert sum(int(b["skipped"].sum()) for b in batches) == 2 * (3 + 2 + 1)
    capfd.readouterr()
    for batch in batches:  # in the training process: one line per file, however often met
        pipeline.warn_bad_files(batch["bad_files"])
    warnings = capfd.readouterr().err.splitlines()
    assert sorted(w.split(": ")[1].rsplit("/", 1)[1] for w in warnings) == names[2:]
    assert all(w.startswith("warning: skipping ") for w in warnings)


def CROPS_OF(index):
    return lambda data: CROPS(data, index=index)


def test_a_split_of_bad_files_only_is_one_line(tmp_path, monkeypatch):
    import photos

    monkeypatch.setenv("SSLAX_CACHE", str(tmp_path / "cache"))
    root = photos.write(tmp_path / "data", {f"train/a/{n}": d for n, d in photos.BAD_FILES.items()})
    source = pipeline.get_source(f"folder:{root}", "train", image_size=16)
    with pytest.raises(pipeline.DatasetError, match="3 records in a row from record 1 do not"):
        pipeline.decode_or_replace(source, 1, CROPS_OF(0))


def test_variable_size_tfds_records_take_the_photo_path(tmp_path):
    import tfds_data

    name = tfds_data.make_variable_size_dataset(str(tmp_path), train=12, validation=4)
    assert pipeline.has_variable_size(f"tfds:{name}", str(tmp_path))
    assert not pipeline.has_variable_size("tfds:cifar10") and not pipeline.has_variable_size(
        "shapes"
    )
    source = pipeline.get_source(f"tfds:{name}", "train", image_size=16, data_dir=str(tmp_path))
    assert isinstance(source, pipeline.EncodedImages) and len(source) == 12
    decoded = tfds.data_source(name, split="train", data_dir=str(tmp_path), download=False)
    data, label = source.record(5)
    assert data[:2] == b"\xff\xd8" and label == decoded[5]["label"]
    (batch,) = _photo_batches(source, end_step=1, workers=1)
    assert batch["crops_16"].shape == (6, 2, 16, 16, 3) and batch["skipped"].sum() == 0
    x, y = pipeline.split_arrays(
        pipeline.get_source(f"tfds:{name}", "validation", image_size=16, data_dir=str(tmp_path))
    )
    assert x.shape == (4, 16, 16, 3) and len(y) == 4
