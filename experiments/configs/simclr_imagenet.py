"""SimCLR on ImageNet: the ResNet-50 recipe of Chen et al. 2020 (arXiv 2002.05709).

google-research/simclr at batch 4,096: LARS (trust coefficient 1e-3, momentum 0.9, biases and
BatchNorm excluded) at lr 0.3 x B/256, weight decay 1e-6, 10 warm-up epochs then cosine,
global BatchNorm; projection head 2048 - BN - ReLU - 128; temperature 0.1 (the code's
default); crop area (0.08, 1), colour strength 1.0 with blur. 1000 epochs of 1,281,167 images
(312 steps each, the last partial batch dropped) give the paper's 69.3 linear top-1 (Table 6).

An optional argument string sets the batch size, the epochs and the learning-rate scaling of
the batch size x epochs ablation (Table B.1; ``experiments/simclr_table_b1.py`` runs all of it),
any subset of them, in any order:

    python -m sslax.train --config=experiments/configs/simclr_imagenet.py
    python -m sslax.train \
        --config=experiments/configs/simclr_imagenet.py:batch_size=256,epochs=100,lr_scaling=sqrt

Defaults: ``batch_size=4096,epochs=1000,lr_scaling=linear``, the recipe above. Epochs become
steps at that batch size, as do the 10 warm-up epochs and a checkpoint every 10 epochs;
``lr_scaling=linear`` is lr 0.3 x B/256 and ``lr_scaling=sqrt`` is 0.075 x sqrt(B) (App. B.1).
``--config.FIELD=VALUE`` overrides still apply on top, after the argument string.

bfloat16 compute (float32 parameters and optimiser) is sslax's choice for accelerators.
"""

from sslax import configs

DEFAULTS = {"batch_size": 4096, "epochs": 1000, "lr_scaling": "linear"}
BASE_LEARNING_RATE = {"linear": 0.3, "sqrt": 0.075}  # x B/256, x sqrt(B)
WARMUP_EPOCHS = 10
CHECKPOINT_EVERY_EPOCHS = 10


def parse_argument(arg: str) -> dict:
    """``"batch_size=B,epochs=E,lr_scaling=linear|sqrt"`` (any subset) -> the three values.

    Raises ValueError, naming the item, for an unknown or repeated key or a bad value.
    """
    values, seen = dict(DEFAULTS), set()
    for item in filter(None, (part.strip() for part in arg.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in DEFAULTS:
            raise ValueError(
                f"simclr_imagenet: unknown argument {item!r}; expected "
                "batch_size=B,epochs=E,lr_scaling=linear|sqrt (any subset)"
            )
        if key in seen:
            raise ValueError(f"simclr_imagenet: {key} given twice in {arg!r}")
        seen.add(key)
        if key == "lr_scaling":
            if value not in BASE_LEARNING_RATE:
                raise ValueError(
                    f"simclr_imagenet: lr_scaling must be linear or sqrt, got {value!r}"
                )
            values[key] = value
        elif key == "batch_size":
            values[key] = _integer(key, value, 1, configs.IMAGENET_TRAIN_IMAGES, "")
        else:
            note = f" (they include the {WARMUP_EPOCHS} warm-up epochs)"
            values[key] = _integer(key, value, WARMUP_EPOCHS + 1, None, note)
    return values


def _integer(key: str, value: str, lowest: int, highest: int | None, note: str) -> int:
    number = int(value) if value.isdigit() else None
    if number is None or number < lowest or (highest is not None and number > highest):
        bound = f" and at most {highest:,}" if highest is not None else ""
        raise ValueError(
            f"simclr_imagenet: {key} must be an integer, at least {lowest}{bound}{note}; "
            f"got {value!r}"
        )
    return number


def get_config(arg: str = ""):
    values = parse_argument(arg)
    c = configs.imagenet_config(
        "simclr",
        batch_size=values["batch_size"],
        epochs=values["epochs"],
        warmup_epochs=WARMUP_EPOCHS,
        checkpoint_every_epochs=CHECKPOINT_EVERY_EPOCHS,
    )
    c.proj_hidden_dim = 2048
    c.proj_dim = 128
    c.optimizer = "lars"
    c.lr_scaling = values["lr_scaling"]
    c.learning_rate = BASE_LEARNING_RATE[c.lr_scaling]
    c.weight_decay = 1e-6
    c.momentum = 0.9
    c.temperature = 0.1
    c.recipe = "simclr"
    c.augment_strength = 1.0
    c.augment_blur = True
    return c.lock()
