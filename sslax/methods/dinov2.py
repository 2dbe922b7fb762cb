"""DINOv2 (Oquab et al. 2023, arXiv 2304.07193): DINO + iBOT's masked patches + KoLeo.

The student ViT gets DINO's multi-crop views, some of its global crops with random patches
replaced by a learned mask token; the teacher (an EMA of the student) sees the global crops
whole. One DINO head (shared for class and patch tokens: the official ``separate_head`` is
False) maps tokens to K prototypes. Three terms, as ``ssl_meta_arch.py``:

* DINO's image loss (:func:`sslax.losses.dino_loss`): every student crop's class token predicts
  the teacher's for the other global crop;
* iBOT's patch loss (:func:`sslax.losses.ibot_patch_loss`): at every masked patch of a student
  global crop, the teacher's prediction for that patch of the unmasked crop;
* KoLeo (:func:`sslax.losses.koleo_loss`, weight 0.1) on the student's class tokens of each
  global crop (before the head), spreading them over the sphere.

Teacher targets: DINO's centring (running centres of class and patch logits, momentum 0.9,
then the sharpened softmax), or with ``centering_mode="sinkhorn_knopp"`` DINOv2's default,
Sinkhorn-Knopp over the batch (:func:`sslax.losses.sinkhorn_knopp` at epsilon = the teacher
temperature, 3 rounds): for class tokens over the 2N global crops, for patch tokens over all
of them (the official code uses only the masked ones: fixed shapes under jit).

Masks, per global crop: with probability ``mask_probability`` (0.5) a random share U(0.1, 0.5)
of the patches, drawn from the image's global index. The official ``MaskingGenerator`` masks
blocks and spreads ratios evenly over the batch; this masks scattered patches.

The optimisation and teacher schedules are DINO's (:mod:`sslax.methods.dino`: AdamW, weight
decay cosine, per-tensor clipping, frozen last layer, teacher momentum and temperature).
DINOv2's layer-wise learning-rate decay and patch-embedding rate multiplier are not carried.
"""

from __future__ import annotations


import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslax import diagnostics, losses
from sslax.methods import common, dino
from sslax.models import vit_from_name
from sslax.models.vit import VIT_PRESETS


def defaults() -> ml_collections.ConfigDict:
    """DINO's fields (:func:`sslax.methods.dino.defaults`) plus DINOv2's own, shapes scale."""
    c = dino.defaults()
    c.use_bn_in_head = False
    c.koleo_weight = 0.1
    c.ibot_weight = 1.0
    c.mask_probability = 0.5
    c.mask_ratio_min = 0.1
    c.mask_ratio_max = 0.5
    return c


def check_config(config: ml_collections.ConfigDict, *, num_batch_shards: int = 1) -> None:
    if config.model not in VIT_PRESETS:
        raise ValueError(
            f"dinov2 needs a ViT model ({', '.join(VIT_PRESETS)}), got model "
            f"{config.model!r}: add e.g. --config.model=vit_micro --config.patch_size=8, or "
            f"start from --config=experiments/configs/dinov2.py"
        )
    dino.check_section(config, "dinov2")
    section = config.dinov2
    common.check_section(
        config,
        "dinov2",
        {
            "ibot_weight": common.NON_NEGATIVE,
            "mask_probability": common.UNIT_INTERVAL,
            "mask_ratio_min": common.UNIT_INTERVAL,
            "mask_ratio_max": common.UNIT_INTERVAL,
        },
    )
    if section.mask_ratio_min > section.mask_ratio_max:
        raise ValueError(
            f"dinov2.mask_ratio_min {section.mask_ratio_min} must be <= mask_ratio_max "
            f"{section.mask_ratio_max}"
        )
    if section.use_bn_in_head:
        raise ValueError(
            "dinov2.use_bn_in_head must be False: DINOv2's heads have no BatchNorm, and its "
            "teacher runs in evaluation mode"
        )


@flax.struct.dataclass
class DINOv2State(dino.DINOState):
    """DINO's state (student, teacher, the class-token centre) and the patch-logit centre."""

    patch_center: jax.Array


class DINOv2Encoder(nn.Module):
    """A ViT with a mask token and the DINO head: ``images -> (h, z)`` for evaluation."""

    backbone: nn.Module
    head: nn.Module

    def __call__(self, images, *, train: bool):
        h = self.backbone(images, train=train)
        return h, self.head(h, train=train)

    def global_tokens(self, crops, masks, *, train: bool):
        """Global crops ``(N, 2, S, S, 3)``, masks ``(N, 2, L)`` or None -> the class tokens
        before the head ``(N, 2, D)``, class logits ``(N, 2, K)``, patch logits
        ``(N, 2, L, K)``."""
        flat_masks = None if masks is None else common.flatten_views(masks)
        tokens = self.backbone(
            common.flatten_views(crops), train=train, mask=flat_masks, tokens=True
        )
        logits = self.head(tokens.reshape(-1, tokens.shape[-1]), train=train)
        logits = logits.reshape(*tokens.shape[:2], -1)
        return (
            common.per_image(tokens[:, 0], 2),
            common.per_image(logits[:, 0], 2),
            common.per_image(logits[:, 1:], 2),
        )

    def local_logits(self, crops, *, train: bool):
        """Local crops ``(N, k, s, s, 3)`` -> class logits ``(N, k, K)``."""
        h = self.backbone(common.flatten_views(crops), train=train)
        return common.per_image(self.head(h, train=train), crops.shape[1])


def random_patch_masks(key, indices, num_patches: int, section) -> jax.Array:
    """``(N, 2, L)`` masks: per global crop, with probability ``mask_probability``, a random
    share in [mask_ratio_min, mask_ratio_max] of the patches; drawn from each image's index."""

    def one(index):
        crop_keys = jax.random.split(jax.random.fold_in(key, index), 2)

        def crop(k):
            use_key, ratio_key, order_key = jax.random.split(k, 3)
            used = jax.random.uniform(use_key) < section.mask_probability
            ratio = jax.random.uniform(
                ratio_key, minval=section.mask_ratio_min, maxval=section.mask_ratio_max
            )
            rank = jnp.argsort(jnp.argsort(jax.random.uniform(order_key, (num_patches,))))
            return used & (rank < jnp.floor(ratio * num_patches))

        return jax.vmap(crop)(crop_keys)

    return jax.vmap(one)(indices)


def view_key(rng: jax.Array, step) -> jax.Array:
    """The key of the step's views (the first of three: views, masks, stochastic depth)."""
    return jax.random.split(common.step_key(rng, step), 3)[0]


def make(config: ml_collections.ConfigDict) -> common.Method:
    check_config(config)
    cfg = config.dinov2
    dtype = common.compute_dtype(config)
    head = dino.head_of(config, "dinov2")

    def backbone(drop_path_rate):
        return vit_from_name(
            config.model,
            patch_size=config.patch_size,
            image_size=config.image_size,
            dtype=dtype,
            drop_path_rate=drop_path_rate,
            remat=config.remat,
            mask_token=True,
        )

    student = DINOv2Encoder(backbone=backbone(cfg.drop_path_rate), head=head)
    teacher = DINOv2Encoder(backbone=backbone(0.0), head=head)
    lr = common.learning_rate_schedule(config)
    wd = dino.weight_decay_schedule(config, "dinov2")
    tx = dino.optimizer(config, lr, wd, "dinov2")
    recipe = dino.recipe_of(config, "dinov2")
    num_patches = (config.image_size // config.patch_size) ** 2

    def init(rng, images):
        params, batch_stats = common.init_variables(student, rng, images)
        return DINOv2State(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            teacher_params=jax.tree.map(jnp.copy, params),
            teacher_batch_stats=jax.tree.map(jnp.copy, batch_stats),
            center=jnp.zeros((cfg.out_dim,), jnp.float32),
            patch_center=jnp.zeros((cfg.out_dim,), jnp.float32),
        )

    def train_step(state, batch, rng):
        view_key_, mask_key, drop_key = jax.random.split(common.step_key(rng, state.step), 3)
        crops = common.batch_views(view_key_, batch, recipe)
        global_crops = crops[0][:, :2]
        local_crops = crops[0][:, 2:] if len(crops) == 1 else crops[1]
        masks = random_patch_masks(mask_key, batch["index"], num_patches, cfg)
        teacher_temp = dino.teacher_temperature(state.step, config, "dinov2")

        _, t_cls, t_patch = teacher.apply(
            {"params": state.teacher_params, "batch_stats": state.teacher_batch_stats},
            global_crops,
            None,
            train=False,
            method=DINOv2Encoder.global_tokens,
        )
        # [2, N, K] and [2, N, L, K], constants.
        t_cls = jax.lax.stop_gradient(jnp.swapaxes(t_cls, 0, 1))
        t_patch = jax.lax.stop_gradient(jnp.swapaxes(t_patch, 0, 1))
        cls_targets, cls_center = dino.teacher_targets(
            t_cls, state.center, teacher_temp, config, "dinov2"
        )
        patch_targets, patch_center = dino.teacher_targets(
            t_patch, state.patch_center, teacher_temp, config, "dinov2"
        )

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            rngs = {"dropout": drop_key}
            cls_tokens, s_cls, s_patch = student.apply(
                variables,
                global_crops,
                masks,
                train=True,
                rngs=rngs,
                method=DINOv2Encoder.global_tokens,
            )
            if cfg.num_local:
                s_local = student.apply(
                    variables,
                    local_crops,
                    train=True,
                    rngs=rngs,
                    method=DINOv2Encoder.local_logits,
                )
                s_cls = jnp.concatenate([s_cls, s_local], axis=1)
            temps = dict(student_temp=cfg.student_temp, teacher_temp=teacher_temp)
            image_loss = losses.dino_loss(
                jnp.swapaxes(s_cls, 0, 1), cls_targets, cls_center, **temps
            )
            patch_loss = losses.ibot_patch_loss(
                jnp.swapaxes(s_patch, 0, 1),
                patch_targets,
                jnp.swapaxes(masks, 0, 1),
                patch_center,
                **temps,
            )
            koleo = sum(losses.koleo_loss(cls_tokens[:, v]) for v in range(2))
            loss = image_loss + cfg.ibot_weight * patch_loss + cfg.koleo_weight * koleo
            return loss, (s_cls, image_loss, patch_loss, koleo)

        (loss, (s_cls, image_loss, patch_loss, koleo)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params)
        new_state = common.apply_gradients(state, tx, grads, state.batch_stats)
        momentum = common.cosine_ema_momentum(
            state.step, base=cfg.teacher_momentum_base, total_steps=config.total_steps
        )
        center, patch_center_new = state.center, state.patch_center
        if cfg.centering and cfg.centering_mode == "centering":  # as DINO's
            center = losses.dino_center_update(center, t_cls, momentum=cfg.center_momentum)
            flat_patches = t_patch.reshape(2, -1, t_patch.shape[-1])
            patch_center_new = losses.dino_center_update(
                patch_center_new, flat_patches, momentum=cfg.center_momentum
            )
        new_state = new_state.replace(
            teacher_params=common.ema_update(state.teacher_params, new_state.params, momentum),
            center=center,
            patch_center=patch_center_new,
        )
        metrics = {
            "loss": loss,
            "dino_loss": image_loss,
            "ibot_loss": patch_loss,
            "koleo_loss": koleo,
            "masked_fraction": jnp.mean(masks.astype(jnp.float32)),
            "embedding_std": diagnostics.embedding_std(common.flatten_views(s_cls[:, :2])),
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
        view_key=view_key,
    )
