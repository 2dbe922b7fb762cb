"""MAE with ViT-B/16 on ImageNet: the 1600-epoch recipe of He et al. 2022 (arXiv 2111.06377).

The official ``main_pretrain.py`` settings (paper Table 8 / App. A.1): batch 4,096, AdamW with
betas (0.9, 0.95) at base rate 1.5e-4 x B/256, weight decay 0.05, 40 warm-up epochs then cosine,
1600 epochs; mask ratio 0.75; decoder of 8 blocks, width 512, 16 heads; normalised-pixel
targets; views a random resized crop of area (0.2, 1) and a flip only. Reported: linear top-1
68.0, fine-tuned 83.6.

Departures: learned position embeddings (official: fixed 2-D sin-cos); bfloat16 compute.
"""

from sslax import configs


def get_config():
    c = configs.imagenet_config(
        "mae",
        batch_size=4096,
        epochs=1600,
        warmup_epochs=40,
        model="vit_base",
        checkpoint_every_epochs=20,
    )
    c.patch_size = 16
    c.optimizer = "adamw"
    c.learning_rate = 1.5e-4
    c.lr_scaling = "linear"
    c.weight_decay = 0.05
    c.crop_min_scale = 0.2
    c.mae.mask_ratio = 0.75
    c.mae.decoder_dim = 512
    c.mae.decoder_depth = 8
    c.mae.decoder_heads = 16
    c.mae.norm_pix = True
    c.mae.adam_b2 = 0.95
    return c.lock()
