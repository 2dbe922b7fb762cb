"""A small prepared TFDS dataset of variable-size JPEG images, written without TensorFlow.

``make_variable_size_dataset(data_dir)`` writes a real prepared dataset folder, exactly what
``tfds build NAME --file_format=array_record`` would leave there:

    DATA_DIR/NAME/VERSION/dataset_info.json
    DATA_DIR/NAME/VERSION/features.json
    DATA_DIR/NAME/VERSION/NAME-train.array_record-00000-of-00001
    DATA_DIR/NAME/VERSION/NAME-validation.array_record-00000-of-00001

It runs TFDS's own writer (``GeneratorBasedBuilder.download_and_prepare`` with
``file_format="array_record"``): TFDS serializes each example to a ``tf.train.Example`` proto
with its bundled protobuf classes and writes the ArrayRecord shards, so TensorFlow isn't needed.
The images are JPEG-encoded here with PIL, and the bytes go to TFDS as they are. TFDS can encode
a NumPy array itself only through TensorFlow.

Nothing global is patched, and the builder class is created with ``skip_registration=True``, so
importing this module or calling the function registers nothing. The dataset is read back like
any prepared dataset, from any process:

    source = tfds.data_source(name, split="train", data_dir=data_dir, download=False)
    source[0]  # {"image": uint8 [H, W, 3] (decoded with PIL), "label": int, ...}

    raw = tfds.data_source(name, split="train", data_dir=data_dir, download=False,
                           decoders={"image": tfds.decode.SkipDecoding()})
    raw[0]["image"]  # the JPEG file's bytes (b"\\xff\\xd8..."), label still decoded

Two kinds of name:

* ``"imagenet2012"`` (the default). The examples have the real ImageNet features (JPEG
  ``image``, ``label`` = ClassLabel of 1000 names, ``file_name`` text) at the real builder's
  version, so ``tfds.data_source("imagenet2012", data_dir=data_dir)`` reads them through the
  registered ImageNet builder, and ``dataset="tfds:imagenet2012"`` works in sslax (whose
  ``check_dataset_name`` accepts only registered builders). Labels are ``0..num_classes-1``.
* Any other name, e.g. ``"var_size_images"``: ``image`` (JPEG) and ``label``
  (``ClassLabel(num_classes=num_classes)``) only. No builder of that name is registered, and
  ``tfds.data_source`` reads it from its ``features.json`` (TFDS's read-only builder). Plain
  ``tfds.data_source`` calls accept it. sslax's ``check_dataset_name`` rejects it.

Records are deterministic in ``seed``. Example ``i`` of a split has label ``i % num_classes``;
its size comes from ``sizes`` (cycled); its content is a class-specific colour with a gradient
and a little noise, so classes can be told apart even after JPEG compression.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

IMAGENET = "imagenet2012"

# (height, width) pairs, cycled over the examples of each split: portrait, landscape, square,
# smaller and larger than a typical test image_size.
DEFAULT_SIZES: tuple[tuple[int, int], ...] = (
    (40, 60),
    (75, 50),
    (64, 64),
    (33, 97),
    (120, 80),
    (48, 48),
    (90, 130),
    (57, 41),
)


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _image(rng: np.random.Generator, label: int, num_classes: int, h: int, w: int) -> np.ndarray:
    hue = 2 * np.pi * label / num_classes
    colour = 128 + 100 * np.cos(hue + np.array([0.0, 2.1, 4.2]))
    ramp = np.linspace(-30, 30, w)[None, :, None] + np.linspace(-20, 20, h)[:, None, None]
    noise = rng.normal(0, 8, (h, w, 3))
    return np.clip(colour + ramp + noise, 0, 255).astype(np.uint8)


def make_variable_size_dataset(
    data_dir: str,
    *,
    name: str = IMAGENET,
    train: int = 24,
    validation: int = 8,
    num_classes: int = 3,
    seed: int = 0,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
) -> str:
    """Writes the dataset (splits "train" and "validation") under ``data_dir``; returns its name.

    Pass the name and ``data_dir`` to ``tfds.data_source`` or, for ``"imagenet2012"``, use
    ``dataset="tfds:imagenet2012"`` with ``data_dir=data_dir`` in sslax. If the folder already
    holds the dataset, it is left as it is, whatever the arguments.
    """
    import tensorflow_datasets as tfds

    is_imagenet = name == IMAGENET
    if is_imagenet:
        if not 1 <= num_classes <= 1000:
            raise ValueError(f"imagenet2012 has 1000 classes, got num_classes={num_classes}")
        base = tfds.builder_cls(IMAGENET)
        version, pkg_dir = str(base.VERSION), base._get_pkg_dir_path()  # its README, CITATIONS
    else:
        base = tfds.core.GeneratorBasedBuilder
        version, pkg_dir = "1.0.0", None
    counts = {"train": train, "validation": validation}
    dataset_name = name

    class Builder(base, skip_registration=True):
        name = dataset_name
        VERSION = tfds.core.Version(version)
        pkg_dir_path = pkg_dir

        def _info(self):
            if is_imagenet:
                info = super()._info()  # the real features, so the registered builder reads them
            else:
                features = tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                        "label": tfds.features.ClassLabel(num_classes=num_classes),
                    }
                )
                info = tfds.core.DatasetInfo(
                    builder=self, features=features, supervised_keys=("image", "label")
                )
            info.as_proto.disable_shuffling = True  # record i of a split is example i
            return info

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing to download
            return {
                split: self._generate_examples(split, n, offset)
                for offset, (split, n) in enumerate(counts.items())
            }

        def _generate_examples(self, split, n, offset):
            rng = np.random.default_rng([seed, offset])
            for i in range(n):
                label = i % num_classes
                h, w = sizes[i % len(sizes)]
                example = {"image": _jpeg(_image(rng, label, num_classes, h, w)), "label": label}
                if is_imagenet:
                    example["file_name"] = f"{split}_{i:05d}.JPEG"
                yield i, example

    builder = Builder(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    return name
