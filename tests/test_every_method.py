"""Every registered method trains from the main entry point and records itself in results.json."""

import json

import pytest

from sslax import configs, methods, train
from sslax.data import shapes


@pytest.mark.parametrize("name", methods.METHODS)
def test_method_trains_from_the_main_entry_point(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(shapes, "SPLIT_SIZES", {"train": 400, "test": 100})
    config = configs.shapes_config(name)
    config.update(
        dict(
            total_steps=3,
            batch_size=16,
            image_size=16,
            width=0.125,
            proj_hidden_dim=32,
            proj_dim=16,
            knn_train_examples=100,
            knn_test_examples=40,
            log_every=1,
            checkpoint_every=3,
            warmup_steps=1,
        )
    )
    if name == "dino":
        config.dino.local_size = 8  # local crops must be smaller than the 16 px global ones
    train.validate_config(config, num_devices=8)
    results = train.train_and_evaluate(config.lock(), tmp_path / "run")
    assert results["method"] == name and results["steps"] == 3
    assert json.loads((tmp_path / "run" / "results.json").read_text())["method"] == name
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and all(abs(loss) < 1e6 for loss in losses), losses
