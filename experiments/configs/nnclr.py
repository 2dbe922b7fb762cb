"""NNCLR on the built-in shapes dataset: the laptop scale of `--config.method=nnclr`.

The shapes base (narrow ResNet-18, SimCLR's shapes views, LARS at 1.0 x batch/256, temperature
0.1, the paper's value) with NNCLR's 3-layer projector and a predictor of hidden width 512; a
support set of 8,192 projections (32 batches; the paper's 98,304 is 24 batches of 4,096).
"""

from sslax import configs


def get_config():
    return configs.shapes_config("nnclr").lock()
