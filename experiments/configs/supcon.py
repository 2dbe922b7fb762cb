"""SupCon on the built-in shapes dataset: the supervised baseline through the same trainer.

The shapes base unchanged (narrow ResNet-18, SimCLR's shapes views, LARS at 1.0 x batch/256,
temperature 0.1, the paper's value), with the dataset's labels choosing the positives: what the
self-supervised rows of the methods table would reach if they knew the classes.
"""

from sslax import configs


def get_config():
    return configs.shapes_config("supcon").lock()
