"""Feature extraction and the weighted kNN classifier."""

import jax.numpy as jnp
import numpy as np
import pytest

from sslax import eval as sslax_eval


def _clusters(n, num_classes, dim, noise, seed):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(num_classes, dim))
    labels = rng.integers(0, num_classes, n)
    return centres[labels] + noise * rng.normal(size=(n, dim)), labels


def test_knn_finds_planted_clusters_and_is_at_chance_on_noise():
    train, train_labels = _clusters(2000, 10, 32, 0.3, seed=1)
    test, test_labels = _clusters(500, 10, 32, 0.3, seed=2)
    assert sslax_eval.knn_top1(train, train_labels, test, test_labels) > 0.98
    rng = np.random.default_rng(3)
    noise_acc = sslax_eval.knn_top1(
        rng.normal(size=(2000, 32)), train_labels, rng.normal(size=(500, 32)), test_labels
    )
    assert abs(noise_acc - 0.1) < 0.05, noise_acc


def test_knn_matches_a_direct_numpy_vote():
    rng = np.random.default_rng(4)
    train, labels = rng.normal(size=(300, 8)), rng.integers(0, 4, 300)
    test, test_labels = rng.normal(size=(77, 8)), rng.integers(0, 4, 77)
    k, temperature = 7, 0.5
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit(test) @ unit(train).T
    top = np.argsort(-sims, axis=1)[:, :k]
    votes = np.zeros((77, 4))
    for i in range(77):
        for j in top[i]:
            votes[i, labels[j]] += np.exp(sims[i, j] / temperature)
    expected = np.mean(votes.argmax(1) == test_labels)
    got = sslax_eval.knn_top1(
        train, labels, test, test_labels, k=k, temperature=temperature, chunk=16
    )
    assert got == pytest.approx(expected)


def test_extract_features_pads_the_last_batch_and_keeps_order():
    images = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    calls = []

    def forward(x):
        calls.append(x.shape)
        flat = jnp.asarray(x, jnp.float32).reshape(len(x), -1)
        return flat.sum(axis=1, keepdims=True), flat[:, :2]

    h, z = sslax_eval.extract_features(forward, images, batch_size=4)
    assert calls == [(4, 2, 2, 3)] * 3
    np.testing.assert_allclose(h[:, 0], images.reshape(10, -1).astype(np.float32).sum(1))
    assert z.shape == (10, 2)


def test_knn_needs_k_training_points():
    with pytest.raises(ValueError, match="at least k=20"):
        sslax_eval.knn_top1(np.ones((5, 2)), np.zeros(5, int), np.ones((1, 2)), np.zeros(1, int))
