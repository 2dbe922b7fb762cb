"""DINOv2 on ImageNet-1k: facebookresearch/dinov2's ``ssl_default_config.yaml`` on ViT-S/14.

The official defaults (read at commit fc49f49d): 100 "epochs" of 1,250 iterations at batch
1,024 (64 per GPU), AdamW at 0.004 x sqrt(B / 1024) (``sqrt_wrt_1024``: 0.000125 x sqrt(B)),
10 warm-up epochs, weight decay cosine 0.04 -> 0.4, gradients clipped to 3, the last layer
frozen for 1 epoch; teacher momentum 0.992 cosine to 1, teacher temperature 0.04 -> 0.07 over
30 epochs, DINO's centring (``centering: "centering"``; "sinkhorn_knopp" is the option the
paper uses); one shared head of 65,536 prototypes (hidden 2048, bottleneck 256, 3 layers);
iBOT weight 1 on half of the global crops with 10-50% of patches masked, KoLeo 0.1; 8 local
crops; stochastic depth 0.3. The default config's backbone is ViT-L/16; this file takes
ViT-S/14 (``--config.model=vit_base`` for ViT-B/14).

Departures: local crops of 98 px (96 does not divide into 14 px patches); sslax's multi-crop
areas are DINO's (0.4-1 and 0.05-0.4; official 0.32-1 and 0.05-0.32); random scattered masks
instead of blocks; stochastic depth grows over the blocks (official: uniform); no layer scale,
layer-wise rate decay (0.9) or patch-embedding rate multiplier (0.2); the rate decays to 0
(official 1e-6); bfloat16 compute.
"""

from sslax import configs

BATCH_SIZE = 1024
EPOCH_LENGTH = 1250  # the official OFFICIAL_EPOCH_LENGTH, in iterations


def get_config():
    c = configs.imagenet_config(
        "dinov2", batch_size=BATCH_SIZE, epochs=1, warmup_epochs=0, model="vit_small"
    )
    c.total_steps = 100 * EPOCH_LENGTH
    c.warmup_steps = 10 * EPOCH_LENGTH
    c.checkpoint_every = 5 * EPOCH_LENGTH
    c.patch_size = 14
    c.optimizer = "adamw"
    c.learning_rate = 0.004 / 32  # x sqrt(B): 0.004 at batch 1024
    c.lr_scaling = "sqrt"
    c.weight_decay = 0.04
    c.dinov2.update(
        dict(
            out_dim=65536,
            hidden_dim=2048,
            bottleneck_dim=256,
            num_local=8,
            local_size=98,
            teacher_momentum_base=0.992,
            teacher_temp=0.07,
            warmup_teacher_temp=0.04,
            warmup_teacher_temp_steps=30 * EPOCH_LENGTH,
            weight_decay_end=0.4,
            clip_grad=3.0,
            freeze_last_layer_steps=EPOCH_LENGTH,
            drop_path_rate=0.3,
            koleo_weight=0.1,
            ibot_weight=1.0,
            mask_probability=0.5,
            mask_ratio_min=0.1,
            mask_ratio_max=0.5,
            centering_mode="centering",
        )
    )
    return c.lock()
