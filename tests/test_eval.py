"""Feature extraction, the weighted kNN classifier, the linear probe and `python -m sslax.eval`."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from cli_runs import TINY, run_cli

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

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

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


def _planted(n, num_classes, dim, noise, rotation_seed, seed):
    """One-hot labels in ``dim`` dimensions, randomly rotated, plus isotropic noise."""
    rotation = np.linalg.qr(np.random.default_rng(rotation_seed).normal(size=(dim, dim)))[0]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    one_hot = np.eye(dim)[labels]  # the first num_classes axes
    return (one_hot + noise * rng.normal(size=(n, dim))) @ rotation, labels


def test_probes_recover_a_planted_linear_structure_and_are_at_chance_on_noise():
    train, train_labels = _planted(3000, 10, 64, 0.1, rotation_seed=0, seed=1)
    test, test_labels = _planted(1000, 10, 64, 0.1, rotation_seed=0, seed=2)
    probe = sslax_eval.linear_probe(train, train_labels, test, test_labels)
    assert probe["top1"] > 0.98, probe
    assert sslax_eval.knn_top1(train, train_labels, test, test_labels) > 0.98
    rng = np.random.default_rng(3)
    noise_train, noise_test = rng.normal(size=(3000, 64)), rng.normal(size=(2000, 64))
    test_labels = np.random.default_rng(4).integers(0, 10, 2000)
    chance = sslax_eval.linear_probe(noise_train, train_labels, noise_test, test_labels)
    # 2,000 test labels: the accuracy of guessing has a std of 0.0067 around 0.1.
    assert abs(chance["top1"] - 0.1) < 0.03, chance
    assert set(chance["holdout_top1"]) == set(sslax_eval.WEIGHT_DECAYS)


def test_linear_probe_needs_two_training_examples():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="needs 2 training examples"):
        sslax_eval.linear_probe(x[:1], np.array([0]), x, np.array([0, 1, 2]))


def test_linear_probe_refuses_mismatched_inputs():
    x, y = np.zeros((10, 3)), np.zeros(10, int)
    with pytest.raises(ValueError, match="same number of rows"):
        sslax_eval.linear_probe(x, y[:5], x, y)
    with pytest.raises(ValueError, match="holdout_fraction"):
        sslax_eval.linear_probe(x, y, x, y, holdout_fraction=1.0)


def test_factor_scores_find_the_factor_a_feature_holds_and_not_the_one_it_drops():
    # Features that are a noisy code of factor "a" alone: "a" is read back, "b" is at chance.
    rng = np.random.default_rng(0)
    factors = {
        split: {"a": rng.integers(0, 4, n), "b": rng.integers(0, 5, n)}
        for split, n in (("train", 2000), ("test", 1000))
    }
    codes = np.eye(8)[:4]

    def features(split):
        return codes[factors[split]["a"]] + 0.1 * rng.normal(size=(len(factors[split]["a"]), 8))

    got = sslax_eval.factor_scores({"coded": (features("train"), features("test"))}, factors)
    assert got["coded"]["a"] > 0.98, got
    # 1,000 test labels: guessing gives 0.2 with a std of 0.013.
    assert abs(got["coded"]["b"] - 0.2) < 0.05, got


def _eval_cli(args, data_dir, **extra_env):
    env = {"SSLAX_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu", **extra_env}
    return subprocess.run(
        [sys.executable, "-m", "sslax.eval", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
        check=False,
    )


@pytest.mark.slow  # CI's time budget (50 s); the command's errors stay in the default suite
def test_eval_command_on_a_short_run(tmp_path, data_dir):
    workdir = tmp_path / "run"
    # A mesh of fixed size, then evaluation on a machine with another device count.
    trained = run_cli([f"--workdir={workdir}", *TINY, "--config.mesh=(('data', 1),)"], data_dir)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = _eval_cli(
        [f"--workdir={workdir}", "--max_train_examples=300", "--max_test_examples=100"],
        data_dir,
        JAX_NUM_CPU_DEVICES="2",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "evaluating on mesh {'data': 2}: the run's does not fit here" in run.stdout
    assert "h (backbone)" in run.stdout and "z (projection head)" in run.stdout
    results = json.loads((workdir / "eval.json").read_text())
    assert results["checkpoint_step"] == 4 and results["dataset"] == "shapes"
    assert (results["train_examples"], results["test_examples"]) == (300, 100)
    for kind in ("h", "z"):
        for probe in ("knn", "linear"):
            assert 0.0 <= results[f"{probe}_top1_{kind}"] <= 1.0
            assert f"{results[f'{probe}_top1_{kind}']:.4f}" in run.stdout
    # Which nuisances h keeps: raw pixels know where the object is far above chance (0.25).
    run = _eval_cli(
        [
            f"--workdir={workdir}",
            "--max_train_examples=1000",
            "--max_test_examples=200",
            "--factors",
        ],
        data_dir,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    factors = json.loads((workdir / "eval.json").read_text())["factors"]
    assert set(factors) == {"raw pixels", "random init", "trained"}
    for row in factors.values():
        assert set(row) == {"shape", "background", "position", "object_hue", "size"}, row
        assert all(0 <= v <= 1 for v in row.values()), row
    assert factors["raw pixels"]["position"] > 0.5, factors
    assert "kNN top-1 of each factor" in run.stdout and "random init" in run.stdout
    run = _eval_cli([f"--workdir={workdir}", f"--dataset=folder:{tmp_path}", "--factors"], data_dir)
    assert run.returncode == 2, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--factors needs the built-in dataset" in lines[0], lines
    # Fewer training images than the run's kNN k: one line, before any feature is extracted.
    run = _eval_cli([f"--workdir={workdir}", "--max_train_examples=5"], data_dir)
    assert run.returncode == 2, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "kNN needs the run's knn_k = 20 training images" in lines[0], lines


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir=/no/such/run"], "is not a training workdir"),
        ([], "--workdir"),
        (["--workdir=x", "--max_test_examples=0"], "max_test_examples"),
    ],
)
def test_eval_command_errors_are_one_line_with_exit_2(args, message, data_dir):
    run = _eval_cli(args, data_dir)
    assert run.returncode in (1, 2), run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], run.stderr
