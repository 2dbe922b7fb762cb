"""DINO on the built-in shapes dataset: the laptop setting of the DINO recipe.

The shared narrow ResNet-18 (width 1/4) as the backbone, a small DINO head (1024 prototypes,
hidden 256, bottleneck 64, BatchNorm in the MLP: a departure, the official ``use_bn_in_head``
defaults to False and its ResNet-50 command does not set it), two global crops at
32 px and four local crops at 16 px, and the official ViT optimisation (its ResNet-50 recipe,
SGD at 0.03 and weight decay 1e-4, gave uniform outputs here by step 200): AdamW at 5e-4 x batch/256
with a 10% warm-up, weight decay cosine 0.04 -> 0.4, gradients clipped per tensor to norm 3, the
last layer frozen for the first 25 steps, teacher momentum 0.99 cosine to 1 (the paper's 0.996
is for runs of 10^5 steps; kNN top-1 0.136 with it, 0.138 with 0.99), teacher
temperature 0.04 against the student's 0.1, centre momentum 0.9. The view settings of the shared
config (recipe, augment_strength, crop_min_scale) do not apply: the crops are DINO's
multi-crop recipe. Run with `python -m sslax.train --config=experiments/configs/dino.py`.
"""

from sslax import configs


def get_config():
    c = configs.shapes_config("dino")
    # Six views per image make a step about twice SimCLR's: 800 steps (the base has 1000) take
    # 10.9 minutes with the baselines (README's methods table, 2026-12-01).
    c.total_steps = 800
    c.optimizer = "adamw"
    c.learning_rate = 5e-4  # x batch/256
    c.lr_scaling = "linear"
    c.warmup_steps = c.total_steps // 10
    c.weight_decay = 0.04  # cosine to dino.weight_decay_end
    c.dino.teacher_momentum_base = 0.99
    return c.lock()
