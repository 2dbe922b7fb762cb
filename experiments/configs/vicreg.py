"""VICReg on the built-in shapes dataset: the laptop-scale run.

The shared shapes setting (narrow ResNet-18, batch 256, 800 steps, LARS) with VICReg's own
choices: the asymmetric BYOL views of the official code, weight decay 1e-6, a 256-256-256
expander and loss coefficients 25 / 25 / 1 (``sslax.methods.vicreg.defaults``).
"""

from sslax import configs


def get_config():
    config = configs.shapes_config("vicreg")
    config.recipe = "byol"
    config.weight_decay = 1e-6
    config.learning_rate = 0.3
    return config.lock()
