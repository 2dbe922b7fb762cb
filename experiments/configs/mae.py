"""MAE on the built-in shapes dataset: the laptop scale of `--config.method=mae`.

sslax's laptop ViT (``vit_micro``: width 128, 4 blocks, 4 heads) on 8 px patches (16 patches of
the 32 px images; 4 px patches made a step 3x slower), 75% of them hidden, a decoder of 2
blocks of width 128 (official: 8 of 512), normalised-pixel targets; AdamW at 1.5e-4 x B/256
with betas (0.9, 0.95) and weight decay 0.05, as the official recipe; views a crop of area
0.2-1 and a flip.
"""

from sslax import configs


def get_config():
    c = configs.shapes_config("mae")
    c.model = "vit_micro"
    c.patch_size = 8
    c.optimizer = "adamw"
    c.learning_rate = 1.5e-4
    c.weight_decay = 0.05
    c.crop_min_scale = 0.2
    return c.lock()
