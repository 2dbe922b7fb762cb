"""The files in experiments/configs: they load, are locked, validate, and match REFERENCES.md."""

import importlib.util
import pathlib
import re

import pytest

from sslax import configs, methods, optim, train

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
FILES = sorted(p.stem for p in CONFIG_DIR.glob("*.py"))


def load(name: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location(name, CONFIG_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


CASES = [(f, None) for f in FILES if f != "cifar"]
CASES += [("cifar", m) for m in methods.METHODS] + [("cifar", "byol,cifar100")]
CASES += [("simclr_imagenet", "batch_size=256,epochs=100,lr_scaling=sqrt")]
CASES += [("dino", "v1")]


@pytest.mark.parametrize("name, arg", CASES, ids=[f"{n}:{a}" if a else n for n, a in CASES])
def test_config_file_loads_locked_and_valid(name, arg):
    config = load(name, arg)
    assert config.is_locked
    with pytest.raises(AttributeError):
        config.no_such_field = 1
    train.validate_config(config, num_devices=8)
    methods.get(config.method).make(config)  # builds model and optimiser, compiles nothing
    if arg is None:
        assert config.method == name.removesuffix("_imagenet")
    for method in methods.METHODS:  # --config.method=NAME works from any file
        assert method in config


def test_every_method_has_a_shapes_and_an_imagenet_config():
    assert {f for f in FILES if not f.endswith("_imagenet")} == {*methods.METHODS, "cifar"}
    assert {f.removesuffix("_imagenet") for f in FILES if f.endswith("_imagenet")} == set(
        methods.METHODS
    )


def test_bad_cifar_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown method 'simclr2'"):
        load("cifar", "simclr2")
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load("cifar", "simclr,svhn")


def test_simclr_imagenet_argument_string_sets_batch_epochs_and_scaling():
    default = load("simclr_imagenet")
    assert load("simclr_imagenet", "") == default
    assert load("simclr_imagenet", "batch_size=4096,epochs=1000,lr_scaling=linear") == default
    # Any subset, any order; epochs become steps at the batch size (1,281,167 // 512 = 2502).
    config = load("simclr_imagenet", "lr_scaling=sqrt, epochs=200,batch_size=512")
    assert (config.batch_size, config.total_steps, config.warmup_steps) == (512, 500_400, 25_020)
    assert config.checkpoint_every == 25_020
    assert (config.lr_scaling, config.learning_rate) == ("sqrt", 0.075)
    assert config.is_locked
    config = load("simclr_imagenet", "epochs=100")
    assert (config.batch_size, config.total_steps, config.lr_scaling) == (4096, 31_200, "linear")
    assert config.learning_rate == 0.3
    changed = {"total_steps", "warmup_steps", "checkpoint_every"}
    assert {k: v for k, v in config.items() if k not in changed} == {
        k: v for k, v in default.items() if k not in changed
    }  # nothing else changes


@pytest.mark.parametrize(
    "arg, message",
    [
        ("batch=256", "unknown argument 'batch=256'"),
        ("epochs", "unknown argument 'epochs'"),
        ("epochs=100,epochs=200", "epochs given twice"),
        ("lr_scaling=none", "lr_scaling must be linear or sqrt, got 'none'"),
        ("batch_size=0", "batch_size must be an integer, at least 1"),
        ("batch_size=2e3", "batch_size must be an integer"),
        ("epochs=10", "epochs must be an integer, at least 11"),
    ],
)
def test_bad_simclr_imagenet_arguments_are_refused(arg, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load("simclr_imagenet", arg)


# Paper recipes (REFERENCES.md): batch, epochs, warm-up epochs, optimiser, peak learning rate at
# that batch, weight decay, and the method's own values.
PAPER = {
    "simclr_imagenet": dict(batch=4096, epochs=1000, warmup=10, opt="lars", lr=4.8, wd=1e-6),
    "moco_v2_imagenet": dict(batch=256, epochs=200, warmup=0, opt="sgd", lr=0.03, wd=1e-4),
    "moco_v3_imagenet": dict(batch=4096, epochs=100, warmup=10, opt="lars", lr=9.6, wd=1e-6),
    "byol_imagenet": dict(batch=4096, epochs=1000, warmup=10, opt="lars", lr=3.2, wd=1.5e-6),
    "simsiam_imagenet": dict(batch=256, epochs=100, warmup=0, opt="sgd", lr=0.05, wd=1e-4),
    "dino_imagenet": dict(batch=512, epochs=100, warmup=10, opt="adamw", lr=1e-3, wd=0.04),
    "barlow_twins_imagenet": dict(
        batch=2048, epochs=1000, warmup=10, opt="lars", lr=1.6, wd=1.5e-6
    ),
    "vicreg_imagenet": dict(batch=2048, epochs=1000, warmup=10, opt="lars", lr=1.6, wd=1e-6),
    "swav_imagenet": dict(batch=4096, epochs=800, warmup=10, opt="lars", lr=4.8, wd=1e-6),
    "nnclr_imagenet": dict(batch=4096, epochs=1000, warmup=10, opt="lars", lr=4.8, wd=1e-6),
    "supcon_imagenet": dict(batch=4096, epochs=700, warmup=10, opt="lars", lr=4.8, wd=1e-6),
    "mae_imagenet": dict(batch=4096, epochs=1600, warmup=40, opt="adamw", lr=2.4e-3, wd=0.05),
}
OWN = {
    "simclr_imagenet": dict(temperature=0.1, proj_dim=128, crop_min_scale=0.08),
    "moco_v2_imagenet": {
        "temperature": 0.2,
        "proj_dim": 128,
        "crop_min_scale": 0.2,
        "moco_v2.queue_size": 65_536,
        "moco_v2.momentum": 0.999,
    },
    "moco_v3_imagenet": {
        "temperature": 1.0,
        "proj_dim": 256,
        "proj_hidden_dim": 4096,
        "moco_v3.momentum_base": 0.99,
    },
    "byol_imagenet": {
        "proj_hidden_dim": 4096,
        "proj_dim": 256,
        "byol.ema_base": 0.996,
        "recipe": "byol",
    },
    "simsiam_imagenet": {
        "proj_hidden_dim": 2048,
        "proj_dim": 2048,
        "simsiam.predictor_hidden_dim": 512,
        "simsiam.fixed_predictor_lr": True,
    },
    "dino_imagenet": {
        "model": "vit_small",
        "dino.out_dim": 65536,
        "dino.hidden_dim": 2048,
        "dino.bottleneck_dim": 256,
        "dino.teacher_temp": 0.04,
        "dino.student_temp": 0.1,
        "dino.center_momentum": 0.9,
        "dino.teacher_momentum_base": 0.996,
        "dino.weight_decay_end": 0.4,
        "dino.clip_grad": 3.0,
        "dino.num_local": 8,
        "dino.local_size": 96,
        "dino.freeze_last_layer_steps": 1_281_167 // 512,
    },
    "barlow_twins_imagenet": {"barlow_twins.lambd": 5.1e-3, "barlow_twins.expander_dim": 8192},
    "vicreg_imagenet": {
        "vicreg.sim_coeff": 25.0,
        "vicreg.std_coeff": 25.0,
        "vicreg.cov_coeff": 1.0,
        "vicreg.expander_dim": 8192,
    },
    "swav_imagenet": {
        "temperature": 0.1,
        "proj_dim": 128,
        "crop_min_scale": 0.14,
        "swav.num_prototypes": 3000,
        "swav.epsilon": 0.05,
        "swav.sinkhorn_iters": 3,
        "swav.num_local": 6,
        "swav.local_size": 96,
        "swav.local_min_scale": 0.05,
        "swav.queue_size": 0,
        "swav.freeze_prototypes_steps": 1_281_167 // 4096,
    },
    "nnclr_imagenet": {
        "temperature": 0.1,
        "proj_dim": 256,
        "nnclr.queue_size": 98_304,
        "nnclr.pred_hidden_dim": 4096,
    },
    "supcon_imagenet": {"temperature": 0.1, "proj_dim": 128},
    "mae_imagenet": {
        "model": "vit_base",
        "patch_size": 16,
        "crop_min_scale": 0.2,
        "mae.mask_ratio": 0.75,
        "mae.decoder_dim": 512,
        "mae.decoder_depth": 8,
        "mae.norm_pix": True,
        "mae.adam_b2": 0.95,
    },
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_imagenet_configs_hold_the_paper_recipe(name):
    config, paper = load(name), PAPER[name]
    steps_per_epoch = configs.imagenet_steps_per_epoch(paper["batch"])
    assert config.dataset == "tfds:imagenet2012" and config.image_size == 224
    assert config.batch_size == paper["batch"]
    assert config.total_steps == paper["epochs"] * steps_per_epoch
    assert config.warmup_steps == paper["warmup"] * steps_per_epoch
    assert config.optimizer == paper["opt"] and config.weight_decay == paper["wd"]
    peak = optim.scaled_learning_rate(
        config.learning_rate, batch_size=config.batch_size, rule=config.lr_scaling
    )
    assert peak == pytest.approx(paper["lr"])
    for path, value in OWN[name].items():
        node = config
        for part in path.split("."):
            node = node[part]
        assert node == value, path


def test_dinov2_imagenet_config_holds_the_official_defaults():
    # ssl_default_config.yaml: iterations, not ImageNet epochs (1,250 per "epoch").
    config = load("dinov2_imagenet")
    peak = optim.scaled_learning_rate(
        config.learning_rate, batch_size=config.batch_size, rule=config.lr_scaling
    )
    assert peak == pytest.approx(0.004) and config.batch_size == 1024
    assert (config.total_steps, config.warmup_steps) == (125_000, 12_500)
    section = config.dinov2
    assert (section.koleo_weight, section.ibot_weight) == (0.1, 1.0)
    assert (section.mask_probability, section.mask_ratio_min, section.mask_ratio_max) == (
        0.5,
        0.1,
        0.5,
    )
    assert (section.out_dim, section.teacher_momentum_base, section.teacher_temp) == (
        65536,
        0.992,
        0.07,
    )


def test_dino_file_holds_the_laptop_recipe_and_dino_v1s():
    current, v1 = load("dino"), load("dino", "v1")
    assert (current.dino.views, current.dino.centering_mode, current.dino.num_local) == (
        "recipe",
        "sinkhorn_knopp",
        0,
    )
    assert (v1.dino.views, v1.dino.centering_mode, v1.dino.num_local, v1.optimizer) == (
        "dino",
        "centering",
        4,
        "adamw",
    )
    with pytest.raises(ValueError, match="unknown dino.py variant 'v2'"):
        load("dino", "v2")
