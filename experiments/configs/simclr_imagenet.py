"""SimCLR on ImageNet: the ResNet-50 recipe of Chen et al. 2020 (arXiv 2002.05709).

google-research/simclr at batch 4,096: LARS (trust coefficient 1e-3, momentum 0.9, biases and
BatchNorm excluded) at lr 0.3 x B/256, weight decay 1e-6, 10 warm-up epochs then cosine,
global BatchNorm; projection head 2048 - BN - ReLU - 128; temperature 0.1 (the code's
default); crop area (0.08, 1), colour strength 1.0 with blur. 1000 epochs of 1,281,167 images
(312 steps each, the last partial batch dropped) give the paper's 69.3 linear top-1 (Table 6);
the batch size x epochs ablation (Table B.1) runs 100 to 800 epochs, with
``--config.total_steps`` and ``--config.batch_size`` (``lr_scaling`` "linear" or "sqrt": 0.075 x
sqrt(B)).

bfloat16 compute (float32 parameters and optimiser) is sslax's choice for accelerators.
"""

from sslax import configs


def get_config():
    c = configs.imagenet_config(
        "simclr", batch_size=4096, epochs=1000, warmup_epochs=10, checkpoint_every_epochs=10
    )
    c.proj_hidden_dim = 2048
    c.proj_dim = 128
    c.optimizer = "lars"
    c.learning_rate = 0.3
    c.lr_scaling = "linear"
    c.weight_decay = 1e-6
    c.momentum = 0.9
    c.temperature = 0.1
    c.recipe = "simclr"
    c.augment_strength = 1.0
    c.augment_blur = True
    return c.lock()
