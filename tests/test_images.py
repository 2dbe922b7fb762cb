"""Host-side photos (sslax.data.images): torchvision's crop rule, one decode per image, every
image mode to RGB, the evaluation centre crop, and DCT-domain downscaling."""

import io

import numpy as np
import pytest
import scipy.stats
from PIL import Image
from test_augment import torchvision_crop_params

from sslax.data import images

SIMCLR = ((0.08, 1.0), (3 / 4, 4 / 3))


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, format="PNG")
    return out.getvalue()


def coordinate_image(height: int, width: int) -> np.ndarray:
    """Red is the row and green the column, scaled to 0..255: a view shows where it came from."""
    rows = np.round(np.linspace(0, 255, height))[:, None].repeat(width, 1)
    cols = np.round(np.linspace(0, 255, width))[None, :].repeat(height, 0)
    return np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)


@pytest.mark.parametrize(
    "shape,scale,ratio",
    [((240, 320), *SIMCLR), ((500, 90), *SIMCLR), ((224, 224), (0.05, 0.4), (3 / 4, 4 / 3))],
)
def test_host_crop_sampler_matches_torchvision_distribution(shape, scale, ratio):
    height, width = shape
    draws = np.random.default_rng(0).random((4000, images.CROP_DRAWS))
    ours = np.array([images.sample_crop(d, height, width, scale, ratio) for d in draws])
    rng = np.random.default_rng(1)
    ref = np.array([torchvision_crop_params(rng, height, width, scale, ratio) for _ in draws])
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    for stat in (
        lambda b: b[:, 2] * b[:, 3] / (height * width),  # area fraction
        lambda b: np.log(b[:, 3] / b[:, 2]),  # aspect ratio
        lambda b: (b[:, 0] + b[:, 2] / 2) / height,  # centre row
        lambda b: (b[:, 1] + b[:, 3] / 2) / width,  # centre column
    ):
        assert scipy.stats.ks_2samp(stat(ours), stat(ref)).pvalue > 1e-3


def test_crop_draws_depend_on_seed_and_index_only():
    a = images.crop_draws(3, 1234, 2)
    np.testing.assert_array_equal(a, images.crop_draws(3, 1234, 2))
    assert not np.array_equal(a, images.crop_draws(3, 1235, 2))
    assert not np.array_equal(a, images.crop_draws(4, 1234, 2))
    assert a.shape == (2, images.CROP_DRAWS) and (a >= 0).all() and (a < 1).all()


def test_train_crops_are_torchvision_resized_crops_of_the_original():
    photo = np.random.default_rng(0).integers(0, 256, (90, 140, 3), dtype=np.uint8)
    crops = images.TrainCrops(views=((24,) + SIMCLR, (24,) + SIMCLR, (8, (0.05, 0.4), SIMCLR[1])))
    out = crops(png(photo), index=5)
    assert out["crops_24"].shape == (2, 24, 24, 3) and out["crops_8"].shape == (1, 8, 8, 3)
    views = [out["crops_24"][0], out["crops_24"][1], out["crops_8"][0]]
    for (top, left, h, w), (size, _, _), view in zip(crops.boxes(5, 90, 140), crops.views, views):
        box = (left, top, left + w, top + h)
        expected = Image.fromarray(photo).crop(box).resize((size, size), Image.BILINEAR)
        np.testing.assert_array_equal(view, np.asarray(expected))


def test_every_image_mode_becomes_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, format="JPEG", quality=95)
    cases = {
        "grayscale": (png(gray), np.repeat(gray[..., None], 3, -1)),
        "16-bit": (png(gray.astype(np.uint16) * 257), np.repeat(gray[..., None], 3, -1)),
        "palette": (_palette_png(rgb), None),
        "rgba": (png(np.dstack([rgb, np.full(gray.shape, 7, np.uint8)])), rgb),
        "gray+alpha": (png(np.dstack([gray, gray])), np.repeat(gray[..., None], 3, -1)),
        "cmyk jpeg": (cmyk.getvalue(), None),
    }
    whole = images.EvalImage(size=20, crop_fraction=1.0)
    for name, (data, expected) in cases.items():
        image = images._load_rgb(images._open(data), [])
        assert image.mode == "RGB" and image.size == (30, 20), name
        if expected is not None:
            np.testing.assert_array_equal(np.asarray(image), expected, err_msg=name)
        assert whole(data).shape == (20, 20, 3), name


def _palette_png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).convert("P").save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 1)])
def test_tiny_images_give_full_size_views(shape):
    data = png(np.full((*shape, 3), 200, np.uint8))
    crops = images.TrainCrops(views=((16,) + SIMCLR,) * 2)
    out = crops(data, index=0)["crops_16"]
    assert out.shape == (2, 16, 16, 3) and (out == 200).all()
    assert (images.EvalImage(16)(data) == 200).all()


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"this is not an image", "not an image"),
        (images.encode_jpeg(np.zeros((64, 64, 3), np.uint8))[:200], "truncated"),
    ],
)
def test_undecodable_data_raises_decode_error(data, reason):
    with pytest.raises(images.DecodeError):
        images.TrainCrops(views=((8,) + SIMCLR,))(data, index=0)
    with pytest.raises(images.DecodeError):
        images.EvalImage(8)(data)


def test_eval_image_is_the_centre_crop_of_the_resized_shorter_side():
    height, width = 240, 320
    coords = images.EvalImage(size=32, crop_fraction=0.875)(png(coordinate_image(height, width)))
    # Shorter side 240 -> round(32 / 0.875) = 37 px: the 32 px crop spans 240 * 32 / 37 px of
    # the original, centred. Red and green give the original row and column of each pixel.
    side = 240 * 32 / 37
    rows = coords[:, 0, 0] / 255 * (height - 1)
    cols = coords[0, :, 1] / 255 * (width - 1)
    pixel = side / 32
    assert rows[0] == pytest.approx((height - side) / 2 + pixel / 2 - 0.5, abs=1.5)
    assert rows[-1] == pytest.approx((height + side) / 2 - pixel / 2 - 0.5, abs=1.5)
    assert cols[0] == pytest.approx((width - side) / 2 + pixel / 2 - 0.5, abs=1.5)
    assert cols[-1] == pytest.approx((width + side) / 2 - pixel / 2 - 0.5, abs=1.5)


def test_dct_downscaling_decodes_smaller_when_every_box_allows_and_looks_the_same():
    yy, xx = np.mgrid[0:960, 0:1280]
    smooth = np.stack([xx / 5 % 256, yy / 4 % 256, (xx + yy) / 9 % 256], -1).astype(np.uint8)
    data = images.encode_jpeg(smooth, quality=95)
    assert images._load_rgb(images._open(data), [(9.0, 30.0)]).size == (160, 120)  # 1/8
    assert images._load_rgb(images._open(data), [(3.9, 30.0)]).size == (640, 480)  # 1/2
    assert images._load_rgb(images._open(data), [(1.9, 30.0)]).size == (1280, 960)
    views = ((32, (0.9, 1.0), (3 / 4, 4 / 3)),) * 2  # boxes of ~900 px drawn to 32 px: 1/8
    fast = images.TrainCrops(views, seed=0)(data, index=3)["crops_32"].astype(float)
    exact = images.TrainCrops(views, seed=0, dct_downscale=False)(data, index=3)["crops_32"]
    assert np.abs(fast - exact).mean() < 2.0  # of 255: the same picture
