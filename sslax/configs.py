"""Config builders shared by the files in ``experiments/configs/``.

A config file stays a thin ``get_config()`` that starts from :func:`shapes_config` and overrides
what its recipe changes; every method's own hyperparameters live in a section named after the
method (``config.byol.ema_base`` ...), filled from that method module's ``defaults()``, so
``--config.method=NAME`` works from any config file.

>>> c = shapes_config("simclr")
>>> c.method, c.batch_size, c.dataset
('simclr', 256, 'shapes')
>>> c = imagenet_config("byol", batch_size=4096, epochs=1000, warmup_epochs=10)
>>> c.dataset, c.image_size, c.total_steps, c.warmup_steps
('tfds:imagenet2012', 224, 312000, 3120)
"""

from __future__ import annotations

import ml_collections

from sslax import methods


def shapes_config(method: str) -> ml_collections.ConfigDict:
    """The laptop setting: the built-in dataset, a narrow ResNet-18, about 5 minutes on 2 cores.

    Returned unlocked; config files lock it after their overrides.
    """
    c = ml_collections.ConfigDict()
    c.method = method
    c.dataset = "shapes"
    c.image_size = 32
    c.data_dir = ""  # TFDS data_dir; "" means TFDS's default
    c.train_split = "train"
    c.eval_split = "test"  # held-out split for kNN ("validation" for tfds:imagenet2012)

    # Device mesh: ("data", n) splits the batch; ("fsdp", n) splits the batch too and also the
    # large parameters and optimiser state (for ViT-B and larger). -1: the remaining devices.
    c.mesh = (("data", -1),)  # parallel.DEFAULT_MESH (this module stays free of jax imports)

    c.model = "resnet18"
    c.width = 0.25
    c.stem = "imagenet"
    c.patch_size = 16  # ViT models (vit_tiny, vit_small, vit_base) only
    c.compute_dtype = "float32"  # "bfloat16": bf16 compute, float32 parameters and optimizer
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

    # Views: a recipe of sslax.augment ("simclr", "moco_v2" or "byol"). For "simclr",
    # augment_strength is SimCLR's colour strength s; blur is off for 32 px images (SimCLR
    # App. B.9).
    c.recipe = "simclr"
    c.augment_strength = 1.0
    c.augment_blur = False
    c.crop_min_scale = 0.25  # random resized crop area in [crop_min_scale, 1]; SimCLR: 0.08

    c.seed = 0
    c.log_every = 50
    c.checkpoint_every = 250
    c.eval_every = 0  # 0: evaluate at the end only
    # A warning names representation collapse when embedding_std x sqrt(D) (1: spread evenly,
    # 0: one point) stays below collapse_threshold for collapse_patience log intervals.
    c.collapse_threshold = 0.1
    c.collapse_patience = 3
    c.knn_k = 20
    c.knn_temperature = 0.07
    c.knn_train_examples = 20_000
    c.knn_test_examples = 4_000
    # At every evaluation: alignment, uniformity and effective rank of z on two views of this
    # many held-out images; the linear probe on h at the end, and at every evaluation if set.
    c.diagnostics_examples = 512
    c.eval_linear_probe = False

    for name in methods.METHODS:
        c[name] = methods.get(name).defaults()
    return c


IMAGENET_TRAIN_IMAGES = 1_281_167


def imagenet_steps_per_epoch(batch_size: int) -> int:
    """Steps in one pass over ImageNet's train split, the last partial batch dropped."""
    return IMAGENET_TRAIN_IMAGES // batch_size


def imagenet_config(
    method: str,
    *,
    batch_size: int,
    epochs: int,
    warmup_epochs: int,
    model: str = "resnet50",
    compute_dtype: str = "bfloat16",
    checkpoint_every_epochs: int = 1,
) -> ml_collections.ConfigDict:
    """The paper setting shared by the ``*_imagenet.py`` files: ImageNet-1k from TFDS at 224 px.

    Epoch counts become steps at ``batch_size``; bfloat16 compute (float32 parameters and
    optimiser state) is sslax's accelerator default, not every paper's. The method's optimiser,
    views and head come from its config file. Returned unlocked.
    """
    c = shapes_config(method)
    c.dataset = "tfds:imagenet2012"
    c.train_split = "train"
    c.eval_split = "validation"
    c.image_size = 224
    c.model = model
    c.width = 1.0
    c.stem = "imagenet"
    c.compute_dtype = compute_dtype
    c.crop_min_scale = 0.08  # torchvision's RandomResizedCrop default, the papers' unless noted

    steps_per_epoch = imagenet_steps_per_epoch(batch_size)
    c.batch_size = batch_size
    c.total_steps = epochs * steps_per_epoch
    c.warmup_steps = warmup_epochs * steps_per_epoch
    c.log_every = 100
    c.checkpoint_every = checkpoint_every_epochs * steps_per_epoch
    return c
