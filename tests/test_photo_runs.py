"""End to end on photos of every size: the main command trains and evaluates on an image folder
whose bad files are skipped and counted, refuses broken folders in one line, and takes a
variable-size TFDS dataset the same way."""

import json

import photos
import pytest
from cli_runs import TINY, run_cli

PHOTO_RUN = TINY + [
    "--config.data_workers=1",
    "--config.knn_train_examples=30",
    "--config.knn_test_examples=9",
    "--config.diagnostics_examples=9",
    "--config.knn_k=5",
]


def test_a_folder_of_photos_with_bad_files_trains_and_evaluates(tmp_path, data_dir):
    root = photos.folder(tmp_path / "photos", {"train": 10, "val": 3})
    photos.write(root, {f"train/bee/{name}": data for name, data in photos.BAD_FILES.items()})
    photos.write(root, {f"train/ant/{name}": data for name, data in photos.IGNORED_FILES.items()})
    workdir = tmp_path / "run"
    flags = [f"--config.dataset=folder:{root}", "--config.eval_split=val", f"--workdir={workdir}"]
    result = run_cli(PHOTO_RUN + flags, data_dir, SSLAX_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 4 and results["dataset"] == f"folder:{root}"
    assert 0 <= results["knn_top1"] <= 1 and results["linear_top1"] is not None
    # 33 records, 3 of them bad, 64 examples drawn: each bad file is met, warned about once.
    assert results["skipped_images"] >= 3
    for name in photos.BAD_FILES:
        assert result.stderr.count(f"{name}: ") == 1, result.stderr
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in logged if "loss" in r]
    assert train_records[-1]["skipped_images"] == results["skipped_images"]
    assert 0 <= results["input_wait_share"] <= 1


@pytest.mark.parametrize(
    "files,message",
    [
        ({"train/a/x.txt": b"", "val/a/y.txt": b""}, "split 'train' has no images"),
        ({"train/a/x.jpg": b"", "val/b/y.jpg": b""}, "the training split lacks: b"),
    ],
)
def test_broken_folders_are_refused_in_one_line(tmp_path, data_dir, files, message):
    root = photos.write(tmp_path / "photos", files)
    flags = [f"--config.dataset=folder:{root}", "--config.eval_split=val"]
    result = run_cli(
        TINY + flags + [f"--workdir={tmp_path / 'run'}"],
        data_dir,
        SSLAX_CACHE=str(tmp_path / "cache"),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_variable_size_tfds_dataset_trains_from_the_main_command(tmp_path, data_dir):
    import tfds_data

    name = tfds_data.make_variable_size_dataset(str(tmp_path / "tfds"), train=30, validation=9)
    workdir = tmp_path / "run"
    flags = [
        f"--config.dataset=tfds:{name}",
        f"--config.data_dir={tmp_path / 'tfds'}",
        "--config.eval_split=validation",
        f"--workdir={workdir}",
    ]
    result = run_cli(PHOTO_RUN + flags, data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 4 and results["skipped_images"] == 0
