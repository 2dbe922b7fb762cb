"""experiments/augment_strength.py: SimCLR over the colour-strength knob (smoke size here).

The default suite checks the script's bookkeeping and figure on canned run results; the real
tiny-size runs (a ResNet compile and an evaluation, ~30 s on 2 cores) are slow-marked.
"""

import json

import pytest
from experiment_scripts import load

augment_strength = load("augment_strength")
temperature = load("temperature")
sweep = load("sweep")

TINY_RUN = {
    "steps": 2,
    "batch_size": sweep.TINY["batch_size"],
    "overrides": {
        **{k: v for k, v in sweep.TINY.items() if k != "batch_size"},
        "log_every": 2,
    },
}


def test_shares_its_base_settings_with_the_temperature_sweep():
    # The strength 1 run here and the tau 0.5 run there are then the same config.
    for key in ("steps", "batch_size", "seed"):
        assert augment_strength.DEFAULTS[key] == temperature.DEFAULTS[key]
    assert sweep.laptop_config("simclr", {}).temperature == 0.5
    assert 0.5 in temperature.DEFAULTS["taus"] and 1.0 in augment_strength.DEFAULTS["strengths"]


def test_the_knob_moves_the_colour_jitter_only():
    def recipe(**knobs):
        return augment_strength.recipe_of(sweep.laptop_config("simclr", knobs))

    weak, strong = recipe(augment_strength=0.0), recipe(augment_strength=2.0)
    assert (weak["brightness"], weak["saturation"], weak["hue"]) == (0.0, 0.0, 0.0)
    assert strong["brightness"] == pytest.approx(1.6) and strong["hue"] == pytest.approx(0.4)
    for key in ("crop_scale", "crop_ratio", "flip_prob", "grayscale_prob", "blur_prob"):
        assert weak[key] == strong[key], key
    assert weak["crop_scale"] == (0.25, 1.0) and weak["grayscale_prob"] == 0.2
    assert recipe(crop_min_scale=1.0)["crop_scale"] == (1.0, 1.0)


def check_written(out, report, strengths, crops):
    assert json.loads((out / "augment_strength.json").read_text()) == report
    assert (out / "augment_strength.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert list(report["runs"]) == strengths and list(report["crop_runs"]) == crops
    for r in [*report["runs"].values(), *report["crop_runs"].values()]:
        for key in ("knn_top1", "linear_top1", "knn_top1_random_init"):
            assert 0.0 <= r[key] <= 1.0
        assert r["uniformity"] <= 0.0 <= r["alignment"]
    for name, r in report["runs"].items():
        assert r["augment_strength"] == float(name)
        assert r["recipe"]["brightness"] == pytest.approx(0.8 * float(name))


def test_json_and_png_from_canned_runs(tmp_path, monkeypatch):
    # The script's own bookkeeping and figure without training (a real run costs ~30 s of
    # compiles on 2 cores; the slow test below and temperature.py's smoke test train for real).
    seen = []

    def fake_run(config, workdir):
        seen.append((config.augment_strength, config.crop_min_scale, workdir.name))
        strength = config.augment_strength
        results = {
            "knn_top1": 0.1 + 0.1 * strength,
            "linear_top1": 0.2 + 0.1 * strength,
            "final_loss": 5.0,
            "embedding_std": 0.1,
            "collapse_warning_step": None,
            "wall_time_s": 1.0,
            "knn_top1_random_init": 0.11,
            "knn_top1_raw_pixels": 0.49,
        }
        final = {"step": 2, "knn_top1": results["knn_top1"], "alignment": 0.5 * strength}
        final.update(uniformity=-2.0, effective_rank=10.0)
        return results, [{"step": 2, "loss": 5.0}, final]

    monkeypatch.setattr(augment_strength.sweep, "run", fake_run)
    report = augment_strength.run(tmp_path, strengths=(0.0, 2.0), crop_min_scales=(1.0,))
    check_written(tmp_path, report, ["0", "2"], ["1"])
    assert seen == [(0.0, 0.25, "strength_0"), (2.0, 0.25, "strength_2"), (1.0, 1.0, "crop_1")]
    assert report["runs"]["2"]["knn_top1"] == pytest.approx(0.3)
    assert report["runs"]["2"]["alignment"] == 1.0
    assert report["crop_runs"]["1"]["recipe"]["crop_scale"] == [1.0, 1.0]


@pytest.mark.slow
def test_smoke_run_writes_json_and_png(tmp_path):
    report = augment_strength.run(tmp_path, strengths=(2.0,), **TINY_RUN)
    check_written(tmp_path, report, ["2"], [])
    config = json.loads((tmp_path / "runs" / "strength_2" / "config.json").read_text())
    assert (config["augment_strength"], config["total_steps"]) == (2.0, 2)


@pytest.mark.slow
def test_smoke_sweep_with_a_crop_run(tmp_path):
    report = augment_strength.run(
        tmp_path, strengths=(0.0, 1.0), crop_min_scales=(1.0,), **TINY_RUN
    )
    check_written(tmp_path, report, ["0", "1"], ["1"])
    assert report["crop_runs"]["1"]["recipe"]["crop_scale"] == [1.0, 1.0]


def test_knobs_are_not_overrides(tmp_path):
    with pytest.raises(ValueError, match="by their own settings"):
        augment_strength.run(tmp_path, overrides={"augment_strength": 1.0})
