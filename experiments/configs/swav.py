"""SwAV on the built-in shapes dataset: the laptop scale of `--config.method=swav`.

The shapes base (narrow ResNet-18, colour strength 3, global crops of area >= 50%, LARS at
1.0 x batch/256, temperature 0.1, the paper's value) with SwAV's multi-crop (2 global crops at
32 px, 4 local crops at 16 px of area 0.05-0.5), 300 prototypes (official: 3000 for ImageNet's
1000 classes) frozen for the first 100 steps, Sinkhorn-Knopp with epsilon 0.05 and 3 rounds.
"""

from sslax import configs


def get_config():
    c = configs.shapes_config("swav")
    # Six crops make a step about twice SimCLR's: 800 steps, as DINO's laptop config.
    c.total_steps = 800
    c.proj_dim = 128
    return c.lock()
