"""SwAV on the built-in shapes dataset: the laptop scale of `--config.method=swav`.

The shapes base (narrow ResNet-18, colour strength 3, crops of area >= 50%, LARS at 1.0 x
batch/256, temperature 0.1, the paper's value) with 300 prototypes (official: 3000 for
ImageNet's 1000 classes) frozen for the first 100 steps, Sinkhorn-Knopp with epsilon 0.05 and
3 rounds, and two crops, as solo-learn's CIFAR recipe. With SwAV's multi-crop added (4 local
crops at 16 px of area 0.05-0.5, 800 steps) the codes went uniform by step 200 (code entropy
ln 300, loss ln 300: every view predicts every prototype equally) and kNN top-1 stopped at
0.221 (README, methods table).
"""

from sslax import configs


def get_config():
    c = configs.shapes_config("swav")
    c.swav.num_local = 0
    c.proj_dim = 128
    return c.lock()
