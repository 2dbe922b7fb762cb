"""Bad input ends in one line and exit code 2 before anything is compiled or written.

The command-line cases here add to those of
``test_train.py::test_bad_flags_fail_with_one_line_and_exit_2_before_compiling`` (unknown
field, method, dataset and flag; a negative batch; temperature 0; a mesh larger than the
devices), which are not repeated. The unit tests call each method's ``check_config`` directly.
"""

import re

import numpy as np
import pytest
from cli_runs import run_cli

from sslax import configs, methods, train
from sslax.data import pipeline

CLI_CASES = [
    # (flags, extra environment, fragment of the error line)
    (
        [],  # the default batch of 256 on 3 devices
        {"JAX_NUM_CPU_DEVICES": "3"},
        "batch_size 256 does not divide by the 3 devices",
    ),
    (["--config.model=resnet19"], {}, "unknown model 'resnet19'; choose one of"),
    (["--config.momentum=1.5"], {}, "momentum must be in [0, 1], got 1.5"),
    (
        ["--config.method=byol", "--config.byol.ema_base=1.01"],
        {},
        "byol.ema_base must be in [0, 1], got 1.01",
    ),
    (
        ["--config.method=moco_v3", "--config.moco_v3.momentum_base=-0.1"],
        {},
        "moco_v3.momentum_base must be in [0, 1], got -0.1",
    ),
    (
        ["--config.method=dino", "--config.dino.center_momentum=2.0"],
        {},
        "dino.center_momentum must be in [0, 1], got 2.0",
    ),
    (
        ["--config.method=dino", "--config.dino.local_size=48"],
        {},
        "dino.local_size must be <= image_size 32 (the global crops' size; local crops are "
        "smaller), got 48",
    ),
    (
        ["--config.method=moco_v2", "--config.moco_v2.queue_size=1000"],
        {},
        "moco_v2.queue_size 1000 must be a positive multiple of the global batch_size 256",
    ),
    (
        ["--config.method=simclr", "--config.dino.num_local=8"],
        {},
        "dino.num_local=8 asks for local crops, but only method 'dino' uses local crops "
        "(method is 'simclr')",
    ),
    (
        ["--config.method=byol", "--config.dino.local_size=8"],
        {},
        "dino.local_size=8 asks for local crops, but only method 'dino' uses local crops",
    ),
]


@pytest.mark.parametrize(
    "flags, env, message",
    CLI_CASES,
    ids=[" ".join(f.removeprefix("--config.") for f in c[0]) or "3 devices" for c in CLI_CASES],
)
def test_bad_config_fails_with_one_line_and_exit_2_before_compiling(
    tmp_path, data_dir, flags, env, message
):
    workdir = tmp_path / "run"
    result = run_cli([f"--workdir={workdir}", *flags], data_dir, JAX_LOG_COMPILES="1", **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, result.stderr
    assert error_lines[0].startswith("sslax.train: error:"), error_lines[0]
    assert message in error_lines[0], error_lines[0]
    output = result.stderr + result.stdout
    assert "Compiling" not in output and "Finished tracing" not in output
    assert not workdir.exists()


def _config(method, **overrides):
    config = configs.shapes_config(method)
    for field, value in overrides.items():
        section, _, name = field.rpartition(".")
        (config[section] if section else config)[name] = value
    return config


@pytest.mark.parametrize("method", methods.METHODS)
def test_every_method_default_config_passes_its_checks(method):
    train.validate_config(_config(method), num_devices=1)


@pytest.mark.parametrize("method", methods.VIT_ONLY)
def test_masked_patch_methods_on_a_resnet_are_refused_with_the_fix(method):
    with pytest.raises(train.ConfigError, match=f"{method} needs a ViT.*--config.model=vit_micro"):
        train.validate_config(_config(method, model="resnet18"), num_devices=1)


@pytest.mark.parametrize(
    "method, field, value, message",
    [
        ("byol", "byol.ema_base", -0.5, "byol.ema_base must be in [0, 1], got -0.5"),
        ("byol", "byol.predictor_hidden_dim", 0, "byol.predictor_hidden_dim must be >= 1"),
        ("moco_v2", "moco_v2.momentum", 1.5, "moco_v2.momentum must be in [0, 1], got 1.5"),
        ("moco_v3", "moco_v3.momentum_base", 2.0, "moco_v3.momentum_base must be in [0, 1]"),
        ("moco_v3", "moco_v3.pred_hidden_dim", 0, "moco_v3.pred_hidden_dim must be >= 1"),
        ("dino", "dino.teacher_momentum_base", 1.1, "dino.teacher_momentum_base must be in"),
        ("dino", "dino.drop_path_rate", 1.0, "dino.drop_path_rate must be in [0, 1), got 1.0"),
        ("dino", "dino.local_size", 33, "dino.local_size must be <= image_size 32"),
        ("simsiam", "simsiam.predictor_hidden_dim", 0, "simsiam.predictor_hidden_dim must be"),
        ("barlow_twins", "barlow_twins.lambd", -1.0, "barlow_twins.lambd must be >= 0"),
        ("barlow_twins", "barlow_twins.expander_dim", 0, "barlow_twins.expander_dim must be"),
        ("vicreg", "vicreg.std_coeff", -25.0, "vicreg.std_coeff must be >= 0, got -25.0"),
        ("simclr", "simclr.loss_chunk_size", 3, "simclr.loss_chunk_size must be 0 (dense)"),
        ("simclr", "simclr.projection_head", "mpl", "projection_head must be one of mlp, linear"),
    ],
)
def test_method_checks_name_the_field_the_value_and_what_is_allowed(method, field, value, message):
    config = _config(method, **{field: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        methods.get(method).check_config(config)
    with pytest.raises(train.ConfigError, match=re.escape(field)):
        train.validate_config(config, num_devices=1)


def test_dino_local_crops_may_be_as_large_as_the_globals_and_are_unchecked_when_off():
    train.validate_config(_config("dino", **{"dino.local_size": 32}), num_devices=1)
    # No local crops: their size does not matter.
    train.validate_config(
        _config("dino", **{"dino.num_local": 0, "dino.local_size": 64}), num_devices=1
    )


@pytest.mark.parametrize("method", [m for m in methods.METHODS if m != "dino"])
def test_local_crops_only_for_dino(method):
    with pytest.raises(train.ConfigError, match="dino.num_local=2 .* only method 'dino'"):
        train.validate_config(_config(method, **{"dino.num_local": 2}), num_devices=1)
    # Asking for no local crops is fine: nothing is silently ignored.
    train.validate_config(_config(method, **{"dino.num_local": 0}), num_devices=1)


def test_optimizer_momentum_outside_the_unit_interval_is_refused():
    for value in (-0.1, 1.5):
        with pytest.raises(train.ConfigError, match=rf"momentum must be in \[0, 1\], got {value}"):
            train.validate_config(_config("simclr", momentum=value), num_devices=1)
    train.validate_config(_config("simclr", momentum=0.0), num_devices=1)


@pytest.mark.parametrize(
    "image, what",
    [
        (np.zeros((8, 8, 3), np.float32), "dtype float32"),
        (np.zeros((8, 8, 4), np.uint8), r"\(8, 8, 4\)"),
        (np.zeros((8, 8), np.uint8), r"\(8, 8\)"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"\(2, 8, 8, 3\)"),
    ],
    ids=["dtype", "channels", "no channel axis", "batched"],
)
def test_a_bad_record_names_the_dataset_and_its_index(image, what):
    # Also tests/test_pipeline.py::test_bad_records_name_the_dataset_and_index.
    class Source:
        def __len__(self):
            return 5

        def __getitem__(self, index):
            return {"image": image, "label": 0}

    wrapped = pipeline._FixedSizeImages(Source(), "tfds:broken", 8)
    with pytest.raises(pipeline.DatasetError, match=rf"^tfds:broken: record 4 .*{what}"):
        wrapped[4]
