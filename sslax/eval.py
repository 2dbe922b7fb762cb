"""Evaluation of frozen representations: feature extraction and weighted kNN.

The kNN classifier is DINO's (Caron et al. 2021, after Wu et al. 2018): cosine similarity to
every training feature, the k most similar vote for their label with weight
exp(similarity / temperature), and the label with the largest total wins.

>>> import numpy as np
>>> train = np.eye(3, dtype=np.float32); labels = np.array([0, 1, 2])
>>> float(knn_top1(train, labels, train + 0.1, labels, k=1, num_classes=3))
1.0
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def extract_features(
    forward: Callable, images: np.ndarray, *, batch_size: int = 1024, sharding=None
) -> tuple[np.ndarray, np.ndarray]:
    """Runs ``forward(images_uint8) -> (h, z)`` over a dataset in fixed-size batches.

    The last batch is padded to the batch size so that ``forward`` compiles once.

    Returns:
      h [N, C] and z [N, D] as float32 numpy arrays.
    """
    n = len(images)
    hs, zs = [], []
    for start in range(0, n, batch_size):
        chunk = images[start : start + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        x = jax.device_put(chunk, sharding) if sharding is not None else chunk
        h, z = forward(x)
        hs.append(np.asarray(h)[: batch_size - pad])
        zs.append(np.asarray(z)[: batch_size - pad])
    return np.concatenate(hs), np.concatenate(zs)


@functools.partial(jax.jit, static_argnames=("k", "num_classes", "chunk"))
def _knn_predict(train, train_labels, test, *, k, temperature, num_classes, chunk):
    train = train / jnp.maximum(jnp.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    test = test / jnp.maximum(jnp.linalg.norm(test, axis=1, keepdims=True), 1e-12)

    def predict(queries):
        sims, idx = jax.lax.top_k(queries @ train.T, k)
        votes = (
            jax.nn.one_hot(train_labels[idx], num_classes) * jnp.exp(sims / temperature)[..., None]
        )
        return jnp.argmax(votes.sum(axis=1), axis=-1)

    # Queries in chunks keep the similarity matrix at chunk x N_train.
    return jax.lax.map(predict, test.reshape(-1, chunk, test.shape[-1])).reshape(-1)


def knn_top1(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 256,
) -> float:
    """Weighted kNN top-1 accuracy of ``test_features`` against a ``train_features`` bank.

    Args:
      train_features: [N, C] memory bank.  train_labels: [N] int labels.
      test_features: [M, C] queries.  test_labels: [M] int labels.
      k: neighbours that vote.  temperature: vote weight exp(cos / temperature).
      num_classes: defaults to max label + 1.

    Returns:
      The fraction of test examples whose predicted label is right.
    """
    if len(train_features) < k:
        raise ValueError(f"kNN needs at least k={k} training features, got {len(train_features)}")
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    m = len(test_features)
    chunk = min(chunk, m)
    pad = -m % chunk
    test = np.concatenate(
        [
            np.asarray(test_features, np.float32),
            np.ones((pad, np.shape(test_features)[1]), np.float32),
        ]
    )
    pred = _knn_predict(
        jnp.asarray(train_features, jnp.float32),
        jnp.asarray(train_labels),
        jnp.asarray(test),
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk=chunk,
    )
    return float(np.mean(np.asarray(pred)[:m] == test_labels))
