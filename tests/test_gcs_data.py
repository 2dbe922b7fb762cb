"""Datasets on object storage: ``folder:gs://...`` and a TFDS ``data_dir`` on ``gs://``.

They are read for real, through a GCS-API emulator on loopback (tests/gcs.py), and must give
what the same files on local disk give: the index, classes, labels, bytes and decoded images.
"""

import os
import pathlib
import subprocess
import sys

import fsspec
import gcs
import numpy as np
import photos
import pytest

from sslax.data import folder, images, pipeline

CROPS = images.TrainCrops(views=((16, (0.08, 1.0), (3 / 4, 4 / 3)),) * 2, seed=3)
# A tree with every case the index must get right: nesting, hidden folders, ignored files,
# extensions in any case, a class missing from the evaluation split.
JPEG = photos.photo(np.random.default_rng(0), 0)
ODD_FILES = {
    "train/zebra/b.JPEG": JPEG,
    "train/zebra/a.jpg": JPEG,
    "train/ant/deeper/c.Png": JPEG,
    "train/ant/deeper/est/d.jpg": JPEG,
    "train/ant/x.webp": JPEG,
    "train/ant/.dotted.jpg": JPEG,
    "train/ant/.hidden/e.jpg": JPEG,
    "train/ant/notes.txt": b"ignored",
    "train/ant/README": b"ignored",
    "train/.hidden/y.jpg": JPEG,
    "train/top.jpg": JPEG,  # not in a class folder: ignored
    "val/zebra/v.jpeg": JPEG,
}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    with gcs.emulator(tmp_path_factory.mktemp("gcs") / "emulator.log") as env:
        yield env


@pytest.fixture
def bucket(emulator, tmp_path, monkeypatch):
    """A fresh ``gs://`` folder on the emulator, the client environment set in this process (and
    so in its worker processes), and the folder index cache in tmp_path."""
    monkeypatch.setenv("SSLAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(folder.REFRESH_ENV, raising=False)
    for key, value in emulator.items():
        monkeypatch.setenv(key, value)
    # array_record's endpoint is set by the TFDS tests that need it, after checking the error
    # its absence gives.
    monkeypatch.delenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", raising=False)
    gcs.forget_file_systems()
    yield f"gs://{gcs.BUCKET}/{tmp_path.name}"
    gcs.forget_file_systems()


def _upload(url: str, files: dict[str, bytes]) -> None:
    fs = fsspec.filesystem("gs")
    fs.pipe({f"{url}/{name}": data for name, data in files.items()})
    fs.invalidate_cache()


def _local_and_gs(tmp_path, url, files):
    _upload(url, files)
    return photos.write(tmp_path / "data", files), url


def _same_split(a: folder.FolderSplit, b: folder.FolderSplit) -> None:
    assert a.classes == b.classes
    assert a.paths.tolist() == b.paths.tolist()
    np.testing.assert_array_equal(a.labels, b.labels)
    for i in range(len(a)):
        assert a.read(i) == b.read(i)


def _photo_batches(source, **kw):
    args = {"global_batch_size": 6, "seed": 1, "start_step": 0, "end_step": 3, "crops": CROPS}
    args.update(kw)
    iterator = pipeline.train_batches(source, **args)
    batches = list(iterator)
    pipeline.close(iterator)
    return batches


def test_a_gs_folder_is_indexed_and_read_as_the_same_folder_on_disk(bucket, tmp_path):
    files = dict(ODD_FILES)
    files.update(
        {
            f"{split}/{c}/{i}.jpg": photos.photo(np.random.default_rng(i), 1)
            for c in ("bee", "cow")
            for split, n in (("train", 3), ("val", 2))
            for i in range(n)
        }
    )
    local, url = _local_and_gs(tmp_path, bucket, files)
    train = folder.index_split(url, "train")
    assert train.root == f"{url}/train" and train.path(0) == f"{url}/train/ant/.dotted.jpg"
    assert train.paths.tolist()[:5] == [
        b"ant/.dotted.jpg",
        b"ant/x.webp",
        b"ant/deeper/c.Png",
        b"ant/deeper/est/d.jpg",
        b"bee/0.jpg",
    ]
    _same_split(folder.index_split(local, "train"), train)
    val = folder.index_split(url + "/", "val", train.classes)  # a trailing slash is the same
    assert val.classes == ("ant", "bee", "cow", "zebra") and val.labels.tolist() == [1] * 2 + [
        2
    ] * 2 + [3]
    _same_split(folder.index_split(local, "val", train.classes), val)

    # Through the pipeline: the same records, decoded the same, named by their URL.
    on_disk = pipeline.get_source(f"folder:{local}", "train", image_size=16)
    on_gs = pipeline.get_source(f"folder:{url}", "train", image_size=16)
    assert on_gs.describe(1) == f"{url}/train/ant/x.webp" and on_gs.classes == on_disk.classes
    for a, b in zip(_photo_batches(on_disk), _photo_batches(on_gs)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    val_disk = pipeline.get_source(f"folder:{local}", "val", image_size=16, classes=train.classes)
    val_gs = pipeline.get_source(f"folder:{url}", "val", image_size=16, classes=train.classes)
    for a, b in zip(pipeline.split_arrays(val_disk), pipeline.split_arrays(val_gs)):
        np.testing.assert_array_equal(a, b)


def test_gs_photos_are_read_the_same_in_worker_processes(bucket, tmp_path):
    local, url = _local_and_gs(
        tmp_path,
        bucket,
        {
            f"train/{c}/{i}.jpg": photos.photo(np.random.default_rng(i), label)
            for label, c in enumerate("ab")
            for i in range(3)
        },
    )
    on_disk = pipeline.get_source(f"folder:{local}", "train", image_size=16)
    on_gs = pipeline.get_source(f"folder:{url}", "train", image_size=16)
    # grain spawns its workers: each makes its own gcsfs client from the inherited environment.
    for a, b in zip(_photo_batches(on_disk), _photo_batches(on_gs, workers=1)):
        assert b["skipped"].sum() == 0
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_gs_objects_are_read_in_a_forked_child(bucket, tmp_path):
    """gcsfs's event-loop thread does not survive a fork: a child must make its own client."""
    _upload(bucket, {"train/a/0.jpg": JPEG, "train/b/1.jpg": JPEG[::-1]})
    code = (
        "import os, sys\n"
        "from sslax.data import folder\n"
        "split = folder.index_split(sys.argv[1], 'train')\n"
        "before = [split.read(i) for i in range(len(split))]\n"  # the parent's client is running
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if [split.read(i) for i in range(len(split))] == before else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(len(before), os.waitstatus_to_exitcode(status))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, bucket],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=pathlib.Path(__file__).parent.parent,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "0"], out.stderr


def test_a_gs_index_is_cached_on_its_url_and_refreshed_on_demand(bucket, monkeypatch, capfd):
    _upload(bucket, {f"train/{c}/{i}.jpg": JPEG for c in "ab" for i in range(2)})
    first = folder.index_split(bucket, "train")
    assert len(first) == 4 and "reusing" not in capfd.readouterr().err

    def no_listing(*args):
        raise AssertionError("listed again")

    with monkeypatch.context() as m:
        m.setattr(folder, "_url_index", no_listing)
        again = folder.index_split(bucket, "train")
        np.testing.assert_array_equal(first.paths, again.paths)
        # An object added to a class folder is not seen: the index is kept as listed...
        _upload(bucket, {"train/a/new.jpg": JPEG})
        assert len(folder.index_split(bucket, "train")) == 4
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith(f"sslax: {bucket}/train: reusing its index of 4 ")
    assert err[0].endswith(f"; {folder.REFRESH_ENV}=1 lists it again")
    # ... until it is refreshed,
    monkeypatch.setenv(folder.REFRESH_ENV, "1")
    assert folder.index_split(bucket, "train").paths.tolist()[:3] == [
        b"a/0.jpg",
        b"a/1.jpg",
        b"a/new.jpg",
    ]
    monkeypatch.delenv(folder.REFRESH_ENV)
    assert len(folder.index_split(bucket, "train")) == 5
    # ... whereas a class folder added or removed is noticed at once (the classes are listed).
    _upload(bucket, {"train/c/0.jpg": JPEG})
    grown = folder.index_split(bucket, "train")
    assert grown.classes == ("a", "b", "c") and len(grown) == 6
    # An object deleted since the listing is a bad record, skipped like an undecodable file.
    fsspec.filesystem("gs").rm(f"{bucket}/train/a/0.jpg")
    source = pipeline.get_source(f"folder:{bucket}", "train", image_size=16)
    assert source.record(0) == (b"", 0) and source.record(1)[0] == JPEG
    with pytest.raises(OSError):
        folder.index_split(bucket, "train").read(0)
    # The same URL on another endpoint is another folder.
    key = folder._cache_file(f"{bucket}/train")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    assert folder._cache_file(f"{bucket}/train") != key


@pytest.mark.parametrize(
    "files,under,split,classes,message",
    [
        ({"train/a/x.jpg": JPEG}, "", "val", None, "no split folder 'val' (found train)"),
        ({"train/a/x.txt": b"1"}, "", "train", None, "split 'train' has no images"),
        ({"train/a/x.jpg": JPEG}, "/nowhere", "train", None, "'train' (the folder does not exist)"),
        (
            {"val/b/y.jpg": JPEG},
            "",
            "val",
            ("a",),
            "1 class folder(s) that the training split lacks: b",
        ),
    ],
)
def test_gs_errors_are_one_line(bucket, files, under, split, classes, message):
    _upload(bucket, files)
    with pytest.raises(folder.FolderError) as error:
        folder.index_split(bucket + under, split, classes)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_store_that_cannot_be_listed_is_one_line():
    with pytest.raises(folder.FolderError, match=r"cannot list zz://b/x/train \(ValueError: Pro"):
        folder.index_split("zz://b/x", "train")
    assert folder.is_url("gs://b/x") and not folder.is_url("/data/gs://b")


# TFDS: metadata through etils.epath (gcsfs), records through array_record's C++ GCS client.


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    import tfds_data

    data_dir = tmp_path_factory.mktemp("tfds")
    assert tfds_data.make_variable_size_dataset(str(data_dir), train=12, validation=4) == (
        "imagenet2012"
    )
    return data_dir


def _upload_tree(url: str, local: pathlib.Path) -> None:
    _upload(
        url, {str(f.relative_to(local)): f.read_bytes() for f in local.rglob("*") if f.is_file()}
    )


def test_a_tfds_data_dir_on_gs_reads_as_on_disk(bucket, tfds_dir, monkeypatch):
    _upload_tree(bucket, tfds_dir)
    name = "tfds:imagenet2012"
    # gcsfs is pointed at the emulator, array_record's client is not: one line, no 15-minute hang.
    with pytest.raises(pipeline.DatasetError, match="CLOUD_STORAGE_EMULATOR_ENDPOINT, which is"):
        pipeline.get_source(name, "train", image_size=16, data_dir=bucket)
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", os.environ["STORAGE_EMULATOR_HOST"])
    assert pipeline.has_variable_size(name, bucket)
    for split in ("train", "validation"):
        on_disk = pipeline.get_source(name, split, image_size=16, data_dir=str(tfds_dir))
        on_gs = pipeline.get_source(name, split, image_size=16, data_dir=bucket)
        assert isinstance(on_gs, pipeline.EncodedImages) and len(on_gs) == len(on_disk)
        for i in range(len(on_gs)):
            assert on_gs.record(i) == on_disk.record(i)
    for a, b in zip(pipeline.split_arrays(on_disk), pipeline.split_arrays(on_gs)):
        np.testing.assert_array_equal(a, b)


def test_tfds_records_on_gs_are_read_in_worker_processes(bucket, tfds_dir, monkeypatch):
    _upload_tree(bucket, tfds_dir)
    monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", os.environ["STORAGE_EMULATOR_HOST"])
    on_disk = pipeline.get_source(
        "tfds:imagenet2012", "train", image_size=16, data_dir=str(tfds_dir)
    )
    on_gs = pipeline.get_source("tfds:imagenet2012", "train", image_size=16, data_dir=bucket)
    for a, b in zip(_photo_batches(on_disk), _photo_batches(on_gs, workers=1)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_tfds_on_gs_without_credentials_is_one_line(monkeypatch, tmp_path):
    for key in ("STORAGE_EMULATOR_HOST", "CLOUD_STORAGE_EMULATOR_ENDPOINT", "TFDS_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    with pytest.raises(pipeline.DatasetError) as error:
        pipeline.get_source("tfds:imagenet2012", "train", image_size=16, data_dir="gs://b/tfds")
    message = str(error.value)
    assert "needs Application Default Credentials and finds none" in message
    assert "no-such-key.json was not found" in message and "\n" not in message
    monkeypatch.setenv("TFDS_DATA_DIR", "gs://b/tfds")  # the same through TFDS's own setting
    with pytest.raises(pipeline.DatasetError, match="Application Default Credentials"):
        pipeline.check_tfds_data_dir(None)
    pipeline.check_tfds_data_dir(str(tmp_path))  # local: nothing to check


def test_tfds_on_gs_with_an_array_record_that_reads_local_files_only_is_one_line(monkeypatch):
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda n: "0.8.1" if n == "array_record" else real(n))
    with pytest.raises(
        pipeline.DatasetError,
        match=r"array_record 0.8.1 reads ArrayRecord files "
        r"from local disk only; gs:// needs array_record>=0.8.3",
    ):
        pipeline.check_tfds_data_dir("gs://b/tfds")


@pytest.mark.slow
def test_the_main_command_trains_and_evaluates_on_a_gs_folder(bucket, tmp_path, data_dir):
    import json

    from cli_runs import TINY, run_cli

    files = {
        f"{split}/{c}/{i:03d}.jpg": photos.photo(np.random.default_rng(i), label)
        for split, n in (("train", 10), ("val", 3))
        for label, c in enumerate(("ant", "bee", "cow"))
        for i in range(n)
    }
    files["train/bee/empty.jpg"] = b""
    _upload(bucket, files)
    workdir = tmp_path / "run"
    flags = [
        f"--config.dataset=folder:{bucket}",
        "--config.eval_split=val",
        "--config.data_workers=1",
        "--config.knn_train_examples=30",
        "--config.knn_test_examples=9",
        "--config.diagnostics_examples=9",
        "--config.knn_k=5",
        f"--workdir={workdir}",
    ]
    result = run_cli(TINY + flags, data_dir)  # the emulator's environment is inherited
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["dataset"] == f"folder:{bucket}" and results["skipped_images"] >= 1
    assert result.stderr.count(f"{bucket}/train/bee/empty.jpg: ") == 1, result.stderr[-3000:]
