"""experiments/sweep.py: the configs and run records the experiment scripts share."""

import json

import pytest
from experiment_scripts import load

sweep = load("sweep")


def test_overrides_reach_method_sections_and_the_config_is_locked():
    c = sweep.laptop_config("simclr", {"temperature": 0.1, "simclr.projection_head": "linear"})
    assert (c.temperature, c.simclr.projection_head) == (0.1, "linear")
    with pytest.raises(AttributeError):
        c.new_field = 1


@pytest.mark.parametrize("key", ["temprature", "simclr.no_such_field", "nosection.x"])
def test_a_misspelt_override_is_refused(key):
    with pytest.raises(ValueError, match=f"no config field '{key}'"):
        sweep.laptop_config("simclr", {key: 0.1})


def test_curve_keeps_the_last_record_of_a_repeated_step(tmp_path):
    records = [{"step": 2, "loss": 3.0}, {"step": 4, "loss": 2.0}, {"step": 2, "loss": 2.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert sweep.curve(sweep.read_history(tmp_path), "loss") == ([2, 4], [2.5, 2.0])


def test_settings_refuse_an_unknown_name_and_keep_the_defaults():
    defaults = {"steps": 200, "batch_size": 256}
    assert sweep.settings(defaults, {"steps": 4}) == {"steps": 4, "batch_size": 256}
    assert defaults == {"steps": 200, "batch_size": 256}
    with pytest.raises(TypeError, match="unknown settings: \\['step'\\]"):
        sweep.settings(defaults, {"step": 4})


def test_file_config_is_the_recipe_file_with_overrides():
    config = sweep.file_config("simsiam", {"simsiam.stop_gradient": False, "total_steps": 7})
    assert (config.optimizer, config.simsiam.stop_gradient, config.total_steps) == ("sgd", False, 7)
    with pytest.raises(KeyError):
        sweep.file_config("simsiam", {"simsiam.stop_gradiet": False})


def test_experiments_keep_the_views_they_were_measured_with():
    # The laptop default moved (issue 19); the experiments' recorded numbers used these.
    bare = sweep.laptop_config("simclr", {})
    assert (bare.augment_strength, bare.crop_min_scale, bare.temperature) == (1.0, 0.25, 0.5)
    assert sweep.laptop_config("simclr", {"augment_strength": 2.0}).augment_strength == 2.0
    moco = sweep.file_config("moco_v2", {})
    assert (moco.augment_strength, moco.crop_min_scale) == (1.0, 0.25)
    assert moco.temperature == 0.2  # the method file's own, not the pinned SimCLR one
