r"""Collapse and geometry diagnostics for embeddings.

Cheap, jittable float32 statistics to log next to the loss: alignment and uniformity
(Wang & Isola 2020) say whether positives are close and the embeddings spread over the
hypersphere; :func:`embedding_std` and :func:`effective_rank` detect complete and
dimensional collapse. All take ``[N, D]`` arrays of any floating dtype and return float32
scalars.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["alignment", "effective_rank", "embedding_std", "entropy", "uniformity"]

# Full float32 matmuls on TPU/GPU, whose default precision rounds the operands.
_PRECISION = lax.Precision.HIGHEST
_NORM_EPS = 1e-12


def _l2_normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    squared_norm = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * lax.rsqrt(jnp.maximum(squared_norm, _NORM_EPS**2))


def _check_embeddings(fn: str, name: str, x: Any, min_rows: int = 1) -> None:
    shape = jnp.shape(x)
    if len(shape) != 2:
        raise ValueError(f"{fn}: {name} must be 2-D [N, D], got shape {shape}")
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{fn}: {name} must have a floating dtype, got {dtype}")
    if shape[0] < min_rows:
        raise ValueError(f"{fn}: {name} needs at least {min_rows} rows, got shape {shape}")


def _check_positive(fn: str, name: str, value: Any) -> None:
    if jnp.ndim(value) != 0:
        raise ValueError(f"{fn}: {name} must be a scalar, got shape {jnp.shape(value)}")
    try:
        concrete = float(value)
    except jax.errors.ConcretizationTypeError:
        return  # traced under jit: cannot be checked at trace time
    if not concrete > 0:  # also rejects NaN
        raise ValueError(f"{fn}: {name} must be > 0, got {value}")


def alignment(z1: jax.Array, z2: jax.Array, alpha: float = 2) -> jax.Array:
    r"""Mean distance between positive pairs on the unit sphere (Wang & Isola 2020).

    .. math::

        \mathcal{L}_{\text{align}} = \frac{1}{N} \sum_{i=1}^{N}
            \left\| \bar z_{1,i} - \bar z_{2,i} \right\|_2^{\alpha},
        \qquad \bar z = z / \|z\|_2

    (arXiv:2005.10242, Eq. 4). 0 when every pair coincides; at most :math:`2^\alpha`.

    Args:
      z1: ``[N, D]`` embeddings of the first views.
      z2: ``[N, D]`` embeddings of the second views; row ``i`` pairs with ``z1[i]``.
      alpha: exponent :math:`\alpha > 0` (concrete).

    Returns:
      Scalar float32; lower means better aligned.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.diagnostics import alignment
      >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> y = jnp.array([[0.0, 1.0], [0.0, 1.0]])
      >>> round(float(alignment(x, y)), 6)  # mean of |.|^2 = 2 and 0
      1.0
    """
    fn = "alignment"
    _check_embeddings(fn, "z1", z1)
    _check_embeddings(fn, "z2", z2)
    if jnp.shape(z1) != jnp.shape(z2):
        raise ValueError(
            f"{fn}: z1 and z2 must have the same shape, got z1 {jnp.shape(z1)} "
            f"and z2 {jnp.shape(z2)}"
        )
    _check_positive(fn, "alpha", alpha)
    squared = jnp.sum(jnp.square(_l2_normalize(z1) - _l2_normalize(z2)), axis=-1)
    # Powering the squared distance skips a sqrt, so alpha = 2 has a finite gradient even
    # where a pair coincides.
    return jnp.mean(squared ** (alpha / 2))


def uniformity(z: jax.Array, t: float = 2) -> jax.Array:
    r"""Log of the mean Gaussian potential between distinct pairs (Wang & Isola 2020).

    .. math::

        \mathcal{L}_{\text{uniform}} = \log \frac{2}{N(N-1)} \sum_{i<j}
            e^{-t \left\| \bar z_i - \bar z_j \right\|_2^2},
        \qquad \bar z = z / \|z\|_2

    (arXiv:2005.10242, Eq. 5). 0 when all embeddings coincide; more negative means more
    uniformly spread over the hypersphere. Computed as a logsumexp, so it stays finite
    for any spread.

    Args:
      z: ``[N, D]`` embeddings, ``N >= 2``.
      t: potential scale :math:`t > 0` (concrete).

    Returns:
      Scalar float32 in :math:`[-4t, 0]`.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.diagnostics import uniformity
      >>> round(float(uniformity(jnp.array([[1.0, 0.0], [-1.0, 0.0]]))), 6)  # -t * 2^2
      -8.0
    """
    fn = "uniformity"
    _check_embeddings(fn, "z", z, min_rows=2)
    _check_positive(fn, "t", t)
    z = _l2_normalize(z)
    count = z.shape[0]
    cosine = jnp.dot(z, z.T, precision=_PRECISION)
    squared_distance = jnp.maximum(2.0 - 2.0 * cosine, 0.0)
    upper = jnp.triu(jnp.ones((count, count), dtype=bool), k=1)
    log_total = jax.nn.logsumexp(jnp.where(upper, -t * squared_distance, -jnp.inf))
    return log_total - jnp.log(count * (count - 1) / 2)


def entropy(probs: jax.Array) -> jax.Array:
    """Entropy in nats of each distribution on the last axis (0 log 0 taken as 0).

    >>> float(entropy(jnp.full(4, 0.25)))  # uniform over 4: ln 4
    1.3862943649291992
    """
    return -jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-30)), axis=-1)


def embedding_std(z: jax.Array) -> jax.Array:
    r"""Mean per-dimension standard deviation of the L2-normalised embeddings.

    .. math::

        \frac{1}{D} \sum_{d=1}^{D} \sqrt{\frac{1}{N} \sum_{i=1}^{N}
            \left(\bar z_{id} - \frac{1}{N} \sum_{i'} \bar z_{i'd}\right)^2},
        \qquad \bar z = z / \|z\|_2

    The collapse monitor of SimSiam (Chen & He 2021, arXiv:2011.10566, Sec. 4.1), with the
    population (biased) standard deviation: 0 when every row points the same way, and about
    :math:`1/\sqrt{D}` for independent random directions.

    Args:
      z: ``[N, D]`` embeddings.

    Returns:
      Scalar float32 in :math:`[0, 1/\sqrt{D}]` up to sampling noise.

    Example:
      >>> import jax
      >>> from sslax.diagnostics import embedding_std
      >>> z = jax.random.normal(jax.random.key(0), (4096, 16))
      >>> round(float(embedding_std(z)) * 16**0.5, 1)  # ~ 1 / sqrt(D)
      1.0
      >>> float(embedding_std(jax.numpy.ones((8, 16))))
      0.0
    """
    _check_embeddings("embedding_std", "z", z)
    return jnp.mean(jnp.std(_l2_normalize(z), axis=0))


def effective_rank(z: jax.Array) -> jax.Array:
    r"""Effective rank of the embedding matrix (Roy & Vetterli 2007).

    With singular values :math:`\sigma_k` of ``z`` (as given: not centred, not normalised)
    and :math:`p_k = \sigma_k / \sum_j \sigma_j`,

    .. math::

        \operatorname{erank}(z) = \exp\Big(-\sum_k p_k \log p_k\Big),

    a real number between 1 (rank one: complete collapse) and :math:`\min(N, D)` (all
    singular values equal). A zero matrix counts as completely collapsed and gives 1. This
    is the quantity RankMe (Garrido et al. 2023) tracks as a label-free quality signal.

    Args:
      z: ``[N, D]`` embeddings.

    Returns:
      Scalar float32.

    Example:
      >>> import jax.numpy as jnp
      >>> from sslax.diagnostics import effective_rank
      >>> round(float(effective_rank(jnp.diag(jnp.array([1.0, 1.0, 1.0, 0.0])))), 4)
      3.0
    """
    _check_embeddings("effective_rank", "z", z)
    singular_values = jnp.linalg.svd(z.astype(jnp.float32), compute_uv=False)
    total = jnp.sum(singular_values)
    probabilities = singular_values / jnp.where(total > 0, total, 1.0)
    return jnp.exp(jnp.sum(jax.scipy.special.entr(probabilities)))
