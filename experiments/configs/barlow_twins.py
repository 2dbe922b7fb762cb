"""Barlow Twins on the built-in shapes dataset: the laptop-scale run.

The shared shapes setting (narrow ResNet-18, batch 256, 800 steps, LARS) with Barlow Twins'
own choices: the asymmetric BYOL views of the official code, weight decay 1.5e-6, and a
256-256-256 expander with lambda = 1/256 (``sslax.methods.barlow_twins.defaults``).
"""

from sslax import configs


def get_config():
    config = configs.shapes_config("barlow_twins")
    config.recipe = "byol"
    config.weight_decay = 1.5e-6
    config.learning_rate = 0.3
    return config.lock()
