"""BYOL on ImageNet: the 1000-epoch ResNet-50 recipe of Grill et al. 2020 (arXiv 2006.07733).

deepmind-research/byol's config at batch 4,096: LARS (trust coefficient 1e-3, momentum 0.9,
biases and BatchNorm excluded) at lr 0.2 x B/256, weight decay 1.5e-6, 10 warm-up epochs then
cosine, 1000 epochs of 1,281,167 images (312 steps each, the last partial batch dropped);
projector and predictor Linear 4096 - BN - ReLU - Linear 256; target momentum 0.996 cosine to
1; the asymmetric views with crop area (0.08, 1). Reported linear top-1: 74.3. The official
presets for shorter runs: 300 epochs lr 0.3, weight decay 1e-6, momentum 0.99; 100 epochs
lr 0.45, weight decay 1e-6, momentum 0.99.

bfloat16 compute (float32 parameters and optimiser) is sslax's choice for accelerators, not
the paper's.
"""

from sslax import configs


def get_config():
    c = configs.imagenet_config(
        "byol", batch_size=4096, epochs=1000, warmup_epochs=10, checkpoint_every_epochs=10
    )
    c.proj_hidden_dim = 4096
    c.proj_dim = 256
    c.optimizer = "lars"
    c.learning_rate = 0.2
    c.lr_scaling = "linear"
    c.weight_decay = 1.5e-6
    c.momentum = 0.9
    c.recipe = "byol"
    c.byol.predictor_hidden_dim = 4096
    c.byol.ema_base = 0.996
    return c.lock()
