"""DINOv2 on the built-in shapes dataset: the laptop scale of `--config.method=dinov2`.

sslax's laptop ViT (``vit_micro``: width 128, 4 blocks) on 8 px patches, DINO's laptop head
(1024 prototypes, hidden 256, bottleneck 64; no BatchNorm, as DINOv2's), two global crops at
32 px and four local crops at 16 px, and DINO's official ViT optimisation (AdamW 5e-4 x B/256,
weight decay cosine 0.04 -> 0.4, clipping 3, last layer frozen for 25 steps, teacher momentum
0.99 cosine to 1); DINOv2's iBOT patch loss (weight 1) on half of the global crops with 10-50%
of their patches masked, and KoLeo (weight 0.1); DINO's centring, as DINOv2's default config
(``dinov2.centering_mode="sinkhorn_knopp"`` for the paper's). A step sees about 9 times
SimCLR's tokens through the network (the head runs on every patch token), so the run is 200
steps, to stay within 10 minutes.
"""

from sslax import configs


def get_config():
    c = configs.shapes_config("dinov2")
    c.model = "vit_micro"
    c.patch_size = 8
    c.total_steps = 200
    c.optimizer = "adamw"
    c.learning_rate = 5e-4
    c.warmup_steps = c.total_steps // 10
    c.weight_decay = 0.04
    c.dinov2.teacher_momentum_base = 0.99
    return c.lock()
