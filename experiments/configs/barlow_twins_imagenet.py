"""Barlow Twins on ImageNet: the paper's recipe (Zbontar et al. 2021, arXiv 2103.03230).

ResNet-50 and an 8192-8192-8192 expander, lambda 5.1e-3, batch 2048, 1000 epochs, LARS at
0.2 x B/256 for the weights and 0.0048 x B/256 for biases and BatchNorm parameters, weight
decay 1.5e-6 (the paper; the official code's default is 1e-6), 10 warm-up epochs then cosine
decay (to 0 here, to 1/1000 of the peak in the official code), the asymmetric BYOL views,
mixed precision as in the official code.
"""

from sslax import configs


def get_config():
    c = configs.imagenet_config(
        "barlow_twins", batch_size=2048, epochs=1000, warmup_epochs=10, checkpoint_every_epochs=10
    )
    c.optimizer = "lars"
    c.learning_rate = 0.2
    c.lr_scaling = "linear"
    c.weight_decay = 1.5e-6
    c.momentum = 0.9
    c.recipe = "byol"
    c.barlow_twins.expander_dim = 8192
    c.barlow_twins.lambd = 5.1e-3
    c.barlow_twins.bias_lr_ratio = 0.0048 / 0.2
    return c.lock()
