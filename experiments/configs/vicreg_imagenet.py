"""VICReg on ImageNet: the paper's recipe (Bardes, Ponce and LeCun 2022, arXiv 2105.04906).

ResNet-50 and an 8192-8192-8192 expander, loss coefficients 25 / 25 / 1, batch 2048, 1000
epochs (the official code's default is 100), LARS at 0.2 x B/256 for every parameter, weight
decay 1e-6, 10 warm-up epochs then cosine decay (to 0 here, to 1/1000 of the peak in the
official code), the asymmetric BYOL views, mixed precision as in the official code.
"""

from sslax import configs


def get_config():
    c = configs.imagenet_config(
        "vicreg", batch_size=2048, epochs=1000, warmup_epochs=10, checkpoint_every_epochs=10
    )
    c.optimizer = "lars"
    c.learning_rate = 0.2
    c.lr_scaling = "linear"
    c.weight_decay = 1e-6
    c.momentum = 0.9
    c.recipe = "byol"
    c.vicreg.expander_dim = 8192
    c.vicreg.sim_coeff = 25.0
    c.vicreg.std_coeff = 25.0
    c.vicreg.cov_coeff = 1.0
    return c.lock()
