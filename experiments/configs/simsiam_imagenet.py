"""SimSiam on ImageNet: the 100-epoch ResNet-50 recipe of Chen & He 2021 (arXiv 2011.10566).

facebookresearch/simsiam at batch 256: SGD, momentum 0.9, lr 0.05 x B/256 with cosine decay
and no warm-up, the predictor's lr fixed (``--fix-pred-lr``), weight decay 1e-4, 100 epochs of
1,281,167 images (5,004 steps each, the last partial batch dropped); projector three layers
2048 wide with BatchNorm on each, output included; predictor 2048 - 512 - 2048; MoCo v2's
views (crop area (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, blur p 0.5).
Reported linear top-1 at batch 256: 68.1 (100 epochs), 70.0 (200), 70.8 (400), 71.3 (800).

bfloat16 compute (float32 parameters and optimiser) is sslax's choice for accelerators, not
the paper's.
"""

from sslax import configs


def get_config():
    c = configs.imagenet_config("simsiam", batch_size=256, epochs=100, warmup_epochs=0)
    c.proj_hidden_dim = 2048
    c.proj_dim = 2048
    c.optimizer = "sgd"
    c.learning_rate = 0.05
    c.lr_scaling = "linear"
    c.weight_decay = 1e-4
    c.momentum = 0.9
    c.recipe = "moco_v2"
    c.crop_min_scale = 0.2
    c.simsiam.predictor_hidden_dim = 512
    c.simsiam.fixed_predictor_lr = True
    return c.lock()
