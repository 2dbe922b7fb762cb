"""The variable-size TFDS test dataset of tfds_data.py reads back through tfds.data_source."""

import io
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tfds_data import DEFAULT_SIZES, make_variable_size_dataset


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    assert make_variable_size_dataset(data_dir) == "imagenet2012"
    assert make_variable_size_dataset(data_dir, name="var_size_images") == "var_size_images"
    return data_dir


@pytest.mark.parametrize("name", ["imagenet2012", "var_size_images"])
def test_records_read_back_decoded_and_as_jpeg_bytes(tfds_dir, name):
    for split, n in [("train", 24), ("validation", 8)]:
        decoded = tfds.data_source(name, split=split, data_dir=tfds_dir, download=False)
        encoded = tfds.data_source(
            name,
            split=split,
            data_dir=tfds_dir,
            download=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        assert len(decoded) == len(encoded) == n
        assert decoded.dataset_info.features["image"].shape == (None, None, 3)
        for i in range(n):
            record, raw = decoded[i], encoded[i]
            assert record["image"].dtype == np.uint8
            assert record["image"].shape == (*DEFAULT_SIZES[i % len(DEFAULT_SIZES)], 3)
            assert record["label"] == raw["label"] == i % 3
            assert isinstance(raw["image"], bytes) and raw["image"][:2] == b"\xff\xd8"  # JPEG
            with Image.open(io.BytesIO(raw["image"])) as image:
                assert image.format == "JPEG"
                np.testing.assert_array_equal(np.asarray(image), record["image"])
    if name == "imagenet2012":  # the real ImageNet features, read by the registered builder
        assert decoded.dataset_info.features["label"].num_classes == 1000
        assert decoded[0]["file_name"] == b"validation_00000.JPEG"
    else:  # features from the written features.json
        assert decoded.dataset_info.features["label"].num_classes == 3


def test_source_unpickles_and_reads_in_another_process(tfds_dir):
    source = tfds.data_source("imagenet2012", split="train", data_dir=tfds_dir, download=False)
    code = (
        "import pickle, sys\n"
        "source = pickle.loads(sys.stdin.buffer.read())\n"
        "record = source[3]\n"
        "print(len(source), record['image'].shape, record['label'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(source),
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.decode().split("\n")[0] == f"24 {source[3]['image'].shape} 0"
