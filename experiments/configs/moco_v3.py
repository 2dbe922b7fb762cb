"""MoCo v3 on the built-in shapes dataset: the laptop scale of `--config.method=moco_v3`.

The shapes base (narrow ResNet-18, 1000 steps at batch 256, LARS, the shapes-tuned SimCLR views:
colour strength 3, crop area >= 50%) with MoCo v3's choices: LARS lr 0.6 x B/256 and weight decay
1e-6, and temperature 0.2, the value the paper uses for ViT and that contrastive ResNets use at
small batch sizes (the paper's ResNet value 1.0 is for batch 4,096). Projector 3 x 256 -> 64 and
predictor 256 -> 64 (shared ``proj_hidden_dim``/``proj_dim`` and ``moco_v3.pred_hidden_dim``). As
for BYOL (see ``byol.py``), the momentum encoder starts at 0.9 (cosine to 1) rather than the paper's
0.99, for a run of 800 steps, and the views are the SimCLR ones rather than BYOL's asymmetric pair
(together: kNN top-1 0.200 -> 0.285 after 800 steps with the earlier views, colour strength 1 and
crop area >= 25%); ``moco_v3_imagenet.py`` keeps the paper's values.
"""

from sslax import configs


def get_config():
    c = configs.shapes_config("moco_v3")
    c.optimizer = "lars"
    c.learning_rate = 0.6
    c.weight_decay = 1e-6
    c.temperature = 0.2
    c.moco_v3.momentum_base = 0.9
    return c.lock()
