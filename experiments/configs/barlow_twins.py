"""Barlow Twins on the built-in shapes dataset: the laptop scale of `--config.method=barlow_twins`.

The shapes base (narrow ResNet-18, 1000 steps at batch 256, LARS at lr 1.0 x B/256, the shapes-tuned
SimCLR views: colour strength 3, crop area >= 50%) with Barlow Twins' own choices: weight decay
1.5e-6, and a 256-256-256 expander with lambda = 1/256 (``sslax.methods.barlow_twins.defaults``).
Chosen from 400-step runs (kNN top-1, with the earlier views' colour strength 1 and crop area >=
25%): BYOL's asymmetric views of the official code at lr 0.3 (solo-learn's CIFAR rate) 0.164, the
SimCLR views 0.198, and at lr 1.0 0.267. ``barlow_twins_imagenet.py`` keeps the paper's values.
"""

from sslax import configs


def get_config():
    config = configs.shapes_config("barlow_twins")
    config.weight_decay = 1.5e-6
    return config.lock()
