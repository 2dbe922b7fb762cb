"""Tests for sslax.augment against numpy / colorsys / scipy / PIL references.

Per-op tests compare with independent float64 references of torchvision's float-tensor
semantics; statistical tests run the real parameter sampler a few thousand times (cheap:
no images) and compare with a pure-Python port of torchvision's crop sampler.
"""

import colorsys
import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image

from sslax import augment as aug

GRAY = np.array([0.2989, 0.587, 0.114])


def random_image(seed, shape=(12, 10, 3)):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def random_uint8(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------- numpy references


def np_blend(img, other, factor):
    return np.clip(factor * img + (1 - factor) * other, 0, 1)


def np_luma(img):
    return img.astype(np.float64) @ GRAY


def np_brightness(img, f):
    return np_blend(img, 0.0, f)


def np_contrast(img, f):
    return np_blend(img, np_luma(img).mean(), f)


def np_saturation(img, f):
    return np_blend(img, np_luma(img)[..., None], f)


def np_hue(img, delta):
    out = np.empty(img.shape)
    for idx in np.ndindex(img.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*img[idx].astype(np.float64))
        out[idx] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
    return out


def np_grayscale(img):
    return np.repeat(np_luma(img)[..., None], 3, axis=-1)


def np_blur(img, sigma, kernel_size, mode="mirror"):
    """torchvision's kernel; torch 'reflect' padding is scipy's 'mirror'."""
    x = np.arange(kernel_size) - kernel_size // 2
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    taps /= taps.sum()
    out = scipy.ndimage.correlate1d(img.astype(np.float64), taps, axis=0, mode=mode)
    return scipy.ndimage.correlate1d(out, taps, axis=1, mode=mode)


def pil_resized_crop(img, top, left, height, width, size):
    """Crop, then PIL's antialiased bilinear resize, per channel in 32-bit float mode."""
    box = (left, top, left + width, top + height)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(img[..., c], np.float32))
            .crop(box)
            .resize((size, size), Image.Resampling.BILINEAR)
        )
        for c in range(img.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def torchvision_crop_params(rng, height, width, scale, ratio):
    """Line-for-line port of torchvision's RandomResizedCrop.get_params."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# ---------------------------------------------------------------- per-image ops


@pytest.mark.parametrize("factor", [0.0, 0.3, 1.0, 1.7])
def test_blend_ops_match_torchvision_semantics(factor):
    img = random_image(0)
    for ours, ref in [
        (aug.adjust_brightness, np_brightness),
        (aug.adjust_contrast, np_contrast),
        (aug.adjust_saturation, np_saturation),
    ]:
        out = np.asarray(ours(jnp.asarray(img), factor))
        np.testing.assert_allclose(out, ref(img, factor), atol=1e-6, err_msg=ours.__name__)
        assert out.min() >= 0 and out.max() <= 1


def test_hue_matches_colorsys():
    img = random_image(1, (6, 6, 3))
    # Greys, primaries, secondaries and ties between the max channels exercise every branch.
    img[0, :6] = [[0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]]
    img[1, :3] = [[1, 0, 1], [0.2, 0.7, 0.7], [0.7, 0.7, 0.2]]
    adjust = jax.jit(aug.adjust_hue)
    for delta in [-0.5, -0.27, 0.0, 0.1, 1 / 3, 0.5]:
        out = np.asarray(adjust(jnp.asarray(img), delta))
        np.testing.assert_allclose(out, np_hue(img, delta), atol=2e-6, err_msg=f"{delta=}")


def test_grayscale_and_solarize():
    img = random_image(2)
    gray = np.asarray(aug.to_grayscale(jnp.asarray(img)))
    np.testing.assert_allclose(gray, np_grayscale(img), atol=1e-6)
    img[0, 0] = 0.5  # at the threshold: inverted, as torchvision's `>=`
    out = np.asarray(aug.solarize(jnp.asarray(img), 0.5))
    np.testing.assert_allclose(out, np.where(img >= 0.5, 1 - img, img))


@pytest.mark.parametrize("sigma,kernel_size", [(0.1, 3), (0.8, 5), (2.0, 23)])
def test_blur_matches_scipy_mirror(sigma, kernel_size):
    img = random_image(3, (24, 20, 3))
    out = np.asarray(aug.gaussian_blur(jnp.asarray(img), sigma, kernel_size))
    np.testing.assert_allclose(out, np_blur(img, sigma, kernel_size), atol=1e-6)


def test_blur_padding_is_not_scipy_reflect():
    # scipy's 'reflect' repeats the edge pixel; torch's (and ours) does not.
    img = random_image(4, (16, 16, 3))
    out = np.asarray(aug.gaussian_blur(jnp.asarray(img), 1.5, 7))
    assert np.abs(out - np_blur(img, 1.5, 7, mode="reflect"))[0].max() > 1e-3


def test_blur_kernel_size_is_ten_percent_odd():
    assert [aug.blur_kernel_size(s) for s in (32, 64, 96, 224)] == [3, 7, 9, 23]


@pytest.mark.parametrize(
    "box,size",
    [((0, 0, 24, 20), 8), ((3, 5, 13, 9), 16), ((10, 1, 7, 18), 11), ((0, 0, 24, 20), 24)],
)
def test_resized_crop_matches_pil(box, size):
    img = random_image(5, (24, 20, 3))
    out = np.asarray(aug.resized_crop(jnp.asarray(img), *box, size))
    np.testing.assert_allclose(out, pil_resized_crop(img, *box, size), atol=2e-6)
    flipped = np.asarray(aug.resized_crop(jnp.asarray(img), *box, size, flip=True))
    np.testing.assert_allclose(flipped, out[:, ::-1], atol=1e-6)


def test_resized_crop_of_whole_image_at_same_size_is_identity():
    img = random_image(6, (16, 16, 3))
    out = aug.resized_crop(jnp.asarray(img), 0, 0, 16, 16, 16)
    np.testing.assert_array_equal(np.asarray(out), img)


# ---------------------------------------------------------------- crop sampler


def sample_boxes(shape, scale, ratio, n=4000, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    boxes = jax.jit(jax.vmap(lambda k: aug.sample_crop(k, shape, scale, ratio)))(keys)
    return {k: np.asarray(v) for k, v in boxes.items()}


def reference_boxes(shape, scale, ratio, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    rows = [torchvision_crop_params(rng, shape[0], shape[1], scale, ratio) for _ in range(n)]
    return dict(zip(["top", "left", "height", "width"], np.array(rows).T))


@pytest.mark.parametrize(
    "shape,scale,ratio",
    [
        ((32, 32), (0.08, 1.0), (3 / 4, 4 / 3)),  # SimCLR
        ((224, 224), (0.05, 0.4), (3 / 4, 4 / 3)),  # DINO local
        ((20, 60), (0.5, 1.0), (3 / 4, 4 / 3)),  # wide image: often falls back
    ],
)
def test_crop_sampler_matches_torchvision_distribution(shape, scale, ratio):
    ours, ref = sample_boxes(shape, scale, ratio), reference_boxes(shape, scale, ratio)
    height, width = shape
    assert (ours["top"] >= 0).all() and (ours["left"] >= 0).all()
    assert (ours["top"] + ours["height"] <= height).all()
    assert (ours["left"] + ours["width"] <= width).all()
    area = ours["height"] * ours["width"] / (height * width)
    ref_area = ref["height"] * ref["width"] / (height * width)
    # Sides are rounded, so bounds hold up to one pixel per side.
    slack = (height + width + 1) / (height * width)
    assert area.min() >= scale[0] - slack and area.max() <= scale[1] + slack
    for stat in [
        lambda b, a: a,
        lambda b, a: np.log(b["width"] / b["height"]),
        lambda b, a: (b["top"] + b["height"] / 2) / height,
        lambda b, a: (b["left"] + b["width"] / 2) / width,
    ]:
        assert scipy.stats.ks_2samp(stat(ours, area), stat(ref, ref_area)).pvalue > 1e-3


def test_crop_side_follows_uniform_area_exactly():
    # With ratio fixed at 1 and scale below 1 every first attempt fits, so the side is
    # round(64 sqrt(a)) with a ~ U(0.2, 0.9): its law is known in closed form.
    boxes = sample_boxes((64, 64), (0.2, 0.9), (1.0, 1.0))
    assert (boxes["height"] == boxes["width"]).all()
    sides = np.arange(boxes["height"].min(), boxes["height"].max() + 1)
    edges = np.clip(((sides[:, None] + [-0.5, 0.5]) / 64) ** 2, 0.2, 0.9)
    probs = np.diff(edges, axis=1)[:, 0] / 0.7
    counts = (boxes["height"][:, None] == sides).sum(axis=0)
    assert scipy.stats.chisquare(counts, probs * counts.sum()).pvalue > 1e-3


def test_crop_fallback_is_torchvision_centre_crop():
    # Scale 1 cannot fit with an aspect ratio other than the image's: always falls back.
    for shape, expected in [((20, 60), (0, 16, 20, 27)), ((60, 20), (16, 0, 27, 20))]:
        box = aug.sample_crop(jax.random.key(0), shape, (1.0, 1.0), (3 / 4, 4 / 3))
        got = tuple(int(box[k]) for k in ("top", "left", "height", "width"))
        rng = np.random.default_rng(0)
        assert got == expected == torchvision_crop_params(rng, *shape, (1, 1), (3 / 4, 4 / 3))


# ---------------------------------------------------------------- view parameters


@pytest.fixture(scope="module")
def byol_params():
    """5000 draws of each BYOL view's parameters at 32 px."""
    recipe = aug.byol_recipe(32)

    @jax.jit
    def draw(keys):
        return [
            jax.vmap(lambda k: aug.sample_view_params(jax.random.fold_in(k, v), view, (40, 40, 3)))(
                keys
            )
            for v, view in enumerate(recipe.views)
        ]

    draws = draw(jax.random.split(jax.random.key(1), 5000))
    return recipe, [{k: np.asarray(x) for k, x in params.items()} for params in draws]


def assert_rate(flags, p, n_sigma=4.5):
    n = flags.size
    assert abs(flags.mean() - p) <= n_sigma * math.sqrt(p * (1 - p) / n) + 1e-9, (flags.mean(), p)


def test_op_rates_match_recipe(byol_params):
    recipe, draws = byol_params
    for view, params in zip(recipe.views, draws):
        assert_rate(params["flip"], view.flip_prob)
        assert_rate(params["jitter"], view.jitter_prob)
        assert_rate(params["grayscale"], view.grayscale_prob)
        assert_rate(params["blur"], view.blur_prob)
        assert_rate(params["solarize"], view.solarize_prob)
    assert draws[0]["blur"].all() and not draws[0]["solarize"].any()


def test_jitter_draws_within_ranges(byol_params):
    recipe, draws = byol_params
    view, params = recipe.views[0], draws[0]
    for name, strength in [("brightness", 0.4), ("contrast", 0.4), ("saturation", 0.2)]:
        assert getattr(view, name) == strength
        x = params[name]
        assert x.min() >= 1 - strength and x.max() <= 1 + strength
        uniform = scipy.stats.uniform(1 - strength, 2 * strength)
        assert scipy.stats.kstest(x, uniform.cdf).pvalue > 1e-3
    assert np.abs(params["hue"]).max() <= 0.1
    assert params["blur_sigma"].min() >= 0.1 and params["blur_sigma"].max() <= 2.0


def test_jitter_order_is_uniform_permutation(byol_params):
    order = byol_params[1][0]["jitter_order"]
    assert (np.sort(order, axis=1) == np.arange(4)).all()
    counts = np.stack([(order == op).mean(axis=0) for op in range(4)])  # op x position
    assert np.abs(counts - 0.25).max() < 0.03
    assert len({tuple(o) for o in order}) == 24


def test_draws_are_independent_across_views_and_ops(byol_params):
    _, (first, second) = byol_params
    assert abs(np.corrcoef(first["brightness"], second["brightness"])[0, 1]) < 0.06
    assert abs(np.corrcoef(first["flip"], first["jitter"])[0, 1]) < 0.06


# ---------------------------------------------------------------- applying a view


def base_params(**overrides):
    params = dict(top=2, left=3, height=20, width=14, jitter_order=np.arange(4, dtype=np.int32))
    params.update(dict.fromkeys(["flip", "jitter", "grayscale", "blur", "solarize"], False))
    params.update(dict.fromkeys(["brightness", "contrast", "saturation", "blur_sigma"], 1.0))
    params.update(hue=0.0)
    params.update(overrides)
    return {k: jnp.asarray(v) for k, v in params.items()}


NP_JITTER = [
    lambda x, p: np_brightness(x, p["brightness"]),
    lambda x, p: np_contrast(x, p["contrast"]),
    lambda x, p: np_saturation(x, p["saturation"]),
    lambda x, p: np.clip(np_hue(x, p["hue"]), 0, 1),
]


def test_jitter_applies_ops_in_sampled_order():
    view = aug.ViewRecipe(size=8, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
    img = random_image(7, (16, 16, 3))
    orders = np.array(list(itertools.permutations(range(4))), np.int32)
    draws = dict(brightness=1.6, contrast=0.3, saturation=1.7, hue=0.15)
    params = base_params(jitter=True, top=0, left=0, height=16, width=16, **draws)
    params = {k: jnp.broadcast_to(v, (24,) + v.shape) for k, v in params.items()}
    params["jitter_order"] = jnp.asarray(orders)
    out = jax.jit(jax.vmap(lambda p: aug.apply_view(jnp.asarray(img), p, view)))(params)
    cropped = pil_resized_crop(img, 0, 0, 16, 16, 8)
    outs = set()
    for order, got in zip(orders, np.asarray(out)):
        expected = cropped
        for op in order:
            expected = NP_JITTER[op](expected, draws)
        np.testing.assert_allclose(got, expected, atol=3e-6, err_msg=str(order))
        outs.add(got.round(4).tobytes())
    # Brightness commutes with contrast and saturation but for clipping, so not all 24
    # orders differ; enough do that a wrong order would be caught.
    assert len(outs) >= 12


def test_apply_view_matches_reference_pipeline():
    view = aug.ViewRecipe(size=12, saturation=0.2, solarize_prob=0.2, solarize_threshold=0.4)
    image = random_uint8(8, (30, 26, 3))
    draws = dict(brightness=0.7, contrast=1.3, saturation=0.9, hue=-0.08, blur_sigma=0.9)
    params = base_params(
        flip=True, jitter=True, jitter_order=[2, 0, 3, 1], blur=True, solarize=True, **draws
    )
    got = np.asarray(aug.apply_view(jnp.asarray(image), params, view))
    expected = pil_resized_crop(image / 255.0, 2, 3, 20, 14, 12)[:, ::-1]
    for op in [2, 0, 3, 1]:
        expected = NP_JITTER[op](expected, draws)
    expected = np_blur(expected, 0.9, view.kernel_size)
    expected = np.where(expected >= 0.4, 1 - expected, expected)
    np.testing.assert_allclose(got, expected, atol=3e-6)

    grey = np.asarray(aug.apply_view(jnp.asarray(image), base_params(grayscale=True), view))
    expected = np_grayscale(pil_resized_crop(image / 255.0, 2, 3, 20, 14, 12))
    np.testing.assert_allclose(grey, expected, atol=3e-6)


# ---------------------------------------------------------------- recipes


def test_recipes_are_hashable_data():
    recipes = [
        aug.simclr_recipe(32, 0.5, blur=False),
        aug.moco_v2_recipe(224),
        aug.byol_recipe(224),
        aug.dino_multicrop_recipe(),
    ]
    assert len({*recipes, aug.simclr_recipe(32, 0.5, blur=False)}) == 4
    simclr = recipes[0].views[0]
    assert (simclr.brightness, simclr.hue, simclr.blur_prob) == (0.4, 0.1, 0.0)
    assert aug.simclr_recipe(224).views[0].brightness == 0.8
    byol = recipes[2].views
    assert [(v.blur_prob, v.solarize_prob) for v in byol] == [(1.0, 0.0), (0.1, 0.2)]
    assert (byol[0].brightness, byol[0].saturation, byol[0].hue) == (0.4, 0.2, 0.1)
    assert recipes[1].views[0].crop_scale == (0.2, 1.0)
    dino = recipes[3]
    assert dino.sizes == (224, 96) and len(dino.views) == 10
    blur_solarize = [(v.blur_prob, v.solarize_prob) for v in dino.views[:3]]
    assert blur_solarize == [(1.0, 0.0), (0.1, 0.2), (0.5, 0.0)]
    assert dino.views[0].crop_scale == (0.4, 1.0) and dino.views[2].crop_scale == (0.05, 0.4)
    for recipe in recipes:
        assert aug.with_strength(recipe, 1.0) == recipe


def test_strength_zero_is_resized_original():
    images = random_uint8(9, (3, 20, 20, 3))
    recipe = aug.with_strength(aug.byol_recipe(16), 0.0)
    views = np.asarray(aug.two_views(jax.random.key(3), images, recipe))
    resized = [pil_resized_crop(im / 255.0, 0, 0, 20, 20, 16) for im in images]
    np.testing.assert_allclose(views, np.stack([resized, resized], axis=1), atol=2e-6)


def test_strength_scales_crop_and_colour():
    strong = aug.with_strength(aug.simclr_recipe(32), 2.0).views[0]
    assert strong.crop_scale[0] == pytest.approx(0.08**2) and strong.hue == 0.4
    assert strong.brightness == 1.6 and strong.grayscale_prob == 0.2
    half = aug.with_strength(aug.simclr_recipe(32), 0.5).views[0]
    assert half.flip_prob == 0.25 and half.blur_prob == 0.25


def test_bad_recipes_are_rejected():
    with pytest.raises(ValueError, match="hue"):
        aug.ViewRecipe(size=8, hue=0.6)
    with pytest.raises(ValueError, match="multi_crop"):
        images = jnp.zeros((1, 8, 8, 3), jnp.uint8)
        aug.two_views(jax.random.key(0), images, aug.dino_multicrop_recipe(8, 4, 2))


# ---------------------------------------------------------------- batches

# One image shape and recipe across these tests (and the module's doctests), so the
# jitted functions compile once.
SMALL = aug.simclr_recipe(16)
DINO = aug.dino_multicrop_recipe(16, 8, num_local=3)
N = 4


def batch(seed):
    return random_uint8(seed, (N, 24, 24, 3))


def test_two_views_shape_range_and_determinism():
    images = batch(10)
    views = np.asarray(aug.two_views(jax.random.key(0), images, SMALL))
    assert views.shape == (N, 2, 16, 16, 3) and views.dtype == np.float32
    assert views.min() >= 0 and views.max() <= 1
    np.testing.assert_array_equal(views, aug.two_views(jax.random.key(0), images, SMALL))
    other = np.asarray(aug.two_views(jax.random.key(1), images, SMALL))
    assert np.abs(views - other).reshape(2 * N, -1).max(axis=1).min() > 0.01
    assert len({v.round(3).tobytes() for v in views.reshape(2 * N, -1)}) == 2 * N


def test_views_of_row_i_come_from_image_i():
    # Flat colours survive crop and flip, so without colour ops a view shows its image's
    # colour.
    colours = np.random.default_rng(11).integers(0, 256, (N, 3), dtype=np.uint8)
    images = np.broadcast_to(colours[:, None, None], (N, 24, 24, 3))
    no_colour = dataclasses.replace(SMALL.views[0], jitter_prob=0, grayscale_prob=0)
    recipe = aug.Recipe("crop", (no_colour, no_colour))
    views = np.asarray(aug.two_views(jax.random.key(0), images, recipe))
    expected = np.broadcast_to(colours[:, None] / 255, (N, 2, 3))
    np.testing.assert_allclose(views.mean(axis=(2, 3)), expected, atol=1e-5)


def test_views_depend_on_index_not_batch_position():
    images, key = batch(12), jax.random.key(5)
    indices = jnp.array([10, 11, 12, 13])
    views = np.asarray(aug.two_views(key, images, SMALL, indices=indices))
    # Example 12 at another position, next to other images and indices.
    mixed = np.stack([images[3], images[0], images[0], images[2]])
    got = np.asarray(aug.two_views(key, mixed, SMALL, indices=jnp.array([13, 99, 98, 12])))
    np.testing.assert_allclose(got[[3, 0]], views[[2, 3]], atol=1e-6)
    # The same image twice with different indices gets different views.
    assert np.abs(got[1] - got[2]).max() > 0.01


def test_multi_crop_groups_by_size_image_major():
    images, key = batch(13), jax.random.key(0)
    globals_, locals_ = aug.multi_crop(key, images, DINO)
    assert globals_.shape == (N, 2, 16, 16, 3) and locals_.shape == (N, 3, 8, 8, 3)
    # Views 2 and 4 share a recipe, so this compiles augment_view twice, not three times.
    for v, i in [(1, 2), (2, 0), (4, 3)]:
        view_key = jax.random.fold_in(jax.random.fold_in(key, i), v)
        expected = aug.augment_view(view_key, images[i], DINO.views[v])
        got = globals_[i, v] if v < 2 else locals_[i, v - 2]
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=f"view {v} of image {i}")
    # A subset of the views is those views of the full call, at their positions' keys.
    (only_second_local,) = aug.multi_crop(key, images, DINO, views=(3,))
    np.testing.assert_allclose(only_second_local[:, 0], locals_[:, 1], atol=1e-6)
    with pytest.raises(ValueError, match="distinct positions"):
        aug.multi_crop(key, images, DINO, views=(1, 1))


def test_sharded_batch_is_augmented_in_place():
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    images = random_uint8(14, (len(devices), 24, 24, 3))
    sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
    key = jax.random.key(9)
    got = aug.two_views(key, sharded, SMALL)
    assert got.sharding.spec[0] == "data"
    # Unsharded, in batches of N: views depend on the global index only. With one example
    # per device this also guards against an XLA:CPU miscompile seen at vmap batch 1.
    parts = [
        aug.two_views(key, images[s : s + N], SMALL, indices=jnp.arange(s, s + N))
        for s in range(0, len(devices), N)
    ]
    np.testing.assert_allclose(got, np.concatenate(parts), atol=1e-5)
    # Each device augments its own images and keeps their views: nothing crosses devices.
    hlo = aug.two_views.lower(key, sharded, SMALL).compile().as_text()
    ops = ("all-gather", "all-to-all", "collective-permute", "all-reduce", "reduce-scatter")
    collectives = [line for line in hlo.splitlines() if any(op + "(" in line for op in ops)]
    assert not collectives, collectives


def test_finish_crops_applies_the_rest_of_the_recipe_to_host_crops():
    # Crops the host cut (here the whole square image, which the device's crop of scale and
    # ratio 1 also takes) get the same flips, colours and blur as multi_crop gives the images.
    images = jnp.asarray(random_uint8(3, (5, 16, 16, 3)))
    whole = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), solarize_prob=0.3)
    recipe = aug.dino_multicrop_recipe(16, 16, num_local=2)
    recipe = aug.Recipe("whole", tuple(dataclasses.replace(v, **whole) for v in recipe.views))
    key, indices = jax.random.key(4), jnp.arange(10, 15)
    (ref,) = aug.multi_crop(key, images, recipe, indices=indices)
    crops = (jnp.repeat(images[:, None], 4, axis=1),)
    (out,) = aug.finish_crops(key, crops, recipe, indices=indices)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)
    (second,) = aug.finish_crops(key, crops, recipe, indices=indices, views=(1,))
    np.testing.assert_allclose(np.asarray(second)[:, 0], np.asarray(out)[:, 1], atol=1e-6)
    with pytest.raises(ValueError, match="needs host crops of shapes"):
        aug.finish_crops(key, (crops[0][:, :3],), recipe, indices=indices)
