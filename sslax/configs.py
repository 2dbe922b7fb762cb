"""Config builders shared by the files in ``experiments/configs/``, and the check of a config.

A config file stays a thin ``get_config()`` that starts from :func:`shapes_config` and overrides
what its recipe changes; every method's own hyperparameters live in a section named after the
method (``config.byol.ema_base`` ...), filled from that method module's ``defaults()``, so
``--config.method=NAME`` works from any config file.

:func:`validate_config` refuses, with one :class:`ConfigError` naming the field, its value and
what is allowed, every value that cannot run; whatever it lets through runs (its property test,
``tests/test_config_fuzz.py``, traces hundreds of random configs).

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
    """The laptop setting: the built-in dataset, a narrow ResNet-18, about 7 minutes on 2 cores.

    Any ``total_steps >= 1`` runs: a warm-up longer than the run (``warmup_steps``, DINO's
    ``warmup_teacher_temp_steps``) is clipped to it, and ``log_every``, ``checkpoint_every``
    and ``eval_every`` also act at the last step. Returned unlocked; config files lock it after
    their overrides.
    """
    c = ml_collections.ConfigDict()
    c.method = method
    c.dataset = "shapes"
    c.image_size = 32
    c.data_dir = ""  # TFDS data_dir; "" means TFDS's default
    c.train_split = "train"
    c.eval_split = "test"  # held-out split for kNN ("validation" for tfds:imagenet2012)
    # Photos of every size (folder:PATH, tfds:imagenet2012): decoding worker processes per host
    # (-1: the cores less one; 0: threads of the training process), JPEGs decoded at 1/2-1/8
    # scale when every crop allows it, and the evaluation centre crop's share of the shorter
    # side (0.875: 224 of 256). prefetch_batches: global batches put on the devices ahead.
    c.data_workers = -1
    c.dct_downscale = True
    c.crop_fraction = 0.875
    c.prefetch_batches = 2

    # Device mesh: ("data", n) splits the batch; ("fsdp", n) splits the batch too and also the
    # large parameters and optimiser state (for ViT-B and larger). -1: the remaining devices.
    c.mesh = (("data", -1),)  # parallel.DEFAULT_MESH (this module stays free of jax imports)

    c.model = "resnet18"
    c.width = 0.25
    c.stem = "imagenet"
    c.patch_size = 16  # ViT models (vit_tiny, vit_small, vit_base) only
    c.compute_dtype = "float32"  # "bfloat16": bf16 compute, float32 parameters and optimizer
    # Activation rematerialisation of the backbone (sslax.models.remat): "none", "dots" (keep
    # only conv/matmul outputs: ViTs), "blocks" (keep only each block's input: ResNets), "full".
    # Less memory for more FLOPs, the same results; `python -m sslax.plan` shows the trade.
    c.remat = "none"
    c.proj_hidden_dim = 256
    c.proj_dim = 64

    c.batch_size = 256  # global, in images (2x as many views)
    c.total_steps = 1000
    c.optimizer = "lars"
    c.learning_rate = 1.0  # base rate at batch 256, scaled by lr_scaling
    c.lr_scaling = "linear"  # "linear": lr x B/256, "sqrt": lr x sqrt(B), "none" (SimCLR App. B)
    # Linear warm-up from 0, then cosine to 0. A warm-up longer than the run is clipped to it
    # (the rate rises over the whole run and never decays), as is every warm-up in sslax.
    c.warmup_steps = 25
    c.weight_decay = 1e-6
    c.momentum = 0.9
    c.temperature = 0.1  # SimCLR's ImageNet value; 0.5 (its CIFAR value) learned less here

    # Views: a recipe of sslax.augment ("simclr", "moco_v2", "byol", or "crop": crop and flip
    # only, SimCLR's Figure 5 ablation). For "simclr", augment_strength is SimCLR's colour
    # strength s; blur is off for 32 px images (SimCLR App. B.9). The built-in data's colours
    # are pure nuisance and its objects fill much of the image, so the laptop views distort
    # colour 3x harder than SimCLR's s = 1 and crop more gently (area >= 50%): with temperature
    # 0.1, SimCLR's kNN top-1 reached 0.58 after 400 steps, where s = 1, area >= 25% and tau
    # 0.5 had reached 0.37 after 800 (README, "How the laptop recipe was found").
    c.recipe = "simclr"
    c.augment_strength = 3.0
    c.augment_blur = False
    c.crop_min_scale = 0.5  # random resized crop area in [crop_min_scale, 1]; SimCLR: 0.08

    c.seed = 0
    # Every N steps and at the last step; 0: at the last step only. Beyond total_steps: the
    # last step only.
    c.log_every = 50
    c.checkpoint_every = 250
    c.eval_every = 0
    # (start, stop): a jax.profiler trace of the steps that take the state from step start to
    # step stop, written to WORKDIR/profile (TensorBoard's profile plugin, Perfetto); (): none.
    c.profile_steps = ()
    # A warning names representation collapse when embedding_std x sqrt(D) (1: spread evenly,
    # 0: one point) stays below collapse_threshold for collapse_patience log intervals.
    c.collapse_threshold = 0.1
    c.collapse_patience = 3
    c.knn_k = 20
    c.knn_temperature = 0.07
    c.knn_train_examples = 20_000  # the first N of each split; more than a split has: all of it
    c.knn_test_examples = 4_000
    # At every evaluation: alignment, uniformity and effective rank of z on two views of this
    # many held-out images (at most knn_test_examples); the linear probe on h at the end, and
    # at every evaluation if set.
    c.diagnostics_examples = 512
    c.eval_linear_probe = False

    for name in methods.METHODS:
        c[name] = methods.get(name).defaults()
    if method in methods.VIT_ONLY:  # masked patches need a ViT: sslax's laptop-sized one
        c.model, c.patch_size = "vit_micro", 8
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

    ImageNet held as a folder instead: ``--config.dataset=folder:/data/imagenet
    --config.eval_split=val``. Either way the host cuts each view's crop from the whole
    original photo (:mod:`sslax.data.images`) and evaluation uses 224 px centre crops of the
    images resized to 256.

    Epoch counts become steps at ``batch_size`` (a warm-up longer than the run is clipped to
    it, as in :func:`shapes_config`); bfloat16 compute (float32 parameters and optimiser state)
    is sslax's accelerator default, not every paper's. The method's optimiser, views and head
    come from its config file. Returned unlocked.
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


# --------------------------------------------------------------------------------------------
# Validation


class ConfigError(ValueError):
    """A config that cannot run; reported as one line with exit code 2."""


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int) -> None:
    """Raises ConfigError on the first config value that cannot work. Compiles nothing.

    Checks every field: names against what exists; counts, sizes and rates against their
    ranges; the batch against the mesh and the method; the model against the image size; the
    evaluation sizes against the built-in dataset's splits (a TFDS dataset's splits are checked
    by :func:`check_split_sizes` once it is opened); each method's own section.

    >>> c = shapes_config("simclr")
    >>> c.knn_k = 0
    >>> validate_config(c, num_devices=1)
    Traceback (most recent call last):
    sslax.configs.ConfigError: knn_k must be >= 1, got 0
    """
    from sslax import models, optim, parallel
    from sslax.data import pipeline, shapes
    from sslax.methods import common

    def need(ok: bool, message: str):
        if not ok:
            raise ConfigError(message)

    def one_of(field: str, choices):
        need(
            config[field] in choices,
            f"unknown {field} {config[field]!r}; choose one of {', '.join(choices)}",
        )

    def at_least(field: str, low, note: str = ""):
        need(config[field] >= low, f"{field} must be >= {low}{note}, got {config[field]}")

    def positive(field: str):
        need(config[field] > 0, f"{field} must be > 0, got {config[field]}")

    # Names.
    one_of("method", methods.METHODS)
    one_of("model", models.MODELS)
    try:
        pipeline.check_dataset_name(config.dataset)
    except pipeline.DatasetError as e:
        raise ConfigError(str(e)) from None
    one_of("optimizer", optim.OPTIMIZERS)
    one_of("lr_scaling", optim.LR_RULES)
    one_of("recipe", common.RECIPES)
    one_of("compute_dtype", tuple(common.COMPUTE_DTYPES))
    one_of("stem", models.RESNET_STEMS)
    one_of("remat", models.REMAT)

    # The run, its schedule and its cadences.
    at_least("total_steps", 1)
    at_least("warmup_steps", 0, " (one longer than the run is clipped to it)")
    # grain's shuffle takes no negative seed; JAX's keys (seed + 1 among them) are 64-bit.
    need(0 <= config.seed < 2**62, f"seed must be in [0, 2**62), got {config.seed}")
    for field in ("log_every", "checkpoint_every", "eval_every"):
        at_least(field, 0, " (0: at the last step only)")
    _check_profile_steps(config.get("profile_steps", ()), config.total_steps)

    # The batch over the mesh.
    at_least("batch_size", 1)
    try:
        mesh_shape = dict(parallel.parse_mesh_spec(config.mesh, num_devices))
    except parallel.MeshError as e:
        raise ConfigError(str(e)) from None
    batch_shards = mesh_shape.get("data", 1) * mesh_shape.get("fsdp", 1)
    need(
        config.batch_size % batch_shards == 0,
        f"batch_size {config.batch_size} does not divide by the {batch_shards} devices of the "
        f"mesh's batch axes {mesh_shape}",
    )

    # The model and the images.
    need(
        config.image_size >= MIN_IMAGE_SIZE,
        f"image_size must be >= {MIN_IMAGE_SIZE}, got {config.image_size}",
    )
    positive("width")  # ResNets only, like stem; checked whatever the model
    positive("patch_size")  # ViTs only
    if config.model in models.VIT_PRESETS:
        need(
            config.image_size % config.patch_size == 0,
            f"image_size {config.image_size} does not divide by patch_size {config.patch_size}",
        )
    at_least("proj_hidden_dim", 1)
    at_least("proj_dim", 1)

    # Optimisation.
    positive("learning_rate")
    at_least("weight_decay", 0)
    need(0 <= config.momentum <= 1, f"momentum must be in [0, 1], got {config.momentum}")
    positive("temperature")

    # Views.
    need(
        0 < config.crop_min_scale <= 1,
        f"crop_min_scale must be in (0, 1], got {config.crop_min_scale}",
    )
    at_least("augment_strength", 0)
    at_least("data_workers", -1, " (-1: from the machine)")
    at_least("prefetch_batches", 0)
    need(
        0 < config.crop_fraction <= 1,
        f"crop_fraction must be in (0, 1], got {config.crop_fraction}",
    )

    # Evaluation and diagnostics.
    at_least("knn_k", 1)
    positive("knn_temperature")
    at_least("knn_train_examples", 2, " (the linear probe holds some out)")
    at_least("knn_test_examples", 1)
    at_least("diagnostics_examples", 2, " (uniformity compares pairs)")
    at_least("collapse_threshold", 0)
    at_least("collapse_patience", 1)
    if config.dataset == pipeline.BUILTIN:
        for field in ("train_split", "eval_split"):
            need(
                config[field] in shapes.SPLIT_SIZES,
                f"{field} {config[field]!r} is not a split of the built-in dataset; choose one "
                f"of {', '.join(shapes.SPLIT_SIZES)}",
            )
        check_split_sizes(
            config, shapes.SPLIT_SIZES[config.train_split], shapes.SPLIT_SIZES[config.eval_split]
        )

    # The method's own section (e.g. MoCo's queue against the batch); local crops asked of a
    # method other than DINO would be silently ignored.
    try:
        methods.get(config.method).check_config(config, num_batch_shards=batch_shards)
        methods.get("dino").check_unused_local_crops(config)
    except ValueError as e:
        raise ConfigError(str(e)) from None


# The smallest image side sslax runs at: the built-in dataset draws no smaller, and SimCLR's
# blur (10% of the side) and the ResNet stem's 32x reduction have little left below it.
MIN_IMAGE_SIZE = 8


def check_split_sizes(config: ml_collections.ConfigDict, train_size: int, eval_size: int) -> None:
    """Raises ConfigError when the evaluation cannot run on splits of these sizes.

    kNN, the linear probe and the diagnostics read the first ``knn_train_examples``,
    ``knn_test_examples`` and ``diagnostics_examples`` images (at most the split, or the
    held-out images read): kNN needs ``knn_k`` training images, the linear probe 2, the
    diagnostics 2 pairs of views.
    """
    train = min(config.knn_train_examples, train_size)
    if config.knn_k > train:
        raise ConfigError(
            f"knn_k {config.knn_k} exceeds the {train} training images kNN reads "
            f"(knn_train_examples {config.knn_train_examples}, split {config.train_split!r} "
            f"of {train_size})"
        )
    if train < 2:
        raise ConfigError(
            f"the linear probe needs at least 2 training images, split {config.train_split!r} "
            f"has {train_size}"
        )
    diagnostics = min(config.diagnostics_examples, config.knn_test_examples, eval_size)
    if diagnostics < 2:
        raise ConfigError(
            f"the diagnostics need at least 2 held-out images, got {diagnostics} (the least of "
            f"diagnostics_examples {config.diagnostics_examples}, knn_test_examples "
            f"{config.knn_test_examples} and split {config.eval_split!r} of {eval_size})"
        )


def _check_profile_steps(profile_steps, total_steps: int) -> None:
    if profile_steps == ():
        return
    ok = (
        isinstance(profile_steps, (tuple, list))
        and len(profile_steps) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in profile_steps)
        and 0 <= profile_steps[0] < profile_steps[1] <= total_steps
    )
    if not ok:
        raise ConfigError(
            f"profile_steps must be () or (start, stop) with 0 <= start < stop <= total_steps "
            f"{total_steps}, got {profile_steps!r}"
        )
