"""Image folders (sslax.data.folder): the ImageFolder convention, its cache, its one-line errors."""

import os
import time

import numpy as np
import photos
import pytest

from sslax.data import folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAX_CACHE", str(tmp_path / "cache"))


def test_index_follows_imagefolder(tmp_path):
    jpeg = photos.photo(np.random.default_rng(0), 0)
    root = photos.write(
        tmp_path / "data",
        {
            "train/zebra/b.JPEG": jpeg,
            "train/zebra/a.jpg": jpeg,
            "train/ant/deeper/c.Png": jpeg,
            "train/ant/x.webp": jpeg,
            "train/ant/notes.txt": b"ignored",
            "train/ant/README": b"ignored",
            "train/.hidden/y.jpg": jpeg,
            "val/zebra/v.jpeg": jpeg,
        },
    )
    train = folder.index_split(root, "train")
    assert train.classes == ("ant", "zebra")
    names = [os.path.relpath(train.path(i), root / "train") for i in range(len(train))]
    assert names == ["ant/x.webp", "ant/deeper/c.Png", "zebra/a.jpg", "zebra/b.JPEG"]
    assert train.labels.tolist() == [0, 0, 1, 1]
    val = folder.index_split(root, "val", train.classes)
    assert val.labels.tolist() == [1] and val.classes == train.classes


def test_index_is_cached_until_a_folder_changes(tmp_path, monkeypatch):
    root = photos.folder(tmp_path / "data", {"train": 2})
    first = folder.index_split(root, "train")

    def no_walk(*args):
        raise AssertionError("indexed again although nothing changed")

    with monkeypatch.context() as m:
        m.setattr(folder, "_index", no_walk)
        again = folder.index_split(root, "train")
    np.testing.assert_array_equal(first.paths, again.paths)
    time.sleep(0.01)  # a new modification time, even on coarse clocks
    photos.write(root, {"train/bee/new.jpg": photos.photo(np.random.default_rng(1), 1)})
    assert len(folder.index_split(root, "train")) == len(first) + 1


def test_the_cache_is_one_small_file(tmp_path):
    root = photos.folder(tmp_path / "data", {"train": 3})
    folder.index_split(root, "train")
    (cached,) = (tmp_path / "cache" / "folders").iterdir()
    assert cached.stat().st_size < 4096


@pytest.mark.parametrize(
    "files,split,message",
    [
        ({"train/a/x.jpg": b"1"}, "val", "no split folder 'val' (found train)"),
        ({"train/a/x.txt": b"1"}, "train", "split 'train' has no images"),
        ({"train/a/.keep": b""}, "train", "split 'train' has no images"),
    ],
)
def test_missing_or_empty_splits_are_one_line(tmp_path, files, split, message):
    root = photos.write(tmp_path / "data", files)
    with pytest.raises(folder.FolderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        folder.index_split(root, split)


def test_an_evaluation_class_missing_from_training_is_one_line(tmp_path):
    jpeg = photos.photo(np.random.default_rng(0), 0)
    root = photos.write(tmp_path / "data", {"train/a/x.jpg": jpeg, "val/b/y.jpg": jpeg})
    classes = folder.index_split(root, "train").classes
    with pytest.raises(folder.FolderError, match="the training split lacks: b"):
        folder.index_split(root, "val", classes)


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(folder.FolderError, match="does not exist"):
        folder.index_split(tmp_path / "nowhere", "train")


def test_an_index_is_listed_again_on_demand(tmp_path, monkeypatch):
    root = photos.folder(tmp_path / "data", {"train": 2})
    folder.index_split(root, "train")
    walked = []
    real = folder._index
    monkeypatch.setattr(folder, "_index", lambda *a: walked.append(1) or real(*a))
    folder.index_split(root, "train")
    assert walked == []
    monkeypatch.setenv(folder.REFRESH_ENV, "1")
    assert len(folder.index_split(root, "train")) == 6 and walked == [1]
