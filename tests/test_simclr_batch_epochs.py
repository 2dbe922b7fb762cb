"""experiments/simclr_batch_epochs.py: SimCLR's Table B.1 grid at CPU scale, end to end."""

import json

import pytest
from experiment_scripts import load

sweep = load("sweep")
batch_epochs = load("simclr_batch_epochs")


@pytest.mark.parametrize(
    "batch, epochs, rule, steps, peak",
    [
        (32, 1, "linear", 625, 0.3 * 32 / 256),
        (512, 3, "linear", 117, 0.3 * 2),
        (64, 1, "sqrt", 312, 0.075 * 8),
        (256, 3, "sqrt", 234, 0.075 * 16),
    ],
)
def test_cells_follow_the_papers_rules(batch, epochs, rule, steps, peak):
    config = batch_epochs.cell_config(
        batch,
        epochs,
        rule,
        images_per_epoch=20_000,
        image_size=16,
        eval_train=5000,
        eval_test=2000,
        seed=0,
        extra={},
    )
    assert (config.batch_size, config.total_steps, config.lr_scaling) == (batch, steps, rule)
    assert config.warmup_steps == round(0.1 * steps)  # the paper's 10 of 100 epochs
    assert batch_epochs._peak(config) == pytest.approx(peak)


@pytest.mark.slow  # CI's time budget (30 s); the cell rules above stay in the default suite
def test_a_cell_runs_end_to_end_and_is_reused(tmp_path):
    tiny = {k: v for k, v in sweep.TINY.items() if k not in ("batch_size", "image_size")}
    settings = dict(
        batch_sizes=(16,),
        epochs=(2,),
        lr_scalings=("sqrt",),
        images_per_epoch=32,
        image_size=16,
        eval_train_examples=200,
        eval_test_examples=64,
        extra_overrides=tiny,
    )
    report = batch_epochs.run(tmp_path, **settings)
    assert json.loads((tmp_path / "simclr_batch_epochs.json").read_text()) == report
    assert (tmp_path / "simclr_batch_epochs.png").read_bytes().startswith(b"\x89PNG")
    [cell] = report["cells"]
    results = json.loads((tmp_path / "runs" / "b0016-e2-sqrt" / "results.json").read_text())
    assert cell["steps"] == results["steps"] == 2 * 32 // 16
    assert cell["linear_top1"] == results["linear_top1"]
    assert report["paper_table_b1"]["256"]["100"] == {"linear": 57.5, "sqrt": 62.8}
    assert batch_epochs.format_markdown(report).splitlines()[2].startswith("| 16 | ")
    # Run again: the finished cell is read back, not retrained.
    assert batch_epochs.run(tmp_path, **settings)["cells"] == report["cells"]
