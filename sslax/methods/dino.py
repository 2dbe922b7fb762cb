"""DINO (Caron et al. 2021, arXiv 2104.14294): self-distillation with no labels.

A student (backbone + DINO head: MLP, L2-normalised bottleneck, weight-normalised last layer
over K prototypes) is trained to predict, from every crop of an image, the teacher's softmax
over the prototypes for the other global crops. The teacher is an EMA of the student (momentum
cosine from ``teacher_momentum_base`` to 1, applied with the new student parameters) and sees
only the two global crops; the student also sees the local crops (multi-crop). Two operations
on the teacher's logits keep the pair from collapsing, each against one failure mode (paper
Sec. 5.3, Fig. 7):

* centring subtracts a running mean ``c`` of the teacher logits, so no prototype can win on
  every image (``centering=False`` keeps c at 0: one-prototype collapse, teacher entropy -> 0);
* sharpening divides by a teacher temperature below the student's (0.04 vs 0.1), so the
  targets stay peaked (``sharpening=False`` gives the teacher the student's temperature:
  uniform collapse, teacher entropy -> log K).

Two departures are switches, both off by default: ``centering_mode="sinkhorn_knopp"`` makes
the targets Sinkhorn-Knopp codes over the global batch (DINOv2's teacher: every prototype gets
an equal share of the batch, so the targets cannot drift to uniform as a whole; ``centering``
then has no centre to switch off), and ``views="recipe"`` gives the crops the colour distortion
and crop area of ``config.recipe`` that the two-view methods use instead of DINO's own (the
laptop config, experiments/configs/dino.py, uses both: on the built-in data DINO's own views
and centring learned colour, not shape).

The recipe follows the official code (facebookresearch/dino, main_dino.py): AdamW (their
default; ``config.optimizer`` may also be "sgd" or "lars", as there) with the learning rate
scaled by batch/256, warm-up and cosine; weight decay on weights only (no biases or norm
parameters), cosine from ``config.weight_decay`` to ``weight_decay_end``; every parameter
tensor's gradient clipped to norm ``clip_grad`` separately (``utils.clip_gradients``, not one
global norm); the head's last layer frozen for ``freeze_last_layer_steps`` (its gradient
dropped, so the optimiser neither moves it nor starts its moments); the teacher temperature
warmed up linearly from ``warmup_teacher_temp``; the backbone applied to each crop size
separately (BatchNorm statistics per size, as ``MultiCropWrapper``) and the head to all crops
at once. The teacher runs in training mode like the official one, so it normalises with its
own batch statistics and keeps its own running averages; only parameters are averaged. ViT
students get stochastic depth (``drop_path_rate``), the teacher none.

Metrics: ``embedding_std`` of the student's logits for the global crops (L2-normalised: 0 when
every image gives the same output, as in both collapses; 1/sqrt(K) for isotropic outputs);
``teacher_entropy`` and ``teacher_max_prob``, per-image means over the teacher's centred,
sharpened softmax; ``teacher_batch_entropy``, the entropy of its batch mean (how many
prototypes are in use); ``teacher_temp``, ``ema_momentum``, ``learning_rate``,
``weight_decay``, ``grad_norm`` (before clipping).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import augment, diagnostics, losses, optim
from sslax.methods import common
from sslax.models import DINOHead, last_layer_mask, vit_from_name
from sslax.models.vit import VIT_PRESETS


# The multi-crop settings; only DINO reads them (check_unused_local_crops).
LOCAL_CROP_FIELDS = ("num_local", "local_size")
# How the teacher's logits become targets: DINO's running centre, or Sinkhorn-Knopp over the
# batch (DINOv2's default).
CENTERINGS = ("centering", "sinkhorn_knopp")
# The crops' colour distortion: "dino" is DINO's multi-crop recipe (its mild jitter, scaled by
# jitter_strength, global crops of area 0.4-1); "recipe" is the two views that config.recipe,
# augment_strength and crop_min_scale give every two-view method, local crops cut like them.
VIEWS = ("dino", "recipe")
LOCAL_MIN_SCALE = 0.05  # the smallest local crop's share of the image, as DINO's


def defaults() -> ml_collections.ConfigDict:
    """DINO's own hyperparameters at the shapes scale (ImageNet values in dino_imagenet.py)."""
    c = ml_collections.ConfigDict()
    # Head: K prototypes behind a small MLP (DINO: 65536, hidden 2048, bottleneck 256).
    c.out_dim = 1024
    c.hidden_dim = 256
    c.bottleneck_dim = 64
    c.num_layers = 3
    c.use_bn_in_head = True
    c.norm_last_layer = True
    # Multi-crop: two global crops at config.image_size, num_local crops at local_size.
    c.local_size = 16
    c.num_local = 4
    c.views = "dino"  # or "recipe" (VIEWS)
    c.jitter_strength = 1.0  # scales the colour jitter of DINO's views; 1: DINO's
    # Teacher.
    c.teacher_momentum_base = 0.996
    c.student_temp = 0.1
    c.teacher_temp = 0.04
    c.warmup_teacher_temp = 0.04
    c.warmup_teacher_temp_steps = 0  # longer than the run: clipped to it, like every warm-up
    c.center_momentum = 0.9
    c.centering_mode = "centering"  # or "sinkhorn_knopp" (CENTERINGS)
    c.sinkhorn_iters = 3
    # Anti-collapse switches. sharpening=False sets the teacher temperature to the student's,
    # so the targets are no sharper than the predictions.
    c.centering = True
    c.sharpening = True
    # Optimisation: weight decay from config.weight_decay at step 0 to this at the end.
    c.weight_decay_end = 0.4
    c.clip_grad = 3.0  # per-tensor gradient norm; 0 disables
    c.freeze_last_layer_steps = 25  # longer than the run: frozen throughout
    c.drop_path_rate = 0.1  # student ViTs only
    # DINOv2's KoLeo regulariser on the student's backbone features of each global crop
    # (losses.koleo_loss); 0 is DINO v1, DINOv2 uses 0.1.
    c.koleo_weight = 0.0
    return c


@flax.struct.dataclass
class DINOState:
    """The student (``params``, ``batch_stats``, ``opt_state``), the teacher and the centre."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    teacher_params: Any
    teacher_batch_stats: Any
    center: jax.Array


class MultiCropEncoder(nn.Module):
    """Backbone + head, ``images -> (h, z)``, that also takes a list of crop batches."""

    backbone: nn.Module
    head: nn.Module

    def __call__(self, images, *, train: bool):
        h = self.backbone(images, train=train)
        return h, self.head(h, train=train)

    def multi_crop(self, crops, *, train: bool):
        """Crops of different sizes, ``(N, k, size, size, 3)`` each (:func:`augment.multi_crop`):
        the backbone once per size, the head on them all. Returns ``(h, z)``, ``(N, C, ...)``
        each, C the total number of crops, in the order of ``crops``.

        Every array keeps the image axis first, so with the batch sharded over images no crop,
        feature or output leaves its device.
        """
        h = jnp.concatenate(
            [
                common.per_image(self.backbone(common.flatten_views(c), train=train), c.shape[1])
                for c in crops
            ],
            axis=1,
        )
        z = self.head(common.flatten_views(h), train=train)
        return h, common.per_image(z, h.shape[1])


def teacher_temperature(step, config: ml_collections.ConfigDict, section: str = "dino"):
    """Linear from ``warmup_teacher_temp`` at step 0 to ``teacher_temp`` at the end of warm-up.

    The warm-up of ``dino.warmup_teacher_temp_steps`` is clipped to the run like every
    warm-up (:func:`sslax.optim.clipped_warmup`). Without sharpening the teacher uses the
    student's temperature throughout.
    """
    cfg = config[section]
    if not cfg.sharpening:
        return jnp.full(jnp.shape(step), cfg.student_temp, jnp.float32)
    warmup = optim.clipped_warmup(cfg.warmup_teacher_temp_steps, config.total_steps)
    if warmup == 0:
        return jnp.full(jnp.shape(step), cfg.teacher_temp, jnp.float32)
    progress = jnp.minimum(step / warmup, 1.0)
    return cfg.warmup_teacher_temp + (cfg.teacher_temp - cfg.warmup_teacher_temp) * progress


def weight_decay_schedule(
    config: ml_collections.ConfigDict, section: str = "dino"
) -> optax.Schedule:
    """Cosine from ``config.weight_decay`` at step 0 to ``dino.weight_decay_end`` at the end
    (``section``: the config section holding it, "dinov2" for DINOv2)."""
    start, end = config.weight_decay, config[section].weight_decay_end
    total = max(config.total_steps, 1)

    def schedule(step):
        progress = jnp.minimum(step / total, 1.0)
        return end + 0.5 * (start - end) * (1.0 + jnp.cos(jnp.pi * progress))

    return schedule


def _clip_each_tensor(max_norm: float) -> optax.GradientTransformation:
    """Scales each gradient tensor to norm <= max_norm on its own (DINO's clip_gradients)."""

    def clip(updates, params=None):
        del params
        return jax.tree.map(
            lambda g: g * jnp.minimum(1.0, max_norm / (jnp.linalg.norm(g) + 1e-6)), updates
        )

    return optax.stateless(clip)


def optimizer(
    config: ml_collections.ConfigDict,
    lr: optax.Schedule,
    wd: optax.Schedule,
    section: str = "dino",
) -> optax.GradientTransformation:
    """``config.optimizer`` with DINO's scheduled weight decay, clipping and frozen last layer.

    The weight decay of :func:`sslax.optim.make_optimizer` (weights only) follows ``wd``
    instead of staying constant; gradients are clipped tensor by tensor first.
    """
    frozen = config[section].freeze_last_layer_steps

    def group(offset: int):
        # A group released at step `offset` counts its own steps from there, while its
        # schedules follow the global step.
        return optax.inject_hyperparams(optim.make_optimizer, static_args="name")(
            name=config.optimizer,
            schedule=lambda count: lr(count + offset),
            weight_decay=lambda count: wd(count + offset),
            momentum=config.momentum,
        )

    def labels(params):
        return jax.tree.map(lambda last: "last" if last else "rest", last_layer_mask(params))

    clip = config[section].clip_grad
    return optax.chain(
        _clip_each_tensor(clip) if clip > 0 else optax.identity(),
        optax.multi_transform(
            {"last": optim.frozen_for(frozen, group(frozen)), "rest": group(0)}, labels
        ),
    )


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    """Raises ValueError for ``config.dino`` values DINO cannot run with."""
    check_section(config, "dino")


def check_section(config: ml_collections.ConfigDict, section: str) -> None:
    """Raises ValueError for values of DINO's fields in ``config[section]`` (DINO, DINOv2)."""
    cfg = config[section]
    common.check_section(
        config,
        section,
        {
            "out_dim": common.AT_LEAST_ONE,
            "hidden_dim": common.AT_LEAST_ONE,
            "bottleneck_dim": common.AT_LEAST_ONE,
            "num_layers": common.AT_LEAST_ONE,
            "num_local": common.NON_NEGATIVE,
            "local_size": common.AT_LEAST_ONE,
            "jitter_strength": common.NON_NEGATIVE,
            "student_temp": common.POSITIVE,
            "teacher_temp": common.POSITIVE,
            "warmup_teacher_temp": common.POSITIVE,
            "warmup_teacher_temp_steps": common.NON_NEGATIVE,
            "center_momentum": common.UNIT_INTERVAL,
            "teacher_momentum_base": common.UNIT_INTERVAL,
            "clip_grad": (lambda v: v >= 0, ">= 0 (0: no clipping)"),
            "freeze_last_layer_steps": common.NON_NEGATIVE,
            "weight_decay_end": common.NON_NEGATIVE,
            "drop_path_rate": (lambda v: 0 <= v < 1, "in [0, 1)"),
            "koleo_weight": common.NON_NEGATIVE,
            "sinkhorn_iters": common.AT_LEAST_ONE,
        },
    )
    for name, allowed in (("views", VIEWS), ("centering_mode", CENTERINGS)):
        if cfg[name] not in allowed:
            raise ValueError(
                f"{section}.{name} must be one of {', '.join(allowed)}, got {cfg[name]!r}"
            )
    if cfg.views != "dino" and cfg.jitter_strength != 1.0:
        raise ValueError(
            f"{section}.jitter_strength {cfg.jitter_strength} scales DINO's own views, but "
            f"{section}.views is {cfg.views!r}: set augment_strength instead, or "
            f"{section}.views='dino'"
        )
    # Local crops are smaller crops of the image than the global ones (which are image_size);
    # larger only upsamples. As large works (tests/test_dino.py traces it).
    if cfg.num_local and cfg.local_size > config.image_size:
        raise ValueError(
            f"{section}.local_size must be <= image_size {config.image_size} (the global crops' "
            f"size; local crops are smaller), got {cfg.local_size}"
        )
    if config.model in VIT_PRESETS and cfg.num_local and cfg.local_size % config.patch_size:
        raise ValueError(
            f"{section}.local_size {cfg.local_size} does not divide by patch_size "
            f"{config.patch_size}"
        )


def check_unused_local_crops(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError when a method other than DINO is given local crops it would ignore.

    Only DINO makes local crops; ``config.dino``'s multi-crop settings changed from
    :func:`defaults` under another method are a request that would silently do nothing.
    ``num_local = 0`` asks for none and always passes.
    """
    if config.method == "dino" or "dino" not in config or not config.dino.num_local:
        return
    default = defaults()
    for name in LOCAL_CROP_FIELDS:
        if config.dino[name] != default[name]:
            raise ValueError(
                f"dino.{name}={config.dino[name]} asks for local crops, but only method 'dino' "
                f"uses local crops (method is {config.method!r}); leave dino.{name} at "
                f"{default[name]} or use --config.method=dino"
            )


def recipe_of(config: ml_collections.ConfigDict, section: str = "dino") -> augment.Recipe:
    """The crops of ``config[section].views``: two global crops at ``image_size``, then
    ``num_local`` local crops at ``local_size``."""
    cfg = config[section]
    if cfg.views == "dino":
        return augment.dino_multicrop_recipe(
            global_size=config.image_size,
            local_size=cfg.local_size,
            num_local=cfg.num_local,
            jitter_strength=cfg.jitter_strength,
        )
    global_views = common.view_recipe(config).views
    # Local crops: the first view's distortion on smaller pieces, below the global crops' area.
    local = dataclasses.replace(
        global_views[0],
        size=cfg.local_size,
        crop_scale=(min(LOCAL_MIN_SCALE, config.crop_min_scale), config.crop_min_scale),
    )
    return augment.Recipe(f"dino_{config.recipe}", global_views + (local,) * cfg.num_local)


def teacher_targets(
    logits: jax.Array,
    center: jax.Array,
    temperature,
    config: ml_collections.ConfigDict,
    section: str = "dino",
) -> tuple[jax.Array, jax.Array]:
    """Teacher logits [..., K] -> (logits, centre) that :func:`sslax.losses.dino_loss` turns
    into targets by ``softmax((logits - centre) / temperature)``.

    DINO's centring passes them through with the running centre. Sinkhorn-Knopp (DINOv2)
    returns ``temperature * log Q`` and a zero centre, Q the codes of
    :func:`sslax.losses.sinkhorn_knopp` at epsilon = ``temperature`` over every row (an equal
    share of the batch per prototype), so the same loss reads Q as the targets.
    """
    cfg = config[section]
    if cfg.centering_mode == "centering":
        return logits, center
    codes = losses.sinkhorn_knopp(
        logits.reshape(-1, logits.shape[-1]), epsilon=temperature, num_iters=cfg.sinkhorn_iters
    )
    targets = temperature * jnp.log(jnp.maximum(codes, 1e-30))
    return targets.reshape(logits.shape), jnp.zeros_like(center)


def head_of(config: ml_collections.ConfigDict, section: str = "dino") -> DINOHead:
    """The DINO head that ``config[section]`` describes (DINO's, DINOv2's)."""
    cfg = config[section]
    return DINOHead(
        out_dim=cfg.out_dim,
        hidden_dim=cfg.hidden_dim,
        bottleneck_dim=cfg.bottleneck_dim,
        num_layers=cfg.num_layers,
        use_bn=cfg.use_bn_in_head,
        norm_last_layer=cfg.norm_last_layer,
        dtype=common.compute_dtype(config),
    )


def make(config: ml_collections.ConfigDict) -> common.Method:
    check_config(config)
    cfg = config.dino
    dtype = common.compute_dtype(config)
    head = head_of(config)
    teacher_backbone = common.backbone(config)
    student_backbone = teacher_backbone
    if config.model in VIT_PRESETS:
        student_backbone = vit_from_name(
            config.model,
            patch_size=config.patch_size,
            image_size=config.image_size,
            dtype=dtype,
            drop_path_rate=cfg.drop_path_rate,
            remat=config.remat,
        )
    student = MultiCropEncoder(backbone=student_backbone, head=head)
    teacher = MultiCropEncoder(backbone=teacher_backbone, head=head)

    lr = common.learning_rate_schedule(config)
    wd = weight_decay_schedule(config)
    tx = optimizer(config, lr, wd)
    recipe = recipe_of(config)

    def init(rng, images):
        params, batch_stats = common.init_variables(student, rng, images)
        return DINOState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            # Copies, so that donating the state never donates one buffer twice.
            teacher_params=jax.tree.map(jnp.copy, params),
            teacher_batch_stats=jax.tree.map(jnp.copy, batch_stats),
            center=jnp.zeros((cfg.out_dim,), jnp.float32),
        )

    def train_step(state, batch, rng):
        view_key, drop_key = common.split_step_key(rng, state.step)
        crops = common.batch_views(view_key, batch, recipe)
        teacher_temp = teacher_temperature(state.step, config)

        (_, t), teacher_updates = teacher.apply(
            {"params": state.teacher_params, "batch_stats": state.teacher_batch_stats},
            # The two global crops: the first of the first size (the locals share that array
            # when they are as large).
            common.flatten_views(crops[0][:, :2]),
            train=True,
            mutable=["batch_stats"],
        )
        # [2, N, K] for the loss: a transpose keeps each device's rows on it.
        t = jax.lax.stop_gradient(jnp.swapaxes(common.per_image(t, 2), 0, 1))
        t_targets, center = teacher_targets(t, state.center, teacher_temp, config)

        def loss_fn(params):
            (h, s), updated = student.apply(
                {"params": params, "batch_stats": state.batch_stats},
                crops,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": drop_key},
                method=MultiCropEncoder.multi_crop,
            )
            loss = losses.dino_loss(
                jnp.swapaxes(s, 0, 1),
                t_targets,
                center,
                student_temp=cfg.student_temp,
                teacher_temp=teacher_temp,
            )
            if cfg.koleo_weight:
                # DINOv2: one KoLeo term per global crop, summed.
                loss += cfg.koleo_weight * sum(losses.koleo_loss(h[:, v]) for v in range(2))
            return loss, (s, updated["batch_stats"])

        (loss, (s, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = common.apply_gradients(state, tx, grads, batch_stats)
        params = new_state.params

        momentum = common.cosine_ema_momentum(
            state.step, base=cfg.teacher_momentum_base, total_steps=config.total_steps
        )
        targets = jax.nn.softmax((t_targets - center) / teacher_temp, axis=-1)
        new_center = state.center
        if cfg.centering and cfg.centering_mode == "centering":
            new_center = losses.dino_center_update(new_center, t, momentum=cfg.center_momentum)
        new_state = new_state.replace(
            teacher_params=common.ema_update(state.teacher_params, params, momentum),
            teacher_batch_stats=teacher_updates["batch_stats"],
            center=new_center,
        )
        metrics = {
            "loss": loss,
            "embedding_std": diagnostics.embedding_std(common.flatten_views(s[:, :2])),
            "teacher_entropy": jnp.mean(diagnostics.entropy(targets)),
            "teacher_max_prob": jnp.mean(jnp.max(targets, axis=-1)),
            "teacher_batch_entropy": diagnostics.entropy(jnp.mean(targets, axis=(0, 1))),
            "teacher_temp": teacher_temp,
            "ema_momentum": momentum,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": lr(state.step),
            "weight_decay": wd(state.step),
        }
        return new_state, metrics

    return common.Method(
        recipe=recipe,
        init=init,
        train_step=train_step,
        encode=common.encoder_of(student),
        ema_encode=common.encoder_of(
            teacher, params="teacher_params", batch_stats="teacher_batch_stats"
        ),
        view_key=common.first_of_split_step_key,
    )
