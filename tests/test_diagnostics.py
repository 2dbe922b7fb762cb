"""Tests for sslax.diagnostics against float64 numpy references and known extreme cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from sslax import diagnostics


def random_array(seed, shape):
    # Rows of very different lengths, so a missing normalisation shows.
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * rng.uniform(0.1, 10.0, (shape[0], 1))


def normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_alignment(x, y, alpha):
    return np.mean(np.linalg.norm(normalize(x) - normalize(y), axis=1) ** alpha)


def ref_uniformity(z, t):
    return np.log(np.mean(np.exp(-t * pdist(normalize(z)) ** 2)))


def ref_embedding_std(z):
    return np.mean(np.std(normalize(z), axis=0))


def ref_effective_rank(z):
    singular_values = np.linalg.svd(z, compute_uv=False)
    p = singular_values / singular_values.sum()
    p = p[p > 0]
    return np.exp(-np.sum(p * np.log(p)))


@pytest.mark.parametrize("alpha", [2, 1, 3.5])
def test_alignment_matches_reference(alpha):
    x, y = random_array(0, (12, 5)), random_array(1, (12, 5))
    value = jax.jit(diagnostics.alignment, static_argnums=2)(
        jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), alpha
    )
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, ref_alignment(x, y, alpha), rtol=1e-5)


def test_alignment_of_identical_pairs_is_zero_with_finite_gradient():
    z = jnp.asarray(random_array(2, (6, 4)), jnp.float32)
    value, grad = jax.jit(jax.value_and_grad(diagnostics.alignment))(z, 3.0 * z)
    assert float(value) == pytest.approx(0.0, abs=1e-6)
    assert bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("t", [2, 0.5])
def test_uniformity_matches_reference(t):
    z = random_array(3, (16, 3))
    value = jax.jit(diagnostics.uniformity, static_argnums=1)(jnp.asarray(z, jnp.float32), t)
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, ref_uniformity(z, t), rtol=1e-5)


def test_uniformity_extremes():
    collapsed = jnp.ones((5, 3))
    assert float(diagnostics.uniformity(collapsed)) == pytest.approx(0.0, abs=1e-6)
    # Antipodal pairs only: every distance is 2, so the value is -t * 4, the minimum.
    antipodal = jnp.array([[1.0, 0.0], [-2.0, 0.0]])
    assert float(diagnostics.uniformity(antipodal, t=2)) == pytest.approx(-8.0, rel=1e-6)


def test_embedding_std_matches_reference_and_scale():
    z = random_array(4, (64, 8))
    value = jax.jit(diagnostics.embedding_std)(jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(value, ref_embedding_std(z), rtol=1e-5)
    # Random directions: each coordinate of a unit vector has variance 1 / D.
    many = jax.random.normal(jax.random.key(0), (4096, 32))
    assert float(diagnostics.embedding_std(many)) == pytest.approx(1 / np.sqrt(32), rel=0.05)
    collapsed = jnp.tile(jnp.asarray(z[:1], jnp.float32), (64, 1)) * jnp.arange(1.0, 65.0)[:, None]
    assert float(diagnostics.embedding_std(collapsed)) == pytest.approx(0.0, abs=1e-6)


def test_effective_rank_matches_reference_and_extremes():
    # One shape throughout, so the SVD compiles once.
    effective_rank = jax.jit(diagnostics.effective_rank)
    z = random_array(5, (10, 5))
    np.testing.assert_allclose(
        effective_rank(jnp.asarray(z, jnp.float32)), ref_effective_rank(z), rtol=1e-5
    )
    rank_one = jnp.outer(jnp.arange(1.0, 11.0), jnp.arange(1.0, 6.0))
    assert float(effective_rank(rank_one)) == pytest.approx(1.0, rel=1e-4)
    assert float(effective_rank(3.0 * jnp.eye(10, 5))) == pytest.approx(5.0, rel=1e-5)
    assert float(effective_rank(jnp.zeros((10, 5)))) == 1.0


def test_bfloat16_inputs_give_float32():
    z = jnp.asarray(random_array(6, (8, 4)), jnp.bfloat16)
    for value in (
        diagnostics.alignment(z, z[::-1]),
        diagnostics.uniformity(z),
        diagnostics.embedding_std(z),
        diagnostics.effective_rank(z),
    ):
        assert value.dtype == jnp.float32


Z = jnp.ones((4, 3))
BAD_CALLS = {
    "alignment shapes": (
        lambda: diagnostics.alignment(Z, jnp.ones((4, 2))),
        r"z1 \(4, 3\) and z2 \(4, 2\)",
    ),
    "alignment alpha": (lambda: diagnostics.alignment(Z, Z, alpha=0), r"alpha"),
    "uniformity 1-D": (lambda: diagnostics.uniformity(jnp.ones(3)), r"z must be 2-D.*\(3,\)"),
    "uniformity one row": (lambda: diagnostics.uniformity(jnp.ones((1, 3))), r"at least 2 rows"),
    "uniformity t": (lambda: diagnostics.uniformity(Z, t=-1.0), r"t must be > 0"),
    "std integer": (lambda: diagnostics.embedding_std(jnp.ones((4, 3), jnp.int32)), r"int32"),
    "rank 3-D": (lambda: diagnostics.effective_rank(jnp.ones((2, 2, 2))), r"\(2, 2, 2\)"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_input_raises_value_error(name):
    call, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=message):
        call()
