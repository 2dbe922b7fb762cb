"""SimCLR on the built-in shapes dataset: the laptop default of `python -m sslax.train`.

A narrow ResNet-18 (width 1/4, ImageNet stem) sized so that pretraining plus evaluation finishes
in about 5 minutes on a 2-core CPU. The view recipe is SimCLR's at full colour strength with a
milder crop (area >= 25%) and temperature 0.5 (SimCLR's CIFAR value): on this data these gave
the best kNN accuracy in short runs (README, "Measured"). Override any field from the command
line, e.g. `--config.batch_size=512 --config.total_steps=2000`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "simclr"
    c.dataset = "shapes"
    c.image_size = 32
    c.data_dir = ""  # TFDS data_dir; "" means TFDS's default
    c.train_split = "train"
    c.eval_split = "test"  # held-out split for kNN ("validation" for tfds:imagenet2012)

    c.model = "resnet18"
    c.width = 0.25
    c.stem = "imagenet"
    c.patch_size = 16  # ViT models (vit_tiny, vit_small, vit_base) only
    c.proj_hidden_dim = 256
    c.proj_dim = 64

    c.batch_size = 256  # global, in images (2x as many views)
    c.total_steps = 800
    c.optimizer = "lars"
    c.learning_rate = 1.0  # base rate at batch 256, scaled by lr_scaling
    c.lr_scaling = "linear"  # "linear": lr x B/256, "sqrt": lr x sqrt(B), "none" (SimCLR App. B)
    c.warmup_steps = 25
    c.weight_decay = 1e-6
    c.momentum = 0.9
    c.temperature = 0.5

    # Views: SimCLR's recipe at colour strength s; blur off for 32 px images (SimCLR App. B.9).
    c.augment_strength = 1.0
    c.augment_blur = False
    c.crop_min_scale = 0.25  # random resized crop area in [crop_min_scale, 1]; SimCLR: 0.08

    c.seed = 0
    c.log_every = 50
    c.checkpoint_every = 250
    c.eval_every = 0  # 0: evaluate at the end only
    c.knn_k = 20
    c.knn_temperature = 0.07
    c.knn_train_examples = 20_000
    c.knn_test_examples = 4_000
    return c.lock()
