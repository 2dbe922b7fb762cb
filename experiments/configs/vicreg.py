"""VICReg on the built-in shapes dataset: the laptop scale of `--config.method=vicreg`.

The shapes base (narrow ResNet-18, 1000 steps at batch 256, LARS at lr 1.0 x B/256, the shapes-tuned
SimCLR views: colour strength 3, crop area >= 50%) with VICReg's own choices: weight decay 1e-6, a
256-256-256 expander and loss coefficients 25 / 25 / 1 (``sslax.methods.vicreg.defaults``). The
views and the learning rate are those that worked best for Barlow Twins (see ``barlow_twins.py``);
VICReg itself reached 0.239 kNN top-1 in 400 steps with the earlier SimCLR views (colour strength 1,
crop area >= 25%) at lr 0.3. ``vicreg_imagenet.py`` keeps the paper's values.
"""

from sslax import configs


def get_config():
    config = configs.shapes_config("vicreg")
    config.weight_decay = 1e-6
    return config.lock()
