"""DINO on the built-in shapes dataset: the laptop setting of the DINO recipe.

The shared narrow ResNet-18 (width 1/4) and DINO's head at a small size (300 prototypes,
hidden 256, bottleneck 64, BatchNorm in the MLP: a departure, the official ``use_bn_in_head``
defaults to False), trained as the two-view methods are trained on this data rather than with
DINO's ViT recipe:

* the views every two-view method uses (``dino.views="recipe"``: SimCLR's colour distortion at
  strength 3, crops of area 0.5-1) and no local crops, as solo-learn's CIFAR recipe;
* the teacher's targets by Sinkhorn-Knopp over the batch (``dino.centering_mode``, DINOv2's,
  epsilon = the teacher temperature 0.05, 3 rounds) instead of DINO's running centre;
* LARS at 1.0 x batch/256, weight decay 1e-6, no gradient clipping, the last layer frozen for
  the first 25 steps, teacher momentum 0.99 cosine to 1 (the paper's 0.996 is for runs of 10^5
  steps), student temperature 0.1.

1000 steps (9.0 minutes with the baselines) reach kNN top-1 0.231 against the random network's
0.111; ``--config.total_steps=2000`` reaches 0.3125 (README, "DINO on the built-in data").

``--config=experiments/configs/dino.py:v1`` is DINO v1's own recipe at this scale, the laptop
config until 2026-12-02: DINO's multi-crop views (2 x 32 px + 4 x 16 px, its mild colour
jitter), 1024 prototypes, the official ViT optimisation (AdamW at 5e-4 x batch/256, 10%
warm-up, weight decay cosine 0.04 -> 0.4, clipping 3; its ResNet-50 recipe, SGD at 0.03 and
weight decay 1e-4, gave uniform outputs here by step 200), DINO's centring (momentum 0.9),
teacher temperature 0.04, 800 steps. It learned colour, not shape: kNN 0.136 against the random
network's 0.111 in 10.9 minutes. README, "DINO on the built-in data", has what each change did;
experiments/dino_centering.py studies DINO's centring on the v1 recipe.
Run with `python -m sslax.train --config=experiments/configs/dino.py` (or `...dino.py:v1`).
"""

from __future__ import annotations

from sslax import configs


def get_config(variant: str | None = None):
    if variant == "v1":
        return v1_config()
    if variant:
        raise ValueError(f"unknown dino.py variant {variant!r}: give none, or v1")
    c = configs.shapes_config("dino")
    c.warmup_steps = c.total_steps // 10
    c.dino.views = "recipe"
    c.dino.num_local = 0
    c.dino.centering_mode = "sinkhorn_knopp"
    c.dino.out_dim = 300
    c.dino.teacher_temp = 0.05
    c.dino.warmup_teacher_temp = 0.05
    c.dino.teacher_momentum_base = 0.99
    c.dino.weight_decay_end = c.weight_decay  # the base's 1e-6, constant
    c.dino.clip_grad = 0.0
    return c.lock()


def v1_config():
    c = configs.shapes_config("dino")
    # Six views per image make a step about twice SimCLR's: 800 steps take 10.9 minutes.
    c.total_steps = 800
    c.optimizer = "adamw"
    c.learning_rate = 5e-4  # x batch/256
    c.warmup_steps = c.total_steps // 10
    c.weight_decay = 0.04  # cosine to dino.weight_decay_end
    c.dino.teacher_momentum_base = 0.99
    return c.lock()
