"""MoCo v3 on ImageNet: the 100-epoch ResNet-50 recipe of Chen, Xie & He 2021 (arXiv 2104.02057).

facebookresearch/moco-v3's ResNet-50 command at batch 4,096: LARS lr 0.6 (x B/256), weight decay
1e-6, 10 warm-up epochs then cosine, 100 epochs of 1,281,167 images (312 steps each, the last
partial batch dropped); projector 3 layers 4096 -> 256 with a last BatchNorm without affine,
predictor 4096 -> 256; temperature 1.0; momentum 0.99 cosine to 1; BYOL's asymmetric
augmentations with crop area (0.08, 1); mixed precision. Reported linear top-1: 68.9 (100
epochs), 72.8 (300: lr 0.3, weight decay 1.5e-6, momentum 0.996), 74.6 (1000).

For ViT-S/ViT-B (73.2 / 76.7 at 300 epochs) the paper uses AdamW and temperature 0.2 instead.
"""

from sslax import configs


def get_config():
    c = configs.imagenet_config("moco_v3", batch_size=4096, epochs=100, warmup_epochs=10)
    c.proj_hidden_dim = 4096
    c.proj_dim = 256
    c.optimizer = "lars"
    c.learning_rate = 0.6
    c.lr_scaling = "linear"
    c.weight_decay = 1e-6
    c.momentum = 0.9
    c.temperature = 1.0
    c.recipe = "byol"
    c.moco_v3.momentum_base = 0.99
    c.moco_v3.pred_hidden_dim = 4096
    return c.lock()
