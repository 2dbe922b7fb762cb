r"""Self-supervised objectives as pure functions on arrays.

Every loss takes embeddings (``[N, D]`` arrays, any floating dtype), computes in float32 and
returns a float32 scalar: the mean over the batch. Contrastive and cosine losses L2-normalise
their inputs themselves; Barlow Twins and VICReg use the raw embeddings, as their papers do.
Nothing here depends on sslax's models, so the functions drop into any JAX training step.

Cross-device batches
--------------------
Functions with an ``axis_name`` argument are meant to be called inside :func:`jax.shard_map`
(with its default ``check_vma=True``), each device passing its local rows. They then compute
the loss of the *global* batch: negatives come from every device, batch statistics are
reduced over the axis, and the returned value is the global mean, identical on every device.
Gradients are those of the global loss: ``jax.grad`` of the returned value with respect to a
device's local rows gives exactly that device's slice of the single-device gradient on the
concatenated batch, because :func:`jax.lax.all_gather` transposes into a reduce-scatter and
:func:`jax.lax.psum` of the per-device partial sums transposes into a broadcast.
Under ``check_vma=False`` or :func:`jax.pmap`, JAX transposes ``psum`` into another ``psum``
instead, so gradients of the (replicated) loss come out ``axis_size`` times too large there.

Matrix products run at ``Precision.HIGHEST`` so that float32 really means float32 on TPUs and
GPUs, whose default would round the operands to bfloat16 or TF32; a cosine rounded to
bfloat16 is off by up to 4e-3, i.e. 0.04 in a logit at temperature 0.1.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "barlow_twins_loss",
    "byol_loss",
    "dcl_loss",
    "dino_center_update",
    "dino_loss",
    "ibot_patch_loss",
    "info_nce",
    "koleo_loss",
    "mae_loss",
    "moco_enqueue",
    "moco_info_nce",
    "simsiam_loss",
    "sinkhorn_knopp",
    "supcon_loss",
    "swav_loss",
    "vicreg_loss",
]

_PRECISION = lax.Precision.HIGHEST
# Same floor as torch.nn.functional.normalize: a zero row stays zero instead of becoming NaN.
_NORM_EPS = 1e-12


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.dot(a, b, precision=_PRECISION)


def _l2_normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    squared_norm = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * lax.rsqrt(jnp.maximum(squared_norm, _NORM_EPS**2))


def _check_floating(fn: str, name: str, x: Any, ndim: int) -> None:
    shape = jnp.shape(x)
    if len(shape) != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got shape {shape}")
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{fn}: {name} must have a floating dtype, got {dtype}")


def _check_pair(fn: str, names: tuple[str, str], a: Any, b: Any) -> None:
    for name, x in zip(names, (a, b)):
        _check_floating(fn, name, x, ndim=2)
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{fn}: {names[0]} and {names[1]} must have the same shape, "
            f"got {names[0]} {jnp.shape(a)} and {names[1]} {jnp.shape(b)}"
        )
    if jnp.shape(a)[0] == 0:
        raise ValueError(f"{fn}: {names[0]} has no rows, shape {jnp.shape(a)}")


_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_UNIT_INTERVAL = (lambda v: 0 <= v <= 1, "in [0, 1]")


def _check_scalar(fn: str, name: str, value: Any, valid: tuple[Any, str]) -> None:
    """Checks a hyperparameter when it is concrete; a traced (e.g. learned) one is left alone."""
    if jnp.ndim(value) != 0:
        raise ValueError(f"{fn}: {name} must be a scalar, got shape {jnp.shape(value)}")
    try:
        concrete = float(value)
    except jax.errors.ConcretizationTypeError:
        return
    is_valid, expected = valid
    if not is_valid(concrete):  # comparisons are False for NaN, so NaN is rejected too
        raise ValueError(f"{fn}: {name} must be {expected}, got {value}")


def _global_count(local_count: int, axis_name: Any) -> int:
    if axis_name is None:
        return local_count
    return local_count * lax.axis_size(axis_name)


def _psum_if(x: jax.Array, axis_name: Any) -> jax.Array:
    return x if axis_name is None else lax.psum(x, axis_name)


# --------------------------------------------------------------------------------------------
# InfoNCE / NT-Xent
# --------------------------------------------------------------------------------------------


def _masked_logsumexp_dense(queries: jax.Array, keys: jax.Array, self_cols: jax.Array) -> jax.Array:
    logits = _dot(queries, keys.T)
    is_self = self_cols[:, None] == jnp.arange(keys.shape[0])[None, :]
    return jax.nn.logsumexp(jnp.where(is_self, -jnp.inf, logits), axis=-1)


def _tile_logits(
    query_block: jax.Array, key_block: jax.Array, self_block: jax.Array, col_offset: jax.Array
) -> jax.Array:
    logits = _dot(query_block, key_block.T)
    cols = col_offset + jnp.arange(key_block.shape[0])
    return jnp.where(self_block[:, None] == cols[None, :], -jnp.inf, logits)


def _blocks(chunk_size: int, *arrays: jax.Array) -> list[jax.Array]:
    return [a.reshape(a.shape[0] // chunk_size, chunk_size, *a.shape[1:]) for a in arrays]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _masked_logsumexp_chunked(
    chunk_size: int, queries: jax.Array, keys: jax.Array, self_cols: jax.Array
) -> jax.Array:
    """Row-wise logsumexp of ``queries @ keys.T`` without entry ``(i, self_cols[i])``.

    Walks ``chunk_size x chunk_size`` tiles with a running max and sum per row, so only one
    tile is alive at a time.
    """
    q_blocks, self_blocks = _blocks(chunk_size, queries, self_cols)
    (k_blocks,) = _blocks(chunk_size, keys)
    col_offsets = jnp.arange(k_blocks.shape[0]) * chunk_size
    # A finite start keeps exp(old_max - new_max) finite even if a whole tile is masked.
    lowest = jnp.finfo(jnp.float32).min

    def row_block(q_and_self):
        query_block, self_block = q_and_self

        def absorb_tile(carry, key_args):
            running_max, running_sum = carry
            key_block, col_offset = key_args
            logits = _tile_logits(query_block, key_block, self_block, col_offset)
            new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
            running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(
                jnp.exp(logits - new_max[:, None]), axis=-1
            )
            return (new_max, running_sum), None

        # *_like keeps the carry's device-variance type equal to the body's inside shard_map.
        row_template = query_block[:, 0]
        start = (jnp.full_like(row_template, lowest), jnp.zeros_like(row_template))
        (row_max, row_sum), _ = lax.scan(absorb_tile, start, (k_blocks, col_offsets))
        return row_max + jnp.log(row_sum)

    return lax.map(row_block, (q_blocks, self_blocks)).reshape(-1)


def _masked_logsumexp_chunked_fwd(chunk_size, queries, keys, self_cols):
    lse = _masked_logsumexp_chunked(chunk_size, queries, keys, self_cols)
    return lse, (queries, keys, self_cols, lse)


def _masked_logsumexp_chunked_bwd(chunk_size, residuals, lse_cotangent):
    # d lse_i / d logit_ij = softmax_ij = exp(logit_ij - lse_i): each tile's softmax is
    # recomputed from the saved lse instead of being stored, as in flash attention.
    queries, keys, self_cols, lse = residuals
    q_blocks, self_blocks, lse_blocks, cot_blocks = _blocks(
        chunk_size, queries, self_cols, lse, lse_cotangent
    )
    (k_blocks,) = _blocks(chunk_size, keys)
    block_ids = jnp.arange(k_blocks.shape[0])

    def row_block(dkeys, row_args):
        query_block, self_block, lse_block, cot_block = row_args

        def tile(carry, key_args):
            dquery_block, dkeys = carry
            key_block, block_id = key_args
            logits = _tile_logits(query_block, key_block, self_block, block_id * chunk_size)
            weights = jnp.exp(logits - lse_block[:, None]) * cot_block[:, None]
            dquery_block = dquery_block + _dot(weights, key_block)
            dkey_block = lax.dynamic_index_in_dim(dkeys, block_id, keepdims=False)
            dkeys = lax.dynamic_update_index_in_dim(
                dkeys, dkey_block + _dot(weights.T, query_block), block_id, axis=0
            )
            return (dquery_block, dkeys), None

        (dquery_block, dkeys), _ = lax.scan(
            tile, (jnp.zeros_like(query_block), dkeys), (k_blocks, block_ids)
        )
        return dkeys, dquery_block

    dkeys, dquery_blocks = lax.scan(
        row_block, jnp.zeros_like(k_blocks), (q_blocks, self_blocks, lse_blocks, cot_blocks)
    )
    return dquery_blocks.reshape(queries.shape), dkeys.reshape(keys.shape), None


_masked_logsumexp_chunked.defvjp(_masked_logsumexp_chunked_fwd, _masked_logsumexp_chunked_bwd)


def info_nce(
    z1: jax.Array,
    z2: jax.Array,
    *,
    temperature: float = 0.1,
    axis_name: Any = None,
    chunk_size: int | None = None,
) -> jax.Array:
    r"""NT-Xent (normalised-temperature cross-entropy) loss of SimCLR.

    The ``2N`` views :math:`v = [z_1; z_2]` are L2-normalised; view :math:`i` and its partner
    :math:`p(i)` (row ``i`` of ``z1`` and row ``i`` of ``z2``) are positives, and every other
    view of the global batch is a negative. With :math:`s_{ij} = v_i^\top v_j / \tau`,

    .. math::

        \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N}
            -\log \frac{\exp(s_{i,p(i)})}{\sum_{j \ne i} \exp(s_{ij})}.

    A view is never its own negative (the diagonal is masked). This is the mean over all
    :math:`2N` anchors, as in the paper (Chen et al. 2020, arXiv:2002.05709, Eq. 1); the
    official SimCLR code sums the two directions' means and so reports twice this value.

    Args:
      z1: ``[N, D]`` embeddings of the first views (local rows when ``axis_name`` is set).
      z2: ``[N, D]`` embeddings of the second views; row ``i`` is the positive of ``z1[i]``.
      temperature: :math:`\tau > 0`. May be a traced scalar (a learned temperature); it is
        only range-checked when concrete.
      axis_name: mesh axis to gather negatives over, inside :func:`jax.shard_map`. Each
        device passes its own rows; the loss is the global-batch loss and is identical on
        all devices, and its gradient flows back to the devices that own each view.
      chunk_size: if set, never materialise the ``[2N, 2N]`` similarity matrix: walk
        ``chunk_size x chunk_size`` tiles with an online logsumexp and recompute the tiles in
        the backward pass, so memory grows linearly with the batch (at about a third more
        matmul work than the dense form). It must divide the number of local views
        ``2 * z1.shape[0]``. Values and gradients match the dense form.

    Returns:
      Scalar float32 loss.

    Raises:
      ValueError: on non-2-D, non-floating or mismatched embeddings, a non-positive
        temperature, or a chunk_size that is not a positive divisor of ``2 * z1.shape[0]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from sslax.losses import info_nce
      >>> z1 = jax.random.normal(jax.random.key(0), (8, 16))
      >>> z2 = z1 + 0.1 * jax.random.normal(jax.random.key(1), (8, 16))
      >>> loss = info_nce(z1, z2, temperature=0.1)
      >>> bool(jnp.allclose(loss, info_nce(z1, z2, temperature=0.1, chunk_size=4)))
      True
      >>> bool(loss < info_nce(z1, z2[::-1], temperature=0.1))  # mismatched pairs cost more
      True
    """
    fn = "info_nce"
    _check_pair(fn, ("z1", "z2"), z1, z2)
    _check_scalar(fn, "temperature", temperature, _POSITIVE)
    local_views = 2 * z1.shape[0]
    if chunk_size is not None:
        if (
            isinstance(chunk_size, bool)
            or not isinstance(chunk_size, int)
            or chunk_size <= 0
            or local_views % chunk_size
        ):
            raise ValueError(
                f"{fn}: chunk_size must be a positive int dividing the number of local views "
                f"2 * z1.shape[0] = {local_views} (z1 shape {z1.shape}), got {chunk_size!r}"
            )

    n1, n2 = _l2_normalize(z1), _l2_normalize(z2)
    # Rows 2i and 2i + 1 are the views of image i. Interleaved rather than stacked one half
    # after the other, the rows of z1 and z2 that a device holds stay on that device when
    # they are global arrays sharded over the batch (under jit), as they do here under
    # shard_map.
    views = jnp.stack([n1, n2], axis=1).reshape(local_views, -1)
    if axis_name is None:
        keys, first_col = views, 0
    else:
        # Keys are ordered device by device; logsumexp does not care about the order, only
        # that each anchor's own column is found, at device_index * local_views + row.
        keys = lax.all_gather(views, axis_name, tiled=True)
        first_col = lax.axis_index(axis_name) * local_views
    self_cols = first_col + jnp.arange(local_views)

    queries = views / temperature
    if chunk_size is None:
        lse = _masked_logsumexp_dense(queries, keys, self_cols)
    else:
        lse = _masked_logsumexp_chunked(chunk_size, queries, keys, self_cols)
    # Both anchors of a pair share one positive logit.
    positive_logits = jnp.sum((n1 / temperature) * n2, axis=-1)
    local_sum = jnp.sum(lse) - 2.0 * jnp.sum(positive_logits)
    return _psum_if(local_sum, axis_name) / keys.shape[0]


# --------------------------------------------------------------------------------------------
# MoCo
# --------------------------------------------------------------------------------------------


def moco_info_nce(
    q: jax.Array, k: jax.Array, queue: jax.Array, *, temperature: float = 0.2
) -> jax.Array:
    r"""InfoNCE of MoCo: each query against its key and a queue of negative keys.

    With L2-normalised query :math:`q_i`, key :math:`k_i` and queue rows :math:`n_j`,

    .. math::

        \mathcal{L} = \frac{1}{N} \sum_{i=1}^{N}
            -\log \frac{\exp(q_i^\top k_i / \tau)}
                       {\exp(q_i^\top k_i / \tau) + \sum_{j=1}^{K} \exp(q_i^\top n_j / \tau)},

    i.e. cross-entropy over ``K + 1`` logits with the positive at index 0 (He et al. 2020,
    arXiv:1911.05722, Eq. 1). Keys and queue are constants (stop-gradient): they come from
    the momentum encoder.

    Args:
      q: ``[N, D]`` queries from the online encoder.
      k: ``[N, D]`` keys from the momentum encoder; ``k[i]`` is the positive of ``q[i]``.
      queue: ``[K, D]`` negative keys (see :func:`moco_enqueue`).
      temperature: :math:`\tau > 0` (0.2 in MoCo v2).

    Returns:
      Scalar float32 loss.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.losses import moco_info_nce
      >>> q = jnp.array([[1.0, 0.0]])
      >>> loss = moco_info_nce(q, q, jnp.array([[0.0, 1.0], [-1.0, 0.0]]), temperature=1.0)
      >>> round(float(loss), 4)  # -log(e / (e + 1 + 1/e))
      0.4076
    """
    fn = "moco_info_nce"
    _check_pair(fn, ("q", "k"), q, k)
    _check_floating(fn, "queue", queue, ndim=2)
    if queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"{fn}: queue dimension must match q, got queue {queue.shape} and q {q.shape}"
        )
    _check_scalar(fn, "temperature", temperature, _POSITIVE)
    queries = _l2_normalize(q) / temperature
    keys = lax.stop_gradient(_l2_normalize(k))
    negatives = lax.stop_gradient(_l2_normalize(queue))
    positive_logits = jnp.sum(queries * keys, axis=-1, keepdims=True)
    logits = jnp.concatenate([positive_logits, _dot(queries, negatives.T)], axis=-1)
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - positive_logits[:, 0])


def moco_enqueue(
    queue: jax.Array, ptr: jax.Array, keys: jax.Array, *, axis_name: Any = None
) -> tuple[jax.Array, jax.Array]:
    r"""Writes a batch of keys into MoCo's FIFO queue of negatives.

    The keys (from all devices when ``axis_name`` is set, gathered in device order) overwrite
    rows ``ptr .. ptr + B`` of the queue, the oldest entries, and the pointer advances by
    ``B`` modulo the queue size ``K``. ``K`` must be a multiple of the global number of keys
    ``B`` so that a write never wraps; this is checked at trace time from static shapes.
    Keys are stored as given (cast to the queue's dtype) and without gradient;
    :func:`moco_info_nce` normalises the queue itself. Start from random rows, as MoCo does:
    rows of an all-zero queue would act as negatives with cosine 0 until overwritten.

    Args:
      queue: ``[K, D]`` queue.
      ptr: integer scalar, the next row to overwrite (a multiple of ``B``; start at 0).
      keys: ``[b, D]`` keys of this step (local rows when ``axis_name`` is set).
      axis_name: mesh axis to gather keys over, inside :func:`jax.shard_map`. The new queue
        is then the same on every device (typed device-invariant).

    Returns:
      ``(queue, ptr)`` after the write; ``ptr`` is int32.

    Raises:
      ValueError: on non-2-D or non-floating arrays, a dimension mismatch, or a queue size
        that is not a multiple of the global number of keys.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.losses import moco_enqueue
      >>> queue, ptr = jnp.zeros((4, 2)), jnp.array(0)
      >>> queue, ptr = moco_enqueue(queue, ptr, jnp.ones((2, 2)))
      >>> queue, ptr = moco_enqueue(queue, ptr, 2 * jnp.ones((2, 2)))
      >>> queue[:, 0].tolist(), int(ptr)
      ([1.0, 1.0, 2.0, 2.0], 0)
    """
    fn = "moco_enqueue"
    _check_floating(fn, "queue", queue, ndim=2)
    _check_floating(fn, "keys", keys, ndim=2)
    if keys.shape[1] != queue.shape[1]:
        raise ValueError(
            f"{fn}: keys dimension must match the queue, got keys {keys.shape} "
            f"and queue {queue.shape}"
        )
    if jnp.ndim(ptr) != 0 or not jnp.issubdtype(jnp.result_type(ptr), jnp.integer):
        raise ValueError(
            f"{fn}: ptr must be an integer scalar, got {jnp.result_type(ptr)} "
            f"of shape {jnp.shape(ptr)}"
        )
    queue_size, num_keys = queue.shape[0], _global_count(keys.shape[0], axis_name)
    if queue_size % num_keys:
        raise ValueError(
            f"{fn}: queue size {queue_size} (queue {queue.shape}) must be a multiple of the "
            f"global number of keys {num_keys} (keys {keys.shape} per device)"
        )
    keys = lax.stop_gradient(keys).astype(queue.dtype)
    if axis_name is not None:
        # Invariant gather: every device writes the same keys, so the queue stays replicated.
        keys = lax.all_gather(keys, axis_name, tiled=True, to="invarying")
    ptr = jnp.asarray(ptr, jnp.int32)
    queue = lax.dynamic_update_slice_in_dim(queue, keys, ptr, axis=0)
    return queue, (ptr + num_keys) % queue_size


# --------------------------------------------------------------------------------------------
# BYOL / SimSiam
# --------------------------------------------------------------------------------------------


def _cosine_to_constant(fn: str, p: jax.Array, z: jax.Array) -> jax.Array:
    _check_pair(fn, ("p", "z"), p, z)
    target = lax.stop_gradient(_l2_normalize(z))
    return jnp.sum(_l2_normalize(p) * target, axis=-1)


def byol_loss(p: jax.Array, z: jax.Array) -> jax.Array:
    r"""BYOL regression loss between online predictions and target projections.

    .. math::

        \mathcal{L} = \frac{1}{N} \sum_{i=1}^{N}
            \left\| \bar p_i - \bar z_i \right\|_2^2
            = \frac{1}{N} \sum_{i=1}^{N} \left(2 - 2 \cos(p_i, z_i)\right),

    with :math:`\bar x = x / \|x\|_2` and :math:`z` a constant (stop-gradient), as the target
    network is not trained by this loss (Grill et al. 2020, arXiv:2006.07733, Eq. 2). BYOL
    symmetrises by adding the loss with the views swapped; call this twice for that.

    Args:
      p: ``[N, D]`` online predictions.
      z: ``[N, D]`` target projections of the other view.

    Returns:
      Scalar float32 loss in ``[0, 4]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.losses import byol_loss
      >>> float(byol_loss(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 3.0]])))
      2.0
    """
    return jnp.mean(2.0 - 2.0 * _cosine_to_constant("byol_loss", p, z))


def simsiam_loss(p: jax.Array, z: jax.Array) -> jax.Array:
    r"""SimSiam negative cosine similarity, with stop-gradient on the target.

    .. math::

        \mathcal{L} = -\frac{1}{N} \sum_{i=1}^{N}
            \frac{p_i^\top \operatorname{sg}(z_i)}{\|p_i\|_2 \, \|z_i\|_2}

    (Chen & He 2021, arXiv:2011.10566, Eq. 1 and 3; the paper's symmetrised loss is the mean
    of this over the two view orders.)

    Args:
      p: ``[N, D]`` predictor outputs.
      z: ``[N, D]`` projections of the other view, treated as constants.

    Returns:
      Scalar float32 loss in ``[-1, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.losses import simsiam_loss
      >>> round(float(simsiam_loss(jnp.array([[1.0, 1.0]]), jnp.array([[2.0, 2.0]]))), 6)
      -1.0
    """
    return -jnp.mean(_cosine_to_constant("simsiam_loss", p, z))


# --------------------------------------------------------------------------------------------
# DINO
# --------------------------------------------------------------------------------------------


def dino_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    center: jax.Array,
    *,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> jax.Array:
    r"""DINO self-distillation cross-entropy over pairs of different views.

    Teacher targets are centred and sharpened, and treated as constants:
    :math:`P_t = \operatorname{softmax}((g_t - c) / \tau_t)`; student predictions are
    :math:`\log P_s = \operatorname{log\,softmax}(f_s / \tau_s)`. With :math:`T` teacher views
    (the first :math:`T` of the :math:`S` student views are the same crops),

    .. math::

        \mathcal{L} = \frac{1}{T(S-1)} \sum_{t=1}^{T} \sum_{s \ne t}
            \frac{1}{N} \sum_{n=1}^{N} \sum_{k=1}^{K} -P_t[n, k] \, \log P_s[n, k]

    (Caron et al. 2021, arXiv:2104.14294, Eq. 3 and Algorithm 1).

    Args:
      student_logits: ``[S, N, K]`` student head outputs for all views.
      teacher_logits: ``[T, N, K]`` teacher head outputs for the global views, ``T <= S``.
      center: ``[K]`` running centre of the teacher logits (see :func:`dino_center_update`).
      student_temp: :math:`\tau_s > 0`.
      teacher_temp: :math:`\tau_t > 0`.

    Returns:
      Scalar float32 loss.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.losses import dino_loss
      >>> teacher = jnp.zeros((2, 3, 4))  # uniform targets, so each term is log K
      >>> loss = dino_loss(jnp.zeros((4, 3, 4)), teacher, jnp.zeros(4))
      >>> bool(jnp.isclose(loss, jnp.log(4.0)))
      True
    """
    fn = "dino_loss"
    _check_floating(fn, "student_logits", student_logits, ndim=3)
    _check_floating(fn, "teacher_logits", teacher_logits, ndim=3)
    _check_floating(fn, "center", center, ndim=1)
    num_student, batch, classes = student_logits.shape
    num_teacher = teacher_logits.shape[0]
    if teacher_logits.shape[1:] != (batch, classes) or center.shape != (classes,):
        raise ValueError(
            f"{fn}: expected student_logits [S, N, K], teacher_logits [T, N, K] and center "
            f"[K], got {student_logits.shape}, {teacher_logits.shape} and {center.shape}"
        )
    if not 1 <= num_teacher <= num_student or num_student < 2:
        raise ValueError(
            f"{fn}: need 1 <= T <= S and S >= 2 so that some (teacher, student) views differ, "
            f"got teacher_logits {teacher_logits.shape} and student_logits "
            f"{student_logits.shape}"
        )
    _check_scalar(fn, "student_temp", student_temp, _POSITIVE)
    _check_scalar(fn, "teacher_temp", teacher_temp, _POSITIVE)

    centred = teacher_logits.astype(jnp.float32) - center.astype(jnp.float32)
    targets = lax.stop_gradient(jax.nn.softmax(centred / teacher_temp, axis=-1))
    log_probs = jax.nn.log_softmax(student_logits.astype(jnp.float32) / student_temp, axis=-1)
    # Sum over all (t, s) pairs, then take out the T pairs where s == t.
    all_pairs = -jnp.sum(jnp.sum(targets, axis=0) * jnp.sum(log_probs, axis=0))
    same_view = -jnp.sum(targets * log_probs[:num_teacher])
    return (all_pairs - same_view) / (batch * num_teacher * (num_student - 1))


def dino_center_update(
    center: jax.Array, teacher_logits: jax.Array, *, momentum: float = 0.9, axis_name: Any = None
) -> jax.Array:
    r"""EMA update of DINO's teacher centre with the global batch mean of the teacher logits.

    .. math::

        c \leftarrow m\, c + (1 - m) \frac{1}{T N_{\text{global}}}
            \sum_{t=1}^{T} \sum_{n=1}^{N_{\text{global}}} g_t[n]

    The mean runs over teacher views and the batch of every device (``pmean`` over
    ``axis_name``), as the official code all-reduces it. No gradient flows through it.

    Args:
      center: ``[K]`` current centre.
      teacher_logits: ``[T, N, K]`` teacher outputs (local rows when ``axis_name`` is set).
      momentum: :math:`m \in [0, 1]` (0.9 in DINO).
      axis_name: mesh axis to average over, inside :func:`jax.shard_map`.

    Returns:
      ``[K]`` float32 new centre.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.losses import dino_center_update
      >>> teacher_logits = jnp.ones((2, 3, 2))  # 2 views, batch 3, K = 2
      >>> dino_center_update(jnp.array([0.0, 2.0]), teacher_logits, momentum=0.5).tolist()
      [0.5, 1.5]
    """
    fn = "dino_center_update"
    _check_floating(fn, "center", center, ndim=1)
    _check_floating(fn, "teacher_logits", teacher_logits, ndim=3)
    if teacher_logits.shape[-1] != center.shape[0]:
        raise ValueError(
            f"{fn}: teacher_logits {teacher_logits.shape} must end in the centre "
            f"size, center {center.shape}"
        )
    _check_scalar(fn, "momentum", momentum, _UNIT_INTERVAL)
    batch_center = jnp.mean(lax.stop_gradient(teacher_logits).astype(jnp.float32), axis=(0, 1))
    if axis_name is not None:
        batch_center = lax.pmean(batch_center, axis_name)
    return momentum * center.astype(jnp.float32) + (1.0 - momentum) * batch_center


# --------------------------------------------------------------------------------------------
# Barlow Twins / VICReg
# --------------------------------------------------------------------------------------------


def _global_mean(x: jax.Array, count: int, axis_name: Any) -> jax.Array:
    return _psum_if(jnp.sum(x, axis=0), axis_name) / count


def _off_diagonal_square_sum(matrix: jax.Array) -> jax.Array:
    # Masking rather than subtracting the diagonal from the total: with diagonal entries
    # near 1 and off-diagonal ones near 0 the subtraction would cancel catastrophically.
    off_diagonal = jnp.where(jnp.eye(matrix.shape[0], dtype=bool), 0.0, matrix)
    return jnp.sum(jnp.square(off_diagonal))


def barlow_twins_loss(
    z1: jax.Array, z2: jax.Array, *, lambd: float = 5.1e-3, axis_name: Any = None
) -> jax.Array:
    r"""Barlow Twins redundancy-reduction loss.

    Each embedding dimension is standardised over the global batch as BatchNorm without
    affine parameters does (biased variance, :math:`\epsilon = 10^{-5}`), giving
    :math:`\hat z_1, \hat z_2`, and the cross-correlation matrix
    :math:`C = \hat z_1^\top \hat z_2 / N` is pushed towards the identity:

    .. math::

        \mathcal{L} = \sum_{i} (1 - C_{ii})^2 + \lambda \sum_{i} \sum_{j \ne i} C_{ij}^2

    (Zbontar et al. 2021, arXiv:2103.03230, Eq. 1; normalisation as in the official code.)

    Args:
      z1: ``[N, D]`` projections of the first views (local rows when ``axis_name`` is set).
      z2: ``[N, D]`` projections of the second views.
      lambd: :math:`\lambda \ge 0`, weight of the redundancy term.
      axis_name: mesh axis over which batch statistics and :math:`C` are reduced, inside
        :func:`jax.shard_map`; the loss is then that of the global batch.

    Returns:
      Scalar float32 loss.

    Example:
      >>> import jax
      >>> from sslax.losses import barlow_twins_loss
      >>> z = jax.random.normal(jax.random.key(0), (64, 8))
      >>> bool(barlow_twins_loss(z, z) < barlow_twins_loss(z, z[::-1]))
      True
    """
    fn = "barlow_twins_loss"
    _check_pair(fn, ("z1", "z2"), z1, z2)
    _check_scalar(fn, "lambd", lambd, _NON_NEGATIVE)
    count = _global_count(z1.shape[0], axis_name)
    if count < 2:
        raise ValueError(f"{fn}: need at least 2 rows in the global batch, got z1 {z1.shape}")

    def batch_norm(z):
        z = z.astype(jnp.float32)
        centred = z - _global_mean(z, count, axis_name)
        variance = _global_mean(jnp.square(centred), count, axis_name)
        return centred * lax.rsqrt(variance + 1e-5)

    correlation = _psum_if(_dot(batch_norm(z1).T, batch_norm(z2)), axis_name) / count
    on_diagonal = jnp.sum(jnp.square(1.0 - jnp.diagonal(correlation)))
    return on_diagonal + lambd * _off_diagonal_square_sum(correlation)


def vicreg_loss(
    z1: jax.Array,
    z2: jax.Array,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    axis_name: Any = None,
) -> jax.Array:
    r"""VICReg: variance-invariance-covariance regularisation.

    For :math:`x = z_1`, :math:`y = z_2` (``[N, D]``), with unbiased (:math:`N-1`) batch
    statistics over the global batch,

    .. math::

        \mathcal{L} = \lambda \frac{1}{ND} \|x - y\|_F^2
            + \mu \frac{v(x) + v(y)}{2} + \nu \left(c(x) + c(y)\right),

        v(x) = \frac{1}{D} \sum_{j} \max\left(0, 1 - \sqrt{\operatorname{Var}(x_{:,j})
            + 10^{-4}}\right), \qquad
        c(x) = \frac{1}{D} \sum_{i \ne j} \operatorname{Cov}(x)_{ij}^2

    with :math:`\lambda, \mu, \nu` = ``sim_coeff, std_coeff, cov_coeff`` (Bardes et al. 2022,
    arXiv:2105.04906, Eq. 1-6; conventions of the official code).

    Args:
      z1: ``[N, D]`` expander outputs of the first views (local rows with ``axis_name``).
      z2: ``[N, D]`` expander outputs of the second views.
      sim_coeff: invariance weight :math:`\lambda \ge 0`.
      std_coeff: variance weight :math:`\mu \ge 0`.
      cov_coeff: covariance weight :math:`\nu \ge 0`.
      axis_name: mesh axis over which all three terms use the global batch, inside
        :func:`jax.shard_map`.

    Returns:
      Scalar float32 loss.

    Example:
      >>> import jax
      >>> from sslax.losses import vicreg_loss
      >>> z = jax.random.normal(jax.random.key(0), (256, 4))
      >>> bool(vicreg_loss(z, z) < 1.0)  # identical, unit-variance, decorrelated: near 0
      True
    """
    fn = "vicreg_loss"
    _check_pair(fn, ("z1", "z2"), z1, z2)
    for name, coeff in (
        ("sim_coeff", sim_coeff),
        ("std_coeff", std_coeff),
        ("cov_coeff", cov_coeff),
    ):
        _check_scalar(fn, name, coeff, _NON_NEGATIVE)
    count = _global_count(z1.shape[0], axis_name)
    if count < 2:
        raise ValueError(f"{fn}: need at least 2 rows in the global batch, got z1 {z1.shape}")
    dim = z1.shape[1]
    x, y = z1.astype(jnp.float32), z2.astype(jnp.float32)

    invariance = _psum_if(jnp.sum(jnp.square(x - y)), axis_name) / (count * dim)

    def variance_and_covariance(z):
        centred = z - _global_mean(z, count, axis_name)
        variance = _psum_if(jnp.sum(jnp.square(centred), axis=0), axis_name) / (count - 1)
        covariance = _psum_if(_dot(centred.T, centred), axis_name) / (count - 1)
        hinge = jnp.mean(jax.nn.relu(1.0 - jnp.sqrt(variance + 1e-4)))
        return hinge, _off_diagonal_square_sum(covariance) / dim

    std_x, cov_x = variance_and_covariance(x)
    std_y, cov_y = variance_and_covariance(y)
    return sim_coeff * invariance + std_coeff * (std_x + std_y) / 2.0 + cov_coeff * (cov_x + cov_y)


# --------------------------------------------------------------------------------------------
# KoLeo
# --------------------------------------------------------------------------------------------


def koleo_loss(x: jax.Array, *, epsilon: float = 1e-8, axis_name: Any = None) -> jax.Array:
    r"""DINOv2's Kozachenko-Leonenko regulariser: spreads rows over the unit sphere.

    Each row is L2-normalised, :math:`\hat x_i = x_i / \|x_i\|`, and paired with its nearest
    other row (largest cosine, ties to the lowest index); the loss is the mean negative log of
    that distance,

    .. math::

        \mathcal{L} = -\frac{1}{N} \sum_{i=1}^{N}
            \log\left(\min_{j \ne i} \|\hat x_i - \hat x_j\| + \epsilon\right),

    the Kozachenko-Leonenko differential-entropy estimator up to constants (Sablayrolles et
    al. 2019, arXiv:1806.03198; DINOv2, Oquab et al. 2023, arXiv:2304.07193, Sec. 4). As in the
    official ``KoLeoLoss``, the distance is ``torch.nn.PairwiseDistance(eps=epsilon)``'s
    :math:`\|\hat x_i - \hat x_j + \epsilon\|`, the neighbour index is a constant, and the
    gradient reaches both rows of a pair.

    Args:
      x: ``[N, D]`` features (local rows when ``axis_name`` is set), N >= 2 globally.
      epsilon: :math:`\epsilon \ge 0`, keeps the log finite when two rows coincide.
      axis_name: mesh axis inside :func:`jax.shard_map`; neighbours are then searched over the
        global batch (an all-gather of the normalised rows) and the mean is global. DINOv2
        computes it per device; the global form does not depend on the device count.

    Returns:
      Scalar float32 loss.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.losses import koleo_loss
      >>> spread = jnp.eye(4)  # orthogonal rows: every neighbour at distance sqrt(2)
      >>> bool(jnp.isclose(koleo_loss(spread), -jnp.log(jnp.sqrt(2.0))))
      True
      >>> bool(koleo_loss(jnp.ones((4, 4)) + 0.01 * jnp.eye(4)) > koleo_loss(spread))
      True
    """
    fn = "koleo_loss"
    _check_floating(fn, "x", x, ndim=2)
    _check_scalar(fn, "epsilon", epsilon, _NON_NEGATIVE)
    local = x.shape[0]
    count = _global_count(local, axis_name)
    if count < 2:
        raise ValueError(f"{fn}: need at least 2 rows in the global batch, got x {x.shape}")
    rows = _l2_normalize(x)
    candidates, offset = rows, 0
    if axis_name is not None:
        candidates = lax.all_gather(rows, axis_name, tiled=True)
        offset = lax.axis_index(axis_name) * local
    cosines = _dot(lax.stop_gradient(rows), lax.stop_gradient(candidates).T)
    is_self = jnp.arange(count)[None, :] == (offset + jnp.arange(local))[:, None]
    neighbour = jnp.argmax(jnp.where(is_self, -jnp.inf, cosines), axis=1)
    difference = rows - jnp.take(candidates, neighbour, axis=0) + epsilon
    distance = jnp.sqrt(jnp.sum(jnp.square(difference), axis=1))
    return -_psum_if(jnp.sum(jnp.log(distance + epsilon)), axis_name) / count


# --------------------------------------------------------------------------------------------
# SwAV
# --------------------------------------------------------------------------------------------


def sinkhorn_knopp(
    scores: jax.Array, *, epsilon: float = 0.05, num_iters: int = 3, axis_name: Any = None
) -> jax.Array:
    r"""SwAV's equal-partition codes: soft assignments of samples to prototypes.

    Solves the entropy-regularised transport problem of SwAV (Caron et al. 2020,
    arXiv:2006.09882, Eq. 3 and Sec. 3.1) approximately, as the official
    ``distributed_sinkhorn`` does: :math:`Q = \exp(S / \epsilon)^\top` (``[K, B]`` over the
    global batch of B samples), divided by its total, then ``num_iters`` rounds of

    .. math::

        Q \leftarrow \frac{1}{K} \operatorname{diag}(Q \mathbf 1)^{-1} Q, \qquad
        Q \leftarrow \frac{1}{B} Q \operatorname{diag}(\mathbf 1^\top Q)^{-1}

    (prototypes first, samples last), and finally :math:`B Q^\top`: every row of the result
    sums to 1 and, as the rounds converge, every prototype receives B/K of the mass. The
    global maximum of ``scores`` is subtracted before the exponential (the normalisations
    cancel it), so large ``scores / epsilon`` do not overflow. Also DINOv2's Sinkhorn-Knopp
    teacher (``epsilon`` = the teacher temperature). No gradient flows through the codes.

    Args:
      scores: ``[B, K]`` prototype scores (local rows with ``axis_name``).
      epsilon: :math:`\epsilon > 0`, the entropic regularisation (a temperature).
      num_iters: rounds of normalisation, >= 1 (SwAV: 3).
      axis_name: mesh axis inside :func:`jax.shard_map`; the prototype marginals are then
        those of the global batch, as in the official code's all-reduce.

    Returns:
      ``[B, K]`` float32 codes, rows summing to 1.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from sslax.losses import sinkhorn_knopp
      >>> noise = 0.1 * jax.random.normal(jax.random.key(0), (64, 4))
      >>> scores = noise + jnp.array([0.3, 0.0, 0.0, 0.0])  # a softmax gives prototype 0 59/64
      >>> q = sinkhorn_knopp(scores, num_iters=10)
      >>> bool(jnp.allclose(q.sum(1), 1.0, atol=1e-5))
      True
      >>> bool(jnp.allclose(q.sum(0), 16.0, atol=0.01))  # equal partition: 64/4 per prototype
      True
    """
    fn = "sinkhorn_knopp"
    _check_floating(fn, "scores", scores, ndim=2)
    _check_scalar(fn, "epsilon", epsilon, _POSITIVE)
    if not isinstance(num_iters, int) or isinstance(num_iters, bool) or num_iters < 1:
        raise ValueError(f"{fn}: num_iters must be an int >= 1, got {num_iters!r}")
    local, num_prototypes = scores.shape
    if local == 0 or num_prototypes == 0:
        raise ValueError(f"{fn}: scores must be non-empty, got shape {scores.shape}")
    count = _global_count(local, axis_name)
    scores = lax.stop_gradient(scores).astype(jnp.float32)
    peak = jnp.max(scores)
    if axis_name is not None:
        peak = lax.pmax(peak, axis_name)
    q = jnp.exp((scores - peak) / epsilon)  # [B, K]: samples on rows, unlike the official Q
    q = q / _psum_if(jnp.sum(q), axis_name)
    for _ in range(num_iters):
        q = q / (_psum_if(jnp.sum(q, axis=0, keepdims=True), axis_name) * num_prototypes)
        q = q / (jnp.sum(q, axis=1, keepdims=True) * count)
    return q * count


def swav_loss(
    scores: jax.Array,
    *,
    num_assign: int = 2,
    queue_scores: jax.Array | None = None,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    num_iters: int = 3,
    axis_name: Any = None,
) -> jax.Array:
    r"""SwAV's swapped prediction: every crop predicts the codes of the other assigned crops.

    For each of the first ``num_assign`` crops a (the high-resolution ones), codes
    :math:`q_a` = :func:`sinkhorn_knopp` of its scores (constants); every other crop v is
    scored by the cross-entropy of :math:`\operatorname{softmax}(s_v / \tau)` against them:

    .. math::

        \mathcal{L} = \frac{1}{A} \sum_{a=1}^{A} \frac{1}{V-1} \sum_{v \ne a}
            \frac{1}{N} \sum_{n} \sum_{k} -q_a[n, k] \log \operatorname{softmax}
            (s_v[n] / \tau)_k

    (Caron et al. 2020, arXiv:2006.09882, Eq. 1-2 and the official ``main_swav.py``). With a
    queue, the codes are computed for the queued scores and the batch together, and the
    batch's rows kept: more samples make the equal partition meaningful for small batches.

    Args:
      scores: ``[V, N, K]`` scores of every crop against the normalised prototypes (cosines).
      num_assign: the first ``num_assign`` crops get codes (1 <= A <= V, V >= 2).
      queue_scores: optional ``[A, Q, K]`` scores of queued features from earlier batches, one
        queue per assigned crop, against the current prototypes (local rows with
        ``axis_name``).
      temperature: :math:`\tau > 0` of the predictions.
      epsilon: Sinkhorn-Knopp regularisation :math:`\epsilon > 0`.
      num_iters: Sinkhorn-Knopp rounds.
      axis_name: mesh axis inside :func:`jax.shard_map`; codes then use the global batch (and
        global queue) and the mean is global.

    Returns:
      Scalar float32 loss.

    Example:
      >>> import jax
      >>> from sslax.losses import swav_loss
      >>> scores = jax.random.normal(jax.random.key(0), (4, 32, 8))  # 2 global + 2 local crops
      >>> bool(swav_loss(scores) > 0)
      True
    """
    fn = "swav_loss"
    _check_floating(fn, "scores", scores, ndim=3)
    num_views, batch, _ = scores.shape
    if not isinstance(num_assign, int) or not 1 <= num_assign <= num_views or num_views < 2:
        raise ValueError(
            f"{fn}: need an int 1 <= num_assign <= V and V >= 2, got num_assign={num_assign!r} "
            f"and scores {scores.shape}"
        )
    _check_scalar(fn, "temperature", temperature, _POSITIVE)
    if batch == 0:
        raise ValueError(f"{fn}: scores has no rows, shape {scores.shape}")
    if queue_scores is not None:
        _check_floating(fn, "queue_scores", queue_scores, ndim=3)
        if queue_scores.shape[0] != num_assign or queue_scores.shape[2] != scores.shape[2]:
            raise ValueError(
                f"{fn}: queue_scores must be [num_assign={num_assign}, Q, "
                f"K={scores.shape[2]}], got {queue_scores.shape}"
            )
    log_probs = jax.nn.log_softmax(scores.astype(jnp.float32) / temperature, axis=-1)
    total = jnp.zeros((), jnp.float32)
    for a in range(num_assign):
        assigned = scores[a]
        if queue_scores is not None:
            assigned = jnp.concatenate([queue_scores[a].astype(assigned.dtype), assigned])
        codes = sinkhorn_knopp(assigned, epsilon=epsilon, num_iters=num_iters, axis_name=axis_name)[
            -batch:
        ]
        # Sum over every view, then take out the assigned view itself.
        cross = jnp.sum(codes * (jnp.sum(log_probs, axis=0) - log_probs[a]))
        total = total - cross / (num_views - 1)
    count = _global_count(batch, axis_name)
    return _psum_if(total, axis_name) / (num_assign * count)


# --------------------------------------------------------------------------------------------
# Supervised contrastive, decoupled contrastive
# --------------------------------------------------------------------------------------------


def supcon_loss(
    z: jax.Array, labels: jax.Array, *, temperature: float = 0.1, axis_name: Any = None
) -> jax.Array:
    r"""Supervised contrastive loss, the "out" form (Khosla et al. 2020, arXiv:2004.11362).

    The N x V views are L2-normalised and each is an anchor :math:`i`; its positives
    :math:`P(i)` are all other views with the same label (the other views of its own image
    included), and its denominator runs over every other view :math:`A(i)`:

    .. math::

        \mathcal{L} = \frac{1}{NV} \sum_{i} \frac{-1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(z_i \cdot z_p / \tau)}{\sum_{a \in A(i)} \exp(z_i \cdot z_a / \tau)}

    (Eq. 2; the official ``SupConLoss`` with ``contrast_mode='all'`` and
    ``base_temperature = temperature``). With one view of each of N distinct labels and V = 2
    this is SimCLR's NT-Xent.

    Args:
      z: ``[N, V, D]`` embeddings of V >= 2 views of N examples (local rows with
        ``axis_name``).
      labels: ``[N]`` integer class labels.
      temperature: :math:`\tau > 0`.
      axis_name: mesh axis inside :func:`jax.shard_map`; positives and negatives then come
        from the global batch (an all-gather of embeddings and labels).

    Returns:
      Scalar float32 loss.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from sslax.losses import supcon_loss, info_nce
      >>> z = jax.random.normal(jax.random.key(0), (8, 2, 16))
      >>> loss = supcon_loss(z, jnp.arange(8), temperature=0.5)  # all labels distinct
      >>> bool(jnp.isclose(loss, info_nce(z[:, 0], z[:, 1], temperature=0.5)))
      True
    """
    fn = "supcon_loss"
    _check_floating(fn, "z", z, ndim=3)
    batch, num_views, _ = z.shape
    if jnp.shape(labels) != (batch,) or not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(
            f"{fn}: labels must be integers of shape ({batch},) for z {z.shape}, got "
            f"{jnp.result_type(labels)} {jnp.shape(labels)}"
        )
    if batch == 0 or num_views < 2:
        raise ValueError(f"{fn}: need N >= 1 examples and V >= 2 views, got z {z.shape}")
    _check_scalar(fn, "temperature", temperature, _POSITIVE)
    anchors = _l2_normalize(z).reshape(batch * num_views, -1)
    anchor_labels = jnp.repeat(labels, num_views)
    candidates, candidate_labels, offset = anchors, anchor_labels, 0
    if axis_name is not None:
        candidates = lax.all_gather(anchors, axis_name, tiled=True)
        candidate_labels = lax.all_gather(anchor_labels, axis_name, tiled=True)
        offset = lax.axis_index(axis_name) * anchors.shape[0]
    logits = _dot(anchors, candidates.T) / temperature
    rows = offset + jnp.arange(anchors.shape[0])
    is_self = jnp.arange(candidates.shape[0])[None, :] == rows[:, None]
    positive = (anchor_labels[:, None] == candidate_labels[None, :]) & ~is_self
    log_denominator = jax.nn.logsumexp(jnp.where(is_self, -jnp.inf, logits), axis=1)
    mean_positive = jnp.sum(jnp.where(positive, logits, 0.0), axis=1) / jnp.sum(positive, axis=1)
    count = _global_count(anchors.shape[0], axis_name)
    return _psum_if(jnp.sum(log_denominator - mean_positive), axis_name) / count


def dcl_loss(
    z1: jax.Array,
    z2: jax.Array,
    *,
    temperature: float = 0.1,
    weight_sigma: float | None = None,
    axis_name: Any = None,
) -> jax.Array:
    r"""Decoupled contrastive loss, DCL and DCLW (Yeh et al. 2022, arXiv:2110.06848).

    InfoNCE with the positive removed from the denominator. For L2-normalised views and
    anchor :math:`z_i^{(1)}`, negatives are every other image's two views:

    .. math::

        \ell_i^{(1)} = -w_i \, z_i^{(1)} \cdot z_i^{(2)} / \tau
            + \log \sum_{j \ne i} \left(e^{z_i^{(1)} \cdot z_j^{(1)} / \tau}
            + e^{z_i^{(1)} \cdot z_j^{(2)} / \tau}\right)

    (Eq. 6), and the loss is the mean of :math:`\ell^{(1)}` and :math:`\ell^{(2)}` (the views
    swapped) over the batch: the official code adds the two directions, which is twice this.
    :math:`w_i = 1` for DCL; DCLW (``weight_sigma`` = :math:`\sigma`) weights positives by
    :math:`w_i = 2 - N \operatorname{softmax}_i(z_i^{(1)} \cdot z_i^{(2)} / \sigma)` over the
    (global) batch, treated as the official code does (with gradient).

    Args:
      z1: ``[N, D]`` first views (local rows with ``axis_name``).
      z2: ``[N, D]`` second views.
      temperature: :math:`\tau > 0`.
      weight_sigma: None for DCL, or :math:`\sigma > 0` for DCLW (the paper uses 0.5).
      axis_name: mesh axis inside :func:`jax.shard_map`; negatives and DCLW's softmax then
        span the global batch.

    Returns:
      Scalar float32 loss.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from sslax.losses import dcl_loss
      >>> z = jax.random.normal(jax.random.key(0), (16, 8))
      >>> bool(dcl_loss(z, z) < dcl_loss(z, z[::-1]))
      True
    """
    fn = "dcl_loss"
    _check_pair(fn, ("z1", "z2"), z1, z2)
    _check_scalar(fn, "temperature", temperature, _POSITIVE)
    if weight_sigma is not None:
        _check_scalar(fn, "weight_sigma", weight_sigma, _POSITIVE)
    local = z1.shape[0]
    count = _global_count(local, axis_name)
    if count < 2:
        raise ValueError(f"{fn}: need at least 2 rows in the global batch (negatives), got {count}")
    x, y = _l2_normalize(z1), _l2_normalize(z2)
    gx, gy, offset = x, y, 0
    if axis_name is not None:
        gx = lax.all_gather(x, axis_name, tiled=True)
        gy = lax.all_gather(y, axis_name, tiled=True)
        offset = lax.axis_index(axis_name) * local
    same_image = jnp.arange(count)[None, :] == (offset + jnp.arange(local))[:, None]
    positive = jnp.sum(x * y, axis=1) / temperature
    weight = 1.0
    if weight_sigma is not None:
        cosines = jnp.sum(x * y, axis=1) / weight_sigma
        peak = lax.stop_gradient(jnp.max(cosines))
        if axis_name is not None:
            peak = lax.pmax(peak, axis_name)
        normaliser = _psum_if(jnp.sum(jnp.exp(cosines - peak)), axis_name)
        weight = 2.0 - count * jnp.exp(cosines - peak) / normaliser

    def negatives(anchor, same_view, other_view):
        logits = jnp.concatenate([_dot(anchor, same_view.T), _dot(anchor, other_view.T)], 1)
        mask = jnp.concatenate([same_image, same_image], axis=1)
        return jax.nn.logsumexp(jnp.where(mask, -jnp.inf, logits / temperature), axis=1)

    per_row = -2.0 * weight * positive + negatives(x, gx, gy) + negatives(y, gy, gx)
    return _psum_if(jnp.sum(per_row), axis_name) / (2 * count)


# --------------------------------------------------------------------------------------------
# Masked image modelling: iBOT's patch loss, MAE
# --------------------------------------------------------------------------------------------


def ibot_patch_loss(
    student_patch_logits: jax.Array,
    teacher_patch_logits: jax.Array,
    mask: jax.Array,
    center: jax.Array,
    *,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
    axis_name: Any = None,
) -> jax.Array:
    r"""iBOT's masked-patch self-distillation (Zhou et al. 2022, arXiv:2111.07832).

    The student sees view v with some patches masked; the teacher sees it whole. At every
    masked patch, the student's prediction is scored against the teacher's centred, sharpened
    softmax for the same patch (constants), as DINO does for the class token:

    .. math::

        \mathcal{L} = \frac{1}{VN} \sum_{v, n} \frac{1}{\max(1, |M_{vn}|)}
            \sum_{l \in M_{vn}} \sum_k -P_t[v, n, l, k] \log P_s[v, n, l, k]

    with :math:`P_t = \operatorname{softmax}((g_t - c) / \tau_t)`,
    :math:`\log P_s = \operatorname{log\,softmax}(g_s / \tau_s)` and :math:`M_{vn}` the masked
    patches (Eq. 2; the official iBOT loss and DINOv2's ``iBOTPatchLoss``: a mean over the
    masked patches of each image, then over images, which counts an image without masked
    patches as 0). The centre of patch logits is updated with :func:`dino_center_update` on
    ``teacher_patch_logits.reshape(V, N * L, K)``.

    Args:
      student_patch_logits: ``[V, N, L, K]`` head outputs of the student's patch tokens.
      teacher_patch_logits: ``[V, N, L, K]`` the teacher's, for the unmasked views.
      mask: ``[V, N, L]`` booleans, True where the student's patch was masked.
      center: ``[K]`` running centre of the teacher's patch logits.
      student_temp: :math:`\tau_s > 0`.
      teacher_temp: :math:`\tau_t > 0`.
      axis_name: mesh axis inside :func:`jax.shard_map`; the mean is then global.

    Returns:
      Scalar float32 loss.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.losses import ibot_patch_loss
      >>> logits = jnp.zeros((2, 3, 4, 5))  # uniform targets: log K at every masked patch
      >>> mask = jnp.ones((2, 3, 4), bool)
      >>> bool(jnp.isclose(ibot_patch_loss(logits, logits, mask, jnp.zeros(5)), jnp.log(5.0)))
      True
    """
    fn = "ibot_patch_loss"
    _check_floating(fn, "student_patch_logits", student_patch_logits, ndim=4)
    _check_floating(fn, "teacher_patch_logits", teacher_patch_logits, ndim=4)
    _check_floating(fn, "center", center, ndim=1)
    shape = student_patch_logits.shape
    if (
        teacher_patch_logits.shape != shape
        or jnp.shape(mask) != shape[:3]
        or center.shape != shape[3:]
    ):
        raise ValueError(
            f"{fn}: expected student and teacher logits [V, N, L, K], mask [V, N, L] and "
            f"center [K], got {shape}, {teacher_patch_logits.shape}, {jnp.shape(mask)} and "
            f"{center.shape}"
        )
    if jnp.result_type(mask) != jnp.bool_:
        raise ValueError(f"{fn}: mask must be boolean, got {jnp.result_type(mask)}")
    _check_scalar(fn, "student_temp", student_temp, _POSITIVE)
    _check_scalar(fn, "teacher_temp", teacher_temp, _POSITIVE)
    num_views, batch = shape[:2]
    centred = teacher_patch_logits.astype(jnp.float32) - center.astype(jnp.float32)
    targets = lax.stop_gradient(jax.nn.softmax(centred / teacher_temp, axis=-1))
    log_probs = jax.nn.log_softmax(student_patch_logits.astype(jnp.float32) / student_temp, axis=-1)
    per_patch = -jnp.sum(targets * log_probs, axis=-1)  # [V, N, L]
    masked = jnp.sum(jnp.where(mask, per_patch, 0.0), axis=-1)
    per_image = masked / jnp.maximum(jnp.sum(mask, axis=-1), 1)
    count = num_views * _global_count(batch, axis_name)
    return _psum_if(jnp.sum(per_image), axis_name) / count


def mae_loss(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    *,
    norm_pix: bool = True,
    axis_name: Any = None,
) -> jax.Array:
    r"""MAE's reconstruction loss: mean squared error on the masked patches only.

    With ``norm_pix`` each target patch is standardised by its own pixels' mean and unbiased
    variance, :math:`\hat t = (t - \mu) / \sqrt{\sigma^2 + 10^{-6}}` (He et al. 2022,
    arXiv:2111.06377, Sec. 3 "Reconstruction target", and the official ``forward_loss``):

    .. math::

        \mathcal{L} = \frac{\sum_{n, l} m_{nl} \frac{1}{P} \|p_{nl} - \hat t_{nl}\|^2}
            {\sum_{n, l} m_{nl}}

    Args:
      pred: ``[N, L, P]`` decoder outputs, P = patch_size**2 * channels values per patch.
      target: ``[N, L, P]`` the image's patches (patchified pixels).
      mask: ``[N, L]`` booleans, True where a patch was masked (hidden from the encoder).
      norm_pix: standardise each target patch (MAE's default for its best results).
      axis_name: mesh axis inside :func:`jax.shard_map`; sums then span the global batch.

    Returns:
      Scalar float32 loss.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from sslax.losses import mae_loss
      >>> target = jax.random.normal(jax.random.key(0), (2, 4, 12))
      >>> mask = jnp.array([[True, False, True, False]] * 2)
      >>> pred = jnp.where(mask[..., None], 0.0, 99.0 + target)  # wrong only where visible
      >>> bool(jnp.isclose(mae_loss(pred, target, mask, norm_pix=False),
      ...                  jnp.mean(jnp.square(target[mask]))))
      True
    """
    fn = "mae_loss"
    _check_floating(fn, "pred", pred, ndim=3)
    _check_floating(fn, "target", target, ndim=3)
    if jnp.shape(target) != jnp.shape(pred) or jnp.shape(mask) != jnp.shape(pred)[:2]:
        raise ValueError(
            f"{fn}: expected pred and target [N, L, P] and mask [N, L], got {jnp.shape(pred)}, "
            f"{jnp.shape(target)} and {jnp.shape(mask)}"
        )
    if jnp.result_type(mask) != jnp.bool_:
        raise ValueError(f"{fn}: mask must be boolean, got {jnp.result_type(mask)}")
    patch_values = pred.shape[2]
    if norm_pix and patch_values < 2:
        raise ValueError(f"{fn}: norm_pix needs >= 2 values per patch, got {pred.shape}")
    target = target.astype(jnp.float32)
    if norm_pix:
        mean = jnp.mean(target, axis=-1, keepdims=True)
        variance = jnp.sum(jnp.square(target - mean), axis=-1, keepdims=True) / (patch_values - 1)
        target = (target - mean) * lax.rsqrt(variance + 1e-6)
    per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)
    masked_sum = _psum_if(jnp.sum(jnp.where(mask, per_patch, 0.0)), axis_name)
    masked_count = _psum_if(jnp.sum(mask), axis_name)
    return masked_sum / jnp.maximum(masked_count, 1)
