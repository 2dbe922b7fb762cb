"""MoCo v3 on the built-in shapes dataset: the laptop scale of `--config.method=moco_v3`.

The shapes base (narrow ResNet-18, 800 steps at batch 256, LARS, crop area >= 25%) with MoCo
v3's choices: LARS lr 0.6 x B/256 and weight decay 1e-6, BYOL's asymmetric augmentations, and
temperature 0.2, the value the paper uses for ViT and that contrastive ResNets use at small
batch sizes (the paper's ResNet value 1.0 is for batch 4,096). Projector 3 x 256 -> 64 and
predictor 256 -> 64 (shared ``proj_hidden_dim``/``proj_dim`` and ``moco_v3.pred_hidden_dim``);
momentum encoder 0.99 cosine to 1 (``sslax.methods.moco_v3.defaults()``).
"""

from sslax import configs


def get_config():
    c = configs.shapes_config("moco_v3")
    c.recipe = "byol"
    c.optimizer = "lars"
    c.learning_rate = 0.6
    c.weight_decay = 1e-6
    c.temperature = 0.2
    return c.lock()
