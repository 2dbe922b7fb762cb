"""Vision Transformer backbones and the DINO head."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from sslax.models import Encoder
from sslax.models.dino_head import DINOHead, WeightNormDense, last_layer_mask
from sslax.models.vit import VIT_PRESETS, DropPath, ViT, interpolate_pos_embedding, vit_from_name


def _count(variables):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))


def _abstract_params(model, image_size):
    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)["params"]


def _tiny(**kw):
    kw = {
        "patch_size": 8,
        "hidden_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "mlp_dim": 64,
        "image_size": 32,
        **kw,
    }
    return ViT(**kw)


def _images(n=2, size=32, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 3))


# Jitted init/apply: one compilation per graph is much cheaper on CPU than op-by-op dispatch.
def _init(model, x, seed=0):
    return jax.jit(functools.partial(model.init, train=False))(jax.random.key(seed), x)


@functools.partial(jax.jit, static_argnames=("model", "train"))
def _apply_jit(model, variables, x, key, train):
    return model.apply(variables, x, train=train, rngs={"dropout": key})


def _apply(model, variables, x, *, train=False, seed=0):
    return _apply_jit(model, variables, x, jax.random.key(seed), train)


def _numpy_params(model, x, seed=0):
    """Random params with init's shapes, made in numpy: no init graph to compile."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)

    def fill(path, a):
        name = path[-1].key
        if name in ("scale", "bias"):
            return jnp.full(a.shape, 1.0 if name == "scale" else 0.0, a.dtype)
        return jnp.asarray(rng.normal(0.0, 0.02, a.shape), a.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)["params"]


@pytest.fixture(scope="module")
def tiny_variables():
    """Parameters of _tiny() (patch 8, depth 2, 32 px): independent of dtype and drop path."""
    return _init(_tiny(), _images())


def _reference_vit_count(dim, depth, mlp, patch=16, image=224):
    """timm/DINO ViT without classifier: patch conv, cls, pos, blocks, final norm."""
    tokens = (image // patch) ** 2 + 1
    block = (
        2 * 2 * dim  # norm1, norm2
        + dim * 3 * dim
        + 3 * dim  # qkv
        + dim * dim
        + dim  # proj
        + dim * mlp
        + mlp
        + mlp * dim
        + dim
    )  # fc1, fc2
    return patch * patch * 3 * dim + dim + dim + tokens * dim + depth * block + 2 * dim


# --- ViT ---------------------------------------------------------------------------------------


def test_param_counts_match_reference_architectures():
    assert _reference_vit_count(384, 12, 1536) == 21_665_664
    small = _abstract_params(vit_from_name("vit_small"), 224)
    assert _count(small) == 21_665_664
    base = _abstract_params(vit_from_name("vit_base"), 224)
    assert _count(base) == _reference_vit_count(768, 12, 3072) == 85_798_656
    small8 = _abstract_params(vit_from_name("vit_small", patch_size=8), 224)
    assert _count(small8) == _reference_vit_count(384, 12, 1536, patch=8)
    tiny = _abstract_params(vit_from_name("vit_tiny"), 224)
    assert _count(tiny) == _reference_vit_count(192, 12, 768) == 5_524_416
    assert small["pos_embedding"].shape == (1, 197, 384)
    assert small8["pos_embedding"].shape == (1, 785, 384)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(small))


@pytest.mark.parametrize("patch,tokens", [(8, 785), (16, 197)])
def test_preset_output_shapes(patch, tokens):
    # Shapes only: nothing is computed.
    model = vit_from_name("vit_small", patch_size=patch)
    x = jax.ShapeDtypeStruct((3, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    assert variables["params"]["pos_embedding"].shape == (1, tokens, 384)
    assert variables["params"]["patch_embed"]["kernel"].shape == (patch, patch, 3, 384)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert out.shape == (3, 384) and out.dtype == jnp.float32


def test_small_model_output(tiny_variables):
    h = _apply(_tiny(), tiny_variables, _images())
    assert h.shape == (2, 32) and h.dtype == jnp.float32
    assert np.all(np.isfinite(h))
    # h is the CLS token after the final LayerNorm (scale 1, bias 0 at init): zero mean, unit var.
    np.testing.assert_allclose(h.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(h.var(-1), 1.0, atol=1e-2)
    # ... and a function of the image: different images give different h.
    assert not np.allclose(h[0], h[1], atol=1e-3)


def test_invalid_patch_or_input_size_raises(tiny_variables):
    with pytest.raises(ValueError, match="patch_size"):
        vit_from_name("vit_small", patch_size=12)
    with pytest.raises(ValueError, match="patch_size"):
        vit_from_name("vit_small", patch_size=0)
    with pytest.raises(ValueError, match="unknown ViT"):
        vit_from_name("vit_huge")
    with pytest.raises(ValueError, match="hidden_dim"):
        _tiny(num_heads=3)
    with pytest.raises(ValueError, match="not divisible"):
        _tiny().apply(tiny_variables, _images(size=36), train=False)
    assert set(VIT_PRESETS) == {"vit_micro", "vit_tiny", "vit_small", "vit_base"}


def test_pos_embedding_interpolation_same_grid_is_identity():
    pos = jax.random.normal(jax.random.key(1), (14 * 14, 8))
    np.testing.assert_array_equal(interpolate_pos_embedding(pos, (14, 14)), pos)
    # Upsampling then reading the grid back at the original size is not an identity, but a
    # constant embedding stays constant (the cubic kernel sums to one).
    const = jnp.ones((14 * 14, 8)) * 0.3
    np.testing.assert_allclose(interpolate_pos_embedding(const, (6, 6)), 0.3, atol=1e-6)


def test_pos_embedding_interpolation_keeps_row_column_layout():
    side, dim = 14, 4
    rows = jnp.repeat(jnp.arange(side, dtype=jnp.float32), side)  # row-major: i of patch (i, j)
    cols = jnp.tile(jnp.arange(side, dtype=jnp.float32), side)
    pos = jnp.stack([rows, cols, rows, -cols], axis=-1)
    out = np.asarray(interpolate_pos_embedding(pos, (6, 10))).reshape(6, 10, dim)
    # Channel 0 depends on the row only and increases down the rows; channel 1 on the column.
    np.testing.assert_allclose(out[:, :, 0], out[:, :1, 0].repeat(10, axis=1), atol=1e-5)
    np.testing.assert_allclose(out[:, :, 1], out[:1, :, 1].repeat(6, axis=0), atol=1e-5)
    assert np.all(np.diff(out[:, 0, 0]) > 0) and np.all(np.diff(out[0, :, 1]) > 0)
    assert out[0, 0, 0] < 2 and out[-1, 0, 0] > side - 3  # spans the same range


def test_local_crop_on_model_initialised_at_224():
    model = ViT(patch_size=16, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, image_size=224)
    crops = _images(2, 96, seed=3)
    # The table's shape comes from image_size, not from the input used for init.
    params = _numpy_params(model, crops)
    assert params["pos_embedding"].shape == (1, 197, 32)
    h = _apply(model, {"params": params}, crops)
    assert h.shape == (2, 32) and np.all(np.isfinite(h))
    # Same as a model built for 96 px whose table is the CLS entry plus the resized 14x14 grid
    # (the CLS position is carried over, not interpolated).
    pos = params["pos_embedding"][0]
    small_pos = jnp.concatenate([pos[:1], interpolate_pos_embedding(pos[1:], (6, 6))])[None]
    model96 = model.clone(image_size=96)
    h96 = _apply(model96, {"params": {**params, "pos_embedding": small_pos}}, crops)
    np.testing.assert_allclose(h, h96, atol=1e-5)
    # Non-square inputs get a non-square grid, (rows, columns) = (6, 10) for 96 x 160 px.
    wide = _images(2, 160)[:, :96]
    h, state = jax.jit(functools.partial(model.apply, train=False, mutable=["intermediates"]))(
        {"params": params}, wide
    )
    assert h.shape == (2, 32) and np.all(np.isfinite(h))
    (used,) = state["intermediates"]["pos_embedding"]
    expected = jnp.concatenate([pos[:1], interpolate_pos_embedding(pos[1:], (6, 10))])
    np.testing.assert_allclose(used, expected, atol=1e-6)


def test_bfloat16_compute_float32_params(tiny_variables):
    x = _images(4)
    bf16 = _tiny(dtype=jnp.bfloat16)
    abstract = jax.eval_shape(lambda x: bf16.init(jax.random.key(0), x, train=False), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract))
    assert jax.tree.structure(abstract) == jax.tree.structure(tiny_variables)
    h16 = _apply(bf16, tiny_variables, x)
    h32 = _apply(_tiny(), tiny_variables, x)
    assert h16.dtype == jnp.float32
    np.testing.assert_allclose(h16, h32, atol=0.1)
    assert np.corrcoef(np.ravel(h16), np.ravel(h32))[0, 1] > 0.999
    assert not np.allclose(h16, h32, atol=1e-5)  # really computed in bfloat16


def test_drop_path_per_sample():
    x = jnp.ones((2000, 3, 4))
    y = DropPath(0.25).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
    per_sample = np.asarray(y).reshape(2000, -1)
    np.testing.assert_allclose(np.unique(per_sample), [0.0, 1 / 0.75], rtol=1e-6)
    assert np.all(per_sample.min(1) == per_sample.max(1))  # whole sample dropped or kept
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.04
    np.testing.assert_array_equal(DropPath(0.25).apply({}, x, train=False), x)


def test_stochastic_depth_only_in_train_mode(tiny_variables):
    x = _images(4)
    model = _tiny(drop_path_rate=0.5)
    plain = _tiny()

    def run(m, train, seed):
        return _apply(m, tiny_variables, x, train=train, seed=seed)

    ref = run(plain, False, 0)
    np.testing.assert_array_equal(run(model, False, 1), ref)
    np.testing.assert_array_equal(run(model, False, 2), ref)
    np.testing.assert_array_equal(run(plain, True, 1), ref)  # no other randomness in train mode
    a, b = run(model, True, 1), run(model, True, 2)
    assert not np.allclose(a, ref, atol=1e-4)
    assert not np.allclose(a, b, atol=1e-4)


# --- DINO head ---------------------------------------------------------------------------------


def _head(**kw):
    kw = {"out_dim": 48, "hidden_dim": 32, "bottleneck_dim": 8, **kw}
    return DINOHead(**kw)


def _feats(n=6, dim=24, seed=0, scale=1.0):
    return scale * jax.random.normal(jax.random.key(seed), (n, dim))


@pytest.mark.parametrize("num_layers,use_bn", [(3, False), (1, False), (2, True)])
def test_dino_head_output_shape(num_layers, use_bn):
    head = _head(num_layers=num_layers, use_bn=use_bn)
    variables = head.init(jax.random.key(0), _feats(), train=False)
    out, _ = head.apply(variables, _feats(), train=True, mutable=["batch_stats"])
    assert out.shape == (6, 48) and out.dtype == jnp.float32
    dims = [v["kernel"].shape for k, v in variables["params"].items() if k.startswith("mlp_")]
    assert (
        dims == {3: [(24, 32), (32, 32), (32, 8)], 1: [(24, 8)], 2: [(24, 32), (32, 8)]}[num_layers]
    )
    assert ("batch_stats" in variables) == use_bn


def test_dino_head_default_size():
    head = DINOHead()
    x = jax.ShapeDtypeStruct((2, 384), jnp.float32)
    params = jax.eval_shape(lambda x: head.init(jax.random.key(0), x, train=False), x)["params"]
    assert params["last_layer"]["v"].shape == (256, 65536)
    assert (
        _count(params)
        == (384 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 256 + 256) + 256 * 65536
    )


def test_weight_norm_last_layer():
    head = _head()
    x = _feats()
    params = head.init(jax.random.key(0), x, train=False)["params"]
    assert set(params["last_layer"]) == {"v"}  # g fixed to 1: not a parameter
    out = head.apply({"params": params}, x, train=False)
    scaled = {**params, "last_layer": {"v": 3.7 * params["last_layer"]["v"]}}
    np.testing.assert_allclose(head.apply({"params": scaled}, x, train=False), out, atol=1e-6)
    # The effective kernel [in, out], read off with one-hot inputs: unit-norm columns.
    kernel = WeightNormDense(48).apply({"params": params["last_layer"]}, jnp.eye(8))
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, atol=1e-6)
    # With norm_last_layer=False, g is a parameter (init 1) that sets the column norms.
    free = _head(norm_last_layer=False)
    fparams = free.init(jax.random.key(0), x, train=False)["params"]
    assert set(fparams["last_layer"]) == {"v", "g"}
    np.testing.assert_array_equal(fparams["last_layer"]["g"], 1.0)
    g = jnp.arange(1.0, 49.0)
    kernel = WeightNormDense(48, learn_scale=True).apply(
        {"params": {**fparams["last_layer"], "g": g}}, jnp.eye(8)
    )
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), g, rtol=1e-5)


def test_bottleneck_is_l2_normalised():
    head = _head()
    x = _feats(scale=50.0)
    params = head.init(jax.random.key(0), x, train=False)["params"]
    out = head.apply({"params": params}, x, train=False)
    # Unit bottleneck times unit columns: every logit is a cosine.
    assert np.abs(out).max() <= 1.0 + 1e-5
    # Scaling the bottleneck layer leaves the logits unchanged.
    last_mlp = params["mlp_2"]
    scaled = {**params, "mlp_2": jax.tree.map(lambda p: 9.0 * p, last_mlp)}
    np.testing.assert_allclose(head.apply({"params": scaled}, x, train=False), out, atol=1e-5)


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_last_layer_mask_selects_exactly_the_last_layer(norm_last_layer):
    head = _head(norm_last_layer=norm_last_layer)
    params = head.init(jax.random.key(0), _feats(), train=False)["params"]
    mask = last_layer_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    flat = traverse_util.flatten_dict(mask)
    expected = {("last_layer", "v")} | (set() if norm_last_layer else {("last_layer", "g")})
    assert {k for k, v in flat.items() if v is True} == expected
    assert all(v is False for k, v in flat.items() if k not in expected)
    # Nested inside an encoder's variables, and usable to freeze the layer with optax.
    enc = Encoder(backbone=_tiny(depth=1), head=head)
    variables = jax.eval_shape(lambda x: enc.init(jax.random.key(0), x, train=False), _images())
    flat = traverse_util.flatten_dict(last_layer_mask(variables))
    assert {k for k, v in flat.items() if v} == {("params", "head") + k for k in expected}
    grads = jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype), variables["params"])
    tx = optax.masked(optax.set_to_zero(), last_layer_mask(grads))
    updates, _ = tx.update(grads, tx.init(grads))
    for path, u in traverse_util.flatten_dict(updates).items():
        frozen = path[:2] == ("head", "last_layer")
        assert float(jnp.abs(u).max()) == (0.0 if frozen else 1.0), path
