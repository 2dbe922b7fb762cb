"""Tests for sslax.losses: worked examples, float64 references, sharding, memory, input checks.

References are written here in numpy float64 from the papers' formulas; gradients are checked
against central differences of those references. Sharded tests run on the 8 simulated CPU
devices set up in conftest.py and take gradients inside shard_map, as a user would.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy.special import log_softmax, logsumexp, softmax

from sslax import losses

NUM_DEVICES = 8


@pytest.fixture(scope="module")
def mesh():
    assert len(jax.devices()) == NUM_DEVICES, "conftest.py should provide 8 CPU devices"
    return jax.make_mesh((NUM_DEVICES,), ("data",))


def random_array(seed, shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def assert_close(actual, expected, rtol=1e-5):
    """Relative agreement, with near-zero entries judged against the array's scale."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def jit_value_and_grad(fn, argnums=0):
    # One compilation is much faster than eager op-by-op dispatch on the shared test CPUs.
    return jax.jit(jax.value_and_grad(fn, argnums=argnums))


def numeric_grad(f, x, eps=1e-6):
    """Central differences of a float64 numpy function."""
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = eps
        grad[index] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def f32(*arrays):
    return [jnp.asarray(a, jnp.float32) for a in arrays]


# ----------------------------------------------------------------------------- references


def ref_info_nce(z1, z2, temperature):
    views = normalize(np.concatenate([z1, z2]))
    n = len(z1)
    logits = views @ views.T / temperature
    np.fill_diagonal(logits, -np.inf)
    partner = np.concatenate([np.arange(n) + n, np.arange(n)])
    positives = logits[np.arange(2 * n), partner]
    return np.mean(logsumexp(logits, axis=1) - positives)


def ref_moco(q, k, queue, temperature):
    q, k, queue = normalize(q), normalize(k), normalize(queue)
    logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ queue.T], 1) / temperature
    return np.mean(-log_softmax(logits, axis=1)[:, 0])


def ref_dino(student, teacher, center, student_temp, teacher_temp):
    targets = softmax((teacher - center) / teacher_temp, axis=-1)
    log_probs = log_softmax(student / student_temp, axis=-1)
    terms = [
        np.mean(-np.sum(targets[t] * log_probs[s], axis=-1))
        for t in range(len(teacher))
        for s in range(len(student))
        if s != t
    ]
    return np.mean(terms)


def ref_barlow(z1, z2, lambd):
    def batch_norm(z):
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)  # numpy var is biased

    c = batch_norm(z1).T @ batch_norm(z2) / len(z1)
    off_diagonal = c[~np.eye(len(c), dtype=bool)]
    return np.sum((1 - np.diag(c)) ** 2) + lambd * np.sum(off_diagonal**2)


def ref_vicreg(x, y, sim_coeff, std_coeff, cov_coeff):
    n, d = x.shape
    invariance = np.mean((x - y) ** 2)
    x, y = x - x.mean(0), y - y.mean(0)
    std_x, std_y = np.sqrt(x.var(0, ddof=1) + 1e-4), np.sqrt(y.var(0, ddof=1) + 1e-4)
    std_loss = np.mean(np.maximum(1 - std_x, 0)) / 2 + np.mean(np.maximum(1 - std_y, 0)) / 2
    off = ~np.eye(d, dtype=bool)
    cov_x, cov_y = x.T @ x / (n - 1), y.T @ y / (n - 1)
    cov_loss = np.sum(cov_x[off] ** 2) / d + np.sum(cov_y[off] ** 2) / d
    return sim_coeff * invariance + std_coeff * std_loss + cov_coeff * cov_loss


# ------------------------------------------------------------------------ worked examples


def anchor_and_candidates(cosines):
    """A unit anchor and rows with exactly the given cosines to it, at arbitrary lengths."""
    anchor = np.zeros(len(cosines) + 1)
    anchor[0] = 1.0
    rows = np.zeros((len(cosines), len(cosines) + 1))
    for i, cosine in enumerate(cosines):
        rows[i, 0], rows[i, i + 1] = cosine, np.sqrt(1 - cosine**2)
    lengths = np.linspace(0.5, 3.0, len(cosines))[:, None]
    return 2.0 * anchor[None], lengths * rows


def moco_loss_for_cosines(positive, negatives, temperature):
    anchor, candidates = anchor_and_candidates([positive, *negatives])
    q, k, queue = f32(anchor, candidates[:1], candidates[1:])
    return float(losses.moco_info_nce(q, k, queue, temperature=temperature))


@pytest.mark.parametrize("positive, expected", [(0.9, 0.094), (0.3, 1.09)])
def test_worked_example_loss(positive, expected):
    # Seed: cosines (positive; 0.2, 0.1, 0.3) at temperature 0.2.
    loss = moco_loss_for_cosines(positive, [0.2, 0.1, 0.3], temperature=0.2)
    assert loss == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("temperature, expected", [(0.1, 0.880), (0.5, 0.522)])
def test_worked_example_temperature(temperature, expected):
    # Seed: P(positive) for cosines (0.8; 0.6, 0.1); the loss is -log P(positive).
    loss = moco_loss_for_cosines(0.8, [0.6, 0.1], temperature=temperature)
    assert np.exp(-loss) == pytest.approx(expected, abs=1e-3)


# -------------------------------------------------------------------------------- info_nce


@pytest.mark.parametrize("chunk_size", [None, 1, 2])
def test_info_nce_single_pair_has_no_negatives(chunk_size):
    # With N = 1 each view's only candidate is its partner, so the loss is exactly 0 unless a
    # view were counted as its own negative.
    z1, z2 = f32(random_array(0, (1, 4)), random_array(1, (1, 4)))
    loss = losses.info_nce(z1, z2, temperature=0.1, chunk_size=chunk_size)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_info_nce_matches_float64_reference(temperature, chunk_size):
    z1, z2 = random_array(0, (6, 5)), random_array(1, (6, 5), scale=2.0)
    loss_fn = functools.partial(losses.info_nce, temperature=temperature, chunk_size=chunk_size)
    value, (g1, g2) = jit_value_and_grad(loss_fn, argnums=(0, 1))(*f32(z1, z2))
    assert value.dtype == jnp.float32
    assert_close(value, ref_info_nce(z1, z2, temperature))
    assert_close(g1, numeric_grad(lambda a: ref_info_nce(a, z2, temperature), z1), rtol=1e-4)
    assert_close(g2, numeric_grad(lambda b: ref_info_nce(z1, b, temperature), z2), rtol=1e-4)


# Temperature as an argument also checks that a learned temperature gets its gradient.
info_nce_value_and_grads = jax.jit(
    jax.value_and_grad(
        lambda a, b, temperature, chunk_size: losses.info_nce(
            a, b, temperature=temperature, chunk_size=chunk_size
        ),
        argnums=(0, 1, 2),
    ),
    static_argnums=3,
)


@pytest.mark.parametrize("chunk_size", [1, 4, 32])
def test_info_nce_chunked_matches_dense(chunk_size):
    z1, z2 = f32(random_array(2, (16, 8)), random_array(3, (16, 8)))
    dense_value, dense_grads = info_nce_value_and_grads(z1, z2, 0.2, None)
    chunked_value, chunked_grads = info_nce_value_and_grads(z1, z2, 0.2, chunk_size)
    assert_close(chunked_value, dense_value)
    for chunked, dense in zip(chunked_grads, dense_grads):
        assert_close(chunked, dense)


def run_sharded(mesh, loss_fn, arrays, argnums):
    """Value (as out_specs P() and per device) and per-device grads stitched along 'data'."""

    def local(*local_arrays):
        value, grads = jax.value_and_grad(loss_fn, argnums=argnums)(*local_arrays)
        return value, value[None], grads

    sharding = NamedSharding(mesh, P("data"))
    with jax.set_mesh(mesh):
        sharded = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=tuple(P("data") for _ in arrays),
            out_specs=(P(), P("data"), tuple(P("data") for _ in argnums)),
        )
        return jax.jit(sharded)(*[jax.device_put(a, sharding) for a in arrays])


@pytest.mark.parametrize("chunk_size", [None, 2, 4])
def test_info_nce_sharded_matches_unsharded(mesh, chunk_size):
    z1, z2 = f32(random_array(4, (16, 8)), random_array(5, (16, 8)))
    value, grads = jit_value_and_grad(
        lambda a, b: losses.info_nce(a, b, temperature=0.1), argnums=(0, 1)
    )(z1, z2)
    sharded_value, per_device, sharded_grads = run_sharded(
        mesh,
        lambda a, b: losses.info_nce(
            a, b, temperature=0.1, axis_name="data", chunk_size=chunk_size
        ),
        (z1, z2),
        argnums=(0, 1),
    )
    assert_close(sharded_value, value)
    assert_close(per_device, np.full(NUM_DEVICES, float(value)))
    for sharded, unsharded in zip(sharded_grads, grads):
        assert_close(sharded, unsharded)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_info_nce_low_temperature_identical_embeddings(chunk_size):
    # All 2N views equal: every logit is 1 / 0.01 = 100, so the loss is log(2N - 1).
    z = jnp.ones((4, 8))
    value, grads = jit_value_and_grad(
        lambda a, b: losses.info_nce(a, b, temperature=0.01, chunk_size=chunk_size), argnums=(0, 1)
    )(z, z)
    assert float(value) == pytest.approx(np.log(7), rel=1e-5)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    # Distinct rows, each pair identical: large logit gaps at temperature 0.01.
    z = jnp.asarray(random_array(6, (4, 8)), jnp.float32)
    value, grads = jit_value_and_grad(
        lambda a: losses.info_nce(a, z, temperature=0.01, chunk_size=chunk_size)
    )(z)
    assert np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(grads)))


def test_info_nce_chunked_memory_is_linear():
    # 2N = 131,072 views of dimension 128: the dense logits alone would take 64 GiB.
    half = jax.ShapeDtypeStruct((65536, 128), jnp.float32)

    def temp_bytes(chunk_size):
        loss_fn = functools.partial(losses.info_nce, temperature=0.1, chunk_size=chunk_size)
        compiled = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1))).lower(half, half).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes(1024) < 2**30
    assert temp_bytes(None) > 32 * 2**30


# ---------------------------------------------------------------------------- bfloat16


BFLOAT16_CASES = {
    "info_nce": lambda a, b: losses.info_nce(a, b, temperature=0.1),
    "info_nce_chunked": lambda a, b: losses.info_nce(a, b, temperature=0.1, chunk_size=4),
    "moco_info_nce": lambda a, b: losses.moco_info_nce(a, b, jnp.concatenate([b, a])[::-1]),
    "byol_loss": losses.byol_loss,
    "simsiam_loss": losses.simsiam_loss,
    "barlow_twins_loss": losses.barlow_twins_loss,
    "vicreg_loss": losses.vicreg_loss,
}


@pytest.mark.parametrize("name", sorted(BFLOAT16_CASES))
def test_bfloat16_inputs_compute_in_float32(name):
    loss_fn = BFLOAT16_CASES[name]
    z1, z2 = f32(random_array(7, (16, 8)), random_array(8, (16, 8)))
    z1_bf16, z2_bf16 = z1.astype(jnp.bfloat16), z2.astype(jnp.bfloat16)
    value = loss_fn(z1_bf16, z2_bf16)
    assert value.dtype == jnp.float32
    # Exactly the float32 computation on the rounded inputs ...
    rounded = loss_fn(z1_bf16.astype(jnp.float32), z2_bf16.astype(jnp.float32))
    assert_close(value, rounded, rtol=1e-6)
    # ... which is near the float32 result: only the input rounding differs.
    assert_close(value, loss_fn(z1, z2), rtol=2e-2)


# ------------------------------------------------------------------------------------ MoCo


def test_moco_info_nce_matches_float64_reference():
    q, k, queue = random_array(9, (5, 6)), random_array(10, (5, 6)), random_array(11, (12, 6))
    value, (gq, gk, gqueue) = jit_value_and_grad(
        lambda *a: losses.moco_info_nce(*a, temperature=0.2), argnums=(0, 1, 2)
    )(*f32(q, k, queue))
    assert_close(value, ref_moco(q, k, queue, 0.2))
    assert_close(gq, numeric_grad(lambda a: ref_moco(a, k, queue, 0.2), q), rtol=1e-4)
    # Keys and queue come from the momentum encoder: no gradient.
    assert not np.any(gk) and not np.any(gqueue)


def test_moco_enqueue_is_fifo():
    queue, ptr = jnp.zeros((6, 3)), jnp.array(0)
    enqueue = jax.jit(losses.moco_enqueue)
    for step in range(1, 5):
        queue, ptr = enqueue(queue, ptr, jnp.full((2, 3), float(step)))
    # Steps 1-3 filled rows 0-5; step 4 overwrote the oldest rows, those of step 1.
    np.testing.assert_array_equal(queue[:, 0], [4, 4, 2, 2, 3, 3])
    assert int(ptr) == 2 and ptr.dtype == jnp.int32


def test_moco_enqueue_sharded_gathers_all_devices(mesh):
    keys = jnp.arange(NUM_DEVICES * 2, dtype=jnp.float32)[:, None] * jnp.ones((1, 3))
    queue, ptr = jnp.zeros((32, 3)), jnp.array(16, jnp.int32)

    def local(queue, ptr, keys):
        return losses.moco_enqueue(queue, ptr, keys, axis_name="data")

    with jax.set_mesh(mesh):
        new_queue, new_ptr = jax.jit(
            jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=(P(), P()))
        )(queue, ptr, jax.device_put(keys, NamedSharding(mesh, P("data"))))
    np.testing.assert_array_equal(new_queue[16:], keys)  # all 16 keys, in device order
    np.testing.assert_array_equal(new_queue[:16], 0.0)
    assert int(new_ptr) == 0


def test_moco_enqueue_sharded_checks_global_key_count(mesh):
    # 8 devices x 1 key = 8 global keys, which do not divide a queue of 12.
    def local(queue, ptr, keys):
        return losses.moco_enqueue(queue, ptr, keys, axis_name="data")

    keys = jax.device_put(jnp.ones((NUM_DEVICES, 3)), NamedSharding(mesh, P("data")))
    with jax.set_mesh(mesh), pytest.raises(ValueError, match=r"queue size 12.*global number"):
        jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=(P(), P()))(
            jnp.zeros((12, 3)), jnp.array(0), keys
        )


# ---------------------------------------------------------------------------- BYOL/SimSiam


@pytest.mark.parametrize(
    "loss_fn, ref",
    [
        (losses.byol_loss, lambda p, z: np.mean(2 - 2 * np.sum(normalize(p) * normalize(z), 1))),
        (losses.simsiam_loss, lambda p, z: -np.mean(np.sum(normalize(p) * normalize(z), 1))),
    ],
)
def test_cosine_losses_match_float64_reference(loss_fn, ref):
    p, z = random_array(12, (6, 5)), random_array(13, (6, 5), scale=3.0)
    value, (gp, gz) = jit_value_and_grad(loss_fn, argnums=(0, 1))(*f32(p, z))
    assert_close(value, ref(p, z))
    assert_close(gp, numeric_grad(lambda a: ref(a, z), p), rtol=1e-4)
    assert not np.any(gz)  # stop-gradient on the target


# ------------------------------------------------------------------------------------ DINO


def test_dino_loss_matches_float64_reference():
    student = random_array(14, (4, 3, 5), scale=0.3)
    teacher, center = random_array(15, (2, 3, 5), scale=0.1), random_array(16, (5,), scale=0.1)
    temps = dict(student_temp=0.1, teacher_temp=0.04)
    value, (g_student, g_teacher, g_center) = jit_value_and_grad(
        lambda *a: losses.dino_loss(*a, **temps), argnums=(0, 1, 2)
    )(*f32(student, teacher, center))
    assert_close(value, ref_dino(student, teacher, center, 0.1, 0.04))
    assert_close(
        g_student,
        numeric_grad(lambda s: ref_dino(s, teacher, center, 0.1, 0.04), student),
        rtol=1e-4,
    )
    assert not np.any(g_teacher) and not np.any(g_center)  # teacher targets are constants


def test_dino_center_update_matches_reference_and_sharded(mesh):
    center, teacher = random_array(17, (5,)), random_array(18, (2, 16, 5))
    expected = 0.9 * center + 0.1 * teacher.mean(axis=(0, 1))
    center32, teacher32 = f32(center, teacher)
    assert_close(losses.dino_center_update(center32, teacher32, momentum=0.9), expected)

    def local(center, teacher):
        return losses.dino_center_update(center, teacher, momentum=0.9, axis_name="data")

    with jax.set_mesh(mesh):
        sharded = jax.jit(
            jax.shard_map(local, mesh=mesh, in_specs=(P(), P(None, "data")), out_specs=P())
        )(center32, jax.device_put(teacher32, NamedSharding(mesh, P(None, "data"))))
    assert_close(sharded, expected)


# -------------------------------------------------------------------- Barlow Twins / VICReg


REDUNDANCY_CASES = {
    "barlow_twins_loss": (
        functools.partial(losses.barlow_twins_loss, lambd=0.05),
        lambda a, b: ref_barlow(a, b, 0.05),
    ),
    "vicreg_loss": (
        functools.partial(losses.vicreg_loss, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0),
        lambda a, b: ref_vicreg(a, b, 25.0, 25.0, 1.0),
    ),
}


@pytest.mark.parametrize("name", sorted(REDUNDANCY_CASES))
def test_redundancy_losses_match_float64_reference(name):
    loss_fn, ref = REDUNDANCY_CASES[name]
    # Scale 0.7 puts some per-dimension stds below 1, so VICReg's hinge is active.
    z1, z2 = random_array(19, (8, 4), scale=0.7), random_array(20, (8, 4), scale=1.3)
    value, (g1, g2) = jit_value_and_grad(loss_fn, argnums=(0, 1))(*f32(z1, z2))
    assert_close(value, ref(z1, z2))
    assert_close(g1, numeric_grad(lambda a: ref(a, z2), z1), rtol=1e-4)
    assert_close(g2, numeric_grad(lambda b: ref(z1, b), z2), rtol=1e-4)


@pytest.mark.parametrize("name", sorted(REDUNDANCY_CASES))
def test_redundancy_losses_sharded_use_global_batch(mesh, name):
    loss_fn, ref = REDUNDANCY_CASES[name]
    z1, z2 = random_array(21, (16, 4), scale=0.7), random_array(22, (16, 4))
    value, grads = jit_value_and_grad(loss_fn, argnums=(0, 1))(*f32(z1, z2))
    assert_close(value, ref(z1, z2))
    sharded_value, per_device, sharded_grads = run_sharded(
        mesh, functools.partial(loss_fn, axis_name="data"), f32(z1, z2), argnums=(0, 1)
    )
    assert_close(sharded_value, value)
    assert_close(per_device, np.full(NUM_DEVICES, float(value)))
    for sharded, unsharded in zip(sharded_grads, grads):
        assert_close(sharded, unsharded)


# ------------------------------------------------------------------------------ bad input


Z = jnp.ones((4, 3))
BAD_CALLS = {
    "shape mismatch": (lambda: losses.info_nce(Z, jnp.ones((4, 5))), r"z1 .*\(4, 3\).*\(4, 5\)"),
    "not 2-D": (lambda: losses.info_nce(jnp.ones((4, 3, 1)), Z), r"z1 must be 2-D.*\(4, 3, 1\)"),
    "integer dtype": (lambda: losses.info_nce(Z, jnp.ones((4, 3), jnp.int32)), r"z2.*int32"),
    "zero temperature": (lambda: losses.info_nce(Z, Z, temperature=0.0), r"temperature"),
    "negative temperature": (lambda: losses.info_nce(Z, Z, temperature=-0.1), r"temperature"),
    "chunk not dividing": (lambda: losses.info_nce(Z, Z, chunk_size=3), r"chunk_size.*8.*3"),
    "chunk not int": (lambda: losses.info_nce(Z, Z, chunk_size=2.0), r"chunk_size"),
    "moco queue dim": (
        lambda: losses.moco_info_nce(Z, Z, jnp.ones((8, 5))),
        r"queue .*\(8, 5\).*\(4, 3\)",
    ),
    "moco temperature": (lambda: losses.moco_info_nce(Z, Z, Z, temperature=0.0), r"temperature"),
    "enqueue dim": (lambda: losses.moco_enqueue(jnp.ones((8, 5)), 0, Z), r"keys .*\(4, 3\)"),
    "enqueue size": (
        lambda: losses.moco_enqueue(jnp.ones((6, 3)), 0, Z),
        r"queue size 6.*global number of keys 4",
    ),
    "enqueue ptr": (lambda: losses.moco_enqueue(jnp.ones((8, 3)), 0.5, Z), r"ptr"),
    "byol mismatch": (lambda: losses.byol_loss(Z, jnp.ones((3, 3))), r"p and z"),
    "simsiam 1-D": (lambda: losses.simsiam_loss(jnp.ones(3), jnp.ones(3)), r"p must be 2-D"),
    "dino shapes": (
        lambda: losses.dino_loss(jnp.ones((4, 2, 5)), jnp.ones((2, 2, 6)), jnp.ones(5)),
        r"\(4, 2, 5\).*\(2, 2, 6\)",
    ),
    "dino too many teacher views": (
        lambda: losses.dino_loss(jnp.ones((2, 2, 5)), jnp.ones((3, 2, 5)), jnp.ones(5)),
        r"T <= S",
    ),
    "dino temperature": (
        lambda: losses.dino_loss(
            jnp.ones((2, 2, 5)), jnp.ones((2, 2, 5)), jnp.ones(5), teacher_temp=0.0
        ),
        r"teacher_temp",
    ),
    "center momentum": (
        lambda: losses.dino_center_update(jnp.ones(5), jnp.ones((2, 2, 5)), momentum=1.5),
        r"momentum",
    ),
    "center shape": (
        lambda: losses.dino_center_update(jnp.ones(4), jnp.ones((2, 2, 5))),
        r"center \(4,\)",
    ),
    "barlow one row": (
        lambda: losses.barlow_twins_loss(jnp.ones((1, 3)), jnp.ones((1, 3))),
        r"at least 2 rows",
    ),
    "barlow lambd": (lambda: losses.barlow_twins_loss(Z, Z, lambd=-1.0), r"lambd"),
    "vicreg mismatch": (lambda: losses.vicreg_loss(Z, jnp.ones((5, 3))), r"z1 and z2"),
    "vicreg coeff": (lambda: losses.vicreg_loss(Z, Z, std_coeff=-1.0), r"std_coeff"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_input_raises_value_error(name):
    call, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=message):
        call()


def test_traced_temperature_is_accepted_under_jit():
    z1, z2 = f32(random_array(23, (4, 3)), random_array(24, (4, 3)))
    jitted = jax.jit(lambda t: losses.info_nce(z1, z2, temperature=t))
    assert_close(jitted(0.3), losses.info_nce(z1, z2, temperature=0.3))


# ------------------------------------------------------ SwAV, SupCon, DCL, KoLeo, iBOT, MAE


def run_sharded_along(mesh, loss_fn, arrays, batch_axes, argnums):
    """Like run_sharded, with each array split over 'data' along its own batch axis."""
    specs = tuple(P(*([None] * axis), "data") for axis in batch_axes)

    def local(*local_arrays):
        value, grads = jax.value_and_grad(loss_fn, argnums=argnums)(*local_arrays)
        return value, grads

    with jax.set_mesh(mesh):
        sharded = jax.shard_map(
            local, mesh=mesh, in_specs=specs, out_specs=(P(), tuple(specs[i] for i in argnums))
        )
        placed = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(arrays, specs)]
        return jax.jit(sharded)(*placed)


def ref_sinkhorn(scores, epsilon, num_iters):
    """The official distributed_sinkhorn, single process, in its own [K, B] orientation."""
    q = np.exp(scores / epsilon).T
    num_prototypes, batch = q.shape
    q /= q.sum()
    for _ in range(num_iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= num_prototypes
        q /= q.sum(axis=0, keepdims=True)
        q /= batch
    return (q * batch).T


def ref_swav_given_codes(scores, codes, temperature):
    """main_swav.py's loop, codes [A, N, K] given (they are constants there)."""
    num_views = len(scores)
    loss = 0.0
    for a in range(len(codes)):
        subloss = 0.0
        for v in range(num_views):
            if v != a:
                subloss -= np.mean(np.sum(codes[a] * log_softmax(scores[v] / temperature, 1), 1))
        loss += subloss / (num_views - 1)
    return loss / len(codes)


def ref_swav_codes(scores, num_assign, epsilon, num_iters, queue=None):
    batch = scores.shape[1]
    codes = []
    for a in range(num_assign):
        out = scores[a] if queue is None else np.concatenate([queue[a], scores[a]])
        codes.append(ref_sinkhorn(out, epsilon, num_iters)[-batch:])
    return np.stack(codes)


def test_sinkhorn_matches_official_algorithm_and_marginals():
    scores = random_array(30, (12, 5), scale=0.3)
    for num_iters in (1, 3):
        codes = losses.sinkhorn_knopp(jnp.float32(scores), epsilon=0.05, num_iters=num_iters)
        assert_close(codes, ref_sinkhorn(scores, 0.05, num_iters), rtol=1e-4)
    converged = np.asarray(losses.sinkhorn_knopp(jnp.float32(scores), num_iters=200))
    np.testing.assert_allclose(converged.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(converged.sum(0), 12 / 5, atol=1e-4)  # equal partition
    # Scores far beyond exp's float32 range: the max shift keeps them finite and exact.
    shifted = losses.sinkhorn_knopp(jnp.float32(scores + 50.0), epsilon=0.05)
    assert_close(shifted, ref_sinkhorn(scores, 0.05, 3), rtol=1e-4)


def test_sinkhorn_sharded_uses_global_marginals(mesh):
    scores = f32(random_array(31, (16, 6), scale=0.3))[0]
    expected = losses.sinkhorn_knopp(scores)
    with jax.set_mesh(mesh):
        sharded = jax.jit(
            jax.shard_map(
                lambda s: losses.sinkhorn_knopp(s, axis_name="data"),
                mesh=mesh,
                in_specs=P("data"),
                out_specs=P("data"),
            )
        )(jax.device_put(scores, NamedSharding(mesh, P("data"))))
    assert_close(sharded, expected)
    assert_close(expected, ref_sinkhorn(np.asarray(scores, np.float64), 0.05, 3), rtol=1e-4)


@pytest.mark.parametrize("with_queue", [False, True])
def test_swav_loss_matches_float64_reference(with_queue):
    scores = random_array(32, (4, 6, 5), scale=0.5)  # 2 assigned + 2 local crops
    queue = random_array(33, (2, 10, 5), scale=0.5) if with_queue else None
    codes = ref_swav_codes(scores, 2, 0.05, 3, queue)
    kwargs = dict(temperature=0.1, queue_scores=None if queue is None else jnp.float32(queue))
    value, grad = jit_value_and_grad(lambda s: losses.swav_loss(s, **kwargs))(jnp.float32(scores))
    assert_close(value, ref_swav_given_codes(scores, codes, 0.1), rtol=1e-4)
    numeric = numeric_grad(lambda s: ref_swav_given_codes(s, codes, 0.1), scores)
    assert_close(grad, numeric, rtol=1e-3)


def test_swav_loss_sharded_matches_unsharded(mesh):
    scores, queue = f32(random_array(34, (3, 16, 5), scale=0.5), random_array(35, (2, 24, 5)))

    def loss_fn(s, q, axis_name=None):
        return losses.swav_loss(s, queue_scores=q, axis_name=axis_name)

    value, grad = jit_value_and_grad(loss_fn)(scores, queue)
    sharded_value, (sharded_grad,) = run_sharded_along(
        mesh, functools.partial(loss_fn, axis_name="data"), (scores, queue), (1, 1), (0,)
    )
    assert_close(sharded_value, value)
    assert_close(sharded_grad, grad)


def ref_supcon(z, labels, temperature):
    """Eq. 2 of Khosla et al., anchor by anchor."""
    views = normalize(z.reshape(-1, z.shape[-1]))
    view_labels = np.repeat(labels, z.shape[1])
    total = 0.0
    for i in range(len(views)):
        others = [a for a in range(len(views)) if a != i]
        log_denominator = logsumexp([views[i] @ views[a] / temperature for a in others])
        positives = [p for p in others if view_labels[p] == view_labels[i]]
        total += -np.mean([views[i] @ views[p] / temperature - log_denominator for p in positives])
    return total / len(views)


def test_supcon_loss_matches_float64_reference():
    z, labels = random_array(36, (6, 3, 4)), np.array([0, 1, 0, 2, 1, 0])
    value, grad = jit_value_and_grad(
        lambda x: losses.supcon_loss(x, jnp.asarray(labels), temperature=0.2)
    )(jnp.float32(z))
    assert_close(value, ref_supcon(z, labels, 0.2))
    assert_close(grad, numeric_grad(lambda x: ref_supcon(x, labels, 0.2), z), rtol=1e-4)


def test_supcon_loss_sharded_matches_unsharded(mesh):
    z = jnp.float32(random_array(37, (16, 2, 4)))
    labels = jnp.asarray(np.random.default_rng(38).integers(0, 3, 16), jnp.int32)
    value, grad = jit_value_and_grad(lambda x: losses.supcon_loss(x, labels))(z)
    sharded_value, (sharded_grad,) = run_sharded_along(
        mesh, lambda x, y: losses.supcon_loss(x, y, axis_name="data"), (z, labels), (0, 0), (0,)
    )
    assert_close(sharded_value, value)
    assert_close(sharded_grad, grad)


def ref_dcl(z1, z2, temperature, weight_sigma):
    """The official DCL class, one direction, with the positive excluded exactly."""

    def one_way(a, b):
        a, b = normalize(a), normalize(b)
        positive = -np.sum(a * b, axis=1) / temperature
        if weight_sigma is not None:
            positive = positive * (2 - len(a) * softmax(np.sum(a * b, axis=1) / weight_sigma))
        logits = np.concatenate([a @ a.T, a @ b.T], axis=1) / temperature
        mask = np.tile(np.eye(len(a), dtype=bool), (1, 2))
        negative = logsumexp(np.where(mask, -np.inf, logits), axis=1)
        return np.mean(positive + negative)

    return (one_way(z1, z2) + one_way(z2, z1)) / 2


@pytest.mark.parametrize("weight_sigma", [None, 0.5])
def test_dcl_loss_matches_float64_reference(weight_sigma):
    z1, z2 = random_array(39, (6, 4)), random_array(40, (6, 4))
    value, (g1, g2) = jit_value_and_grad(
        lambda a, b: losses.dcl_loss(a, b, temperature=0.2, weight_sigma=weight_sigma),
        argnums=(0, 1),
    )(*f32(z1, z2))
    ref = functools.partial(ref_dcl, temperature=0.2, weight_sigma=weight_sigma)
    assert_close(value, ref(z1, z2))
    assert_close(g1, numeric_grad(lambda a: ref(a, z2), z1), rtol=1e-4)
    assert_close(g2, numeric_grad(lambda b: ref(z1, b), z2), rtol=1e-4)


@pytest.mark.parametrize("weight_sigma", [None, 0.5])
def test_dcl_loss_sharded_matches_unsharded(mesh, weight_sigma):
    z1, z2 = f32(random_array(41, (16, 4)), random_array(42, (16, 4)))

    def loss_fn(a, b, axis_name=None):
        return losses.dcl_loss(a, b, weight_sigma=weight_sigma, axis_name=axis_name)

    value, grads = jit_value_and_grad(loss_fn, argnums=(0, 1))(z1, z2)
    sharded_value, sharded_grads = run_sharded_along(
        mesh, functools.partial(loss_fn, axis_name="data"), (z1, z2), (0, 0), (0, 1)
    )
    assert_close(sharded_value, value)
    for sharded, unsharded in zip(sharded_grads, grads):
        assert_close(sharded, unsharded)


def ref_koleo(x, epsilon=1e-8):
    """DINOv2's KoLeoLoss: nearest neighbour by the largest dot product, diagonal at -1."""
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), epsilon)
    dots = x @ x.T
    np.fill_diagonal(dots, -1)
    neighbour = np.argmax(dots, axis=1)
    distance = np.linalg.norm(x - x[neighbour] + epsilon, axis=-1)
    return -np.mean(np.log(distance + epsilon))


def test_koleo_loss_matches_float64_reference():
    x = random_array(43, (7, 4))
    value, grad = jit_value_and_grad(losses.koleo_loss)(jnp.float32(x))
    assert_close(value, ref_koleo(x))
    assert_close(grad, numeric_grad(ref_koleo, x), rtol=1e-4)
    # Coinciding rows: large but finite, as the epsilon intends.
    twins = jnp.float32(np.concatenate([x[:1], x[:1], x[1:3]]))
    value, grad = jit_value_and_grad(losses.koleo_loss)(twins)
    assert np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(grad)))


def test_koleo_loss_sharded_searches_the_global_batch(mesh):
    # Rows in near pairs split across devices: local-only neighbours would be different ones.
    base = random_array(44, (8, 4))
    x = jnp.float32(np.concatenate([base, base + 0.05 * random_array(45, (8, 4))]))
    value, grad = jit_value_and_grad(losses.koleo_loss)(x)
    assert_close(value, ref_koleo(np.asarray(x, np.float64)))
    sharded_value, (sharded_grad,) = run_sharded_along(
        mesh, lambda a: losses.koleo_loss(a, axis_name="data"), (x,), (0,), (0,)
    )
    assert_close(sharded_value, value)
    assert_close(sharded_grad, grad)


def ref_ibot(student, teacher, mask, center, student_temp, teacher_temp):
    """iBOT's patch term: per image the mean over masked patches, then the mean over images."""
    total = 0.0
    for v in range(len(student)):
        targets = softmax((teacher[v] - center) / teacher_temp, axis=-1)
        per_patch = -np.sum(targets * log_softmax(student[v] / student_temp, axis=-1), -1)
        per_image = np.sum(per_patch * mask[v], -1) / np.maximum(mask[v].sum(-1), 1)
        total += per_image.mean()
    return total / len(student)


def test_ibot_patch_loss_matches_float64_reference():
    student, teacher = random_array(46, (2, 3, 4, 5)), random_array(47, (2, 3, 4, 5), 0.1)
    center = random_array(48, (5,), scale=0.1)
    mask = np.random.default_rng(49).random((2, 3, 4)) < 0.5
    mask[1, 2] = False  # an image without masked patches counts as 0
    args = (jnp.asarray(mask), jnp.float32(center))
    value, (g_student, g_teacher) = jit_value_and_grad(
        lambda s, t: losses.ibot_patch_loss(s, t, *args), argnums=(0, 1)
    )(*f32(student, teacher))
    ref = functools.partial(ref_ibot, mask=mask, center=center, student_temp=0.1, teacher_temp=0.04)
    assert_close(value, ref(student, teacher))
    assert_close(g_student, numeric_grad(lambda s: ref(s, teacher), student), rtol=1e-4)
    assert not np.any(g_teacher)
    # Unmasked patches do not matter.
    changed = np.where(mask[..., None], student, 7.0)
    assert_close(losses.ibot_patch_loss(jnp.float32(changed), jnp.float32(teacher), *args), value)


def test_ibot_patch_loss_sharded_matches_unsharded(mesh):
    student, teacher = f32(random_array(50, (2, 16, 3, 4)), random_array(51, (2, 16, 3, 4)))
    mask = jnp.asarray(np.random.default_rng(52).random((2, 16, 3)) < 0.5)
    center = jnp.zeros(4)

    def loss_fn(s, t, m, axis_name=None):
        return losses.ibot_patch_loss(s, t, m, center, axis_name=axis_name)

    value, grad = jit_value_and_grad(loss_fn)(student, teacher, mask)
    sharded_value, (sharded_grad,) = run_sharded_along(
        mesh,
        functools.partial(loss_fn, axis_name="data"),
        (student, teacher, mask),
        (1, 1, 1),
        (0,),
    )
    assert_close(sharded_value, value)
    assert_close(sharded_grad, grad)


def ref_mae(pred, target, mask, norm_pix):
    """MAE's forward_loss; torch's var is unbiased."""
    if norm_pix:
        target = (target - target.mean(-1, keepdims=True)) / np.sqrt(
            target.var(-1, ddof=1, keepdims=True) + 1e-6
        )
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_loss_matches_float64_reference(norm_pix):
    pred, target = random_array(53, (3, 4, 6)), random_array(54, (3, 4, 6), scale=2.0) + 1.0
    mask = np.random.default_rng(55).random((3, 4)) < 0.75
    value, grad = jit_value_and_grad(
        lambda p: losses.mae_loss(p, jnp.float32(target), jnp.asarray(mask), norm_pix=norm_pix)
    )(jnp.float32(pred))
    assert_close(value, ref_mae(pred, target, mask, norm_pix))
    numeric = numeric_grad(lambda p: ref_mae(p, target, mask, norm_pix), pred)
    assert_close(grad, numeric, rtol=1e-4)
    assert not np.any(np.asarray(grad)[~mask])  # visible patches get no gradient


def test_mae_loss_sharded_matches_unsharded(mesh):
    pred, target = f32(random_array(56, (16, 4, 6)), random_array(57, (16, 4, 6)))
    mask = jnp.asarray(np.random.default_rng(58).random((16, 4)) < 0.75)
    value, grad = jit_value_and_grad(losses.mae_loss)(pred, target, mask)
    sharded_value, (sharded_grad,) = run_sharded_along(
        mesh,
        lambda p, t, m: losses.mae_loss(p, t, m, axis_name="data"),
        (pred, target, mask),
        (0, 0, 0),
        (0,),
    )
    assert_close(sharded_value, value)
    assert_close(sharded_grad, grad)


NEW_BAD_CALLS = {
    "sinkhorn epsilon": (lambda: losses.sinkhorn_knopp(Z, epsilon=0.0), r"epsilon"),
    "sinkhorn iters": (lambda: losses.sinkhorn_knopp(Z, num_iters=0), r"num_iters"),
    "sinkhorn 3-D": (lambda: losses.sinkhorn_knopp(jnp.ones((2, 2, 2))), r"scores must be 2-D"),
    "swav one view": (lambda: losses.swav_loss(jnp.ones((1, 4, 3))), r"V >= 2"),
    "swav assign": (lambda: losses.swav_loss(jnp.ones((2, 4, 3)), num_assign=3), r"num_assign"),
    "swav queue": (
        lambda: losses.swav_loss(jnp.ones((2, 4, 3)), queue_scores=jnp.ones((2, 5, 4))),
        r"queue_scores must be \[num_assign=2, Q, K=3\]",
    ),
    "supcon labels": (
        lambda: losses.supcon_loss(jnp.ones((4, 2, 3)), jnp.ones(4)),
        r"labels must be integers",
    ),
    "supcon one view": (
        lambda: losses.supcon_loss(jnp.ones((4, 1, 3)), jnp.arange(4)),
        r"V >= 2",
    ),
    "dcl one row": (lambda: losses.dcl_loss(jnp.ones((1, 3)), jnp.ones((1, 3))), r"2 rows"),
    "dcl sigma": (lambda: losses.dcl_loss(Z, Z, weight_sigma=0.0), r"weight_sigma"),
    "koleo one row": (lambda: losses.koleo_loss(jnp.ones((1, 3))), r"2 rows"),
    "koleo epsilon": (lambda: losses.koleo_loss(Z, epsilon=-1.0), r"epsilon"),
    "ibot mask shape": (
        lambda: losses.ibot_patch_loss(
            jnp.ones((2, 3, 4, 5)), jnp.ones((2, 3, 4, 5)), jnp.ones((2, 3), bool), jnp.ones(5)
        ),
        r"mask \[V, N, L\]",
    ),
    "ibot mask dtype": (
        lambda: losses.ibot_patch_loss(
            jnp.ones((2, 3, 4, 5)), jnp.ones((2, 3, 4, 5)), jnp.ones((2, 3, 4)), jnp.ones(5)
        ),
        r"mask must be boolean",
    ),
    "mae shapes": (
        lambda: losses.mae_loss(jnp.ones((2, 4, 6)), jnp.ones((2, 4, 5)), jnp.ones((2, 4), bool)),
        r"\(2, 4, 6\).*\(2, 4, 5\)",
    ),
    "mae one value": (
        lambda: losses.mae_loss(jnp.ones((2, 4, 1)), jnp.ones((2, 4, 1)), jnp.ones((2, 4), bool)),
        r"norm_pix needs >= 2",
    ),
}


@pytest.mark.parametrize("name", sorted(NEW_BAD_CALLS))
def test_new_losses_bad_input_raises_value_error(name):
    call, message = NEW_BAD_CALLS[name]
    with pytest.raises(ValueError, match=message):
        call()
