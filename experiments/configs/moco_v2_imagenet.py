"""MoCo v2 on ImageNet: the 200-epoch ResNet-50 recipe of Chen et al. 2020 (arXiv 2003.04297).

facebookresearch/moco's `main_moco.py --mlp --moco-t 0.2 --aug-plus --cos` at batch 256: SGD lr
0.03 (x B/256), momentum 0.9, weight decay 1e-4, cosine schedule without warm-up, 200 epochs of
1,281,167 images (5,004 steps each, the last partial batch dropped); head 2048-ReLU-128,
temperature 0.2, queue 65,536, key momentum 0.999, crop area (0.2, 1). Shuffling BN over 8 groups
of 32, as the official 8 GPUs. Reported linear top-1: 67.5 (200 epochs), 71.1 (800).

Differences from the official code: weight decay skips biases and BatchNorm parameters (sslax's
optimiser masks), and kNN (not a linear probe) is the built-in evaluation.
"""

from sslax import configs


def get_config():
    c = configs.imagenet_config(
        "moco_v2", batch_size=256, epochs=200, warmup_epochs=0, compute_dtype="float32"
    )
    c.proj_hidden_dim = 2048
    c.proj_dim = 128
    c.optimizer = "sgd"
    c.learning_rate = 0.03
    c.lr_scaling = "linear"
    c.weight_decay = 1e-4
    c.momentum = 0.9
    c.temperature = 0.2
    c.recipe = "moco_v2"
    c.crop_min_scale = 0.2
    c.moco_v2.momentum = 0.999
    c.moco_v2.queue_size = 65_536
    c.moco_v2.shuffle_bn_groups = 8
    return c.lock()
