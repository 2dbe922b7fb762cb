"""BYOL on ImageNet: the 1000-epoch ResNet-50 recipe of Grill et al. 2020 (arXiv 2006.07733).

deepmind-research/byol's config at batch 4,096: LARS (trust coefficient 1e-3, momentum 0.9,
biases and BatchNorm excluded) at lr 0.2 x B/256, weight decay 1.5e-6, 10 warm-up epochs then
cosine, 1000 epochs of 1,281,167 images (312 steps each, the last partial batch dropped);
projector and predictor Linear 4096 - BN - ReLU - Linear 256; target momentum 0.996 cosine to
1; the asymmetric views with crop area (0.08, 1). Reported linear top-1: 74.3. The official
presets for shorter runs: 300 epochs lr 0.3, weight decay 1e-6, momentum 0.99; 100 epochs
lr 0.45, weight decay 1e-6, momentum 0.99.

bfloat16 compute (float32 parameters and optimiser) is sslax's choice for accelerators, not
the paper's.
"""

from sslax import configs

IMAGENET_TRAIN_IMAGES = 1_281_167
BATCH_SIZE = 4096
STEPS_PER_EPOCH = IMAGENET_TRAIN_IMAGES // BATCH_SIZE  # 312


def get_config():
    c = configs.shapes_config("byol")
    c.dataset = "tfds:imagenet2012"
    c.train_split = "train"
    c.eval_split = "validation"
    c.image_size = 224
    c.model = "resnet50"
    c.width = 1.0
    c.stem = "imagenet"
    c.compute_dtype = "bfloat16"
    c.proj_hidden_dim = 4096
    c.proj_dim = 256

    c.batch_size = BATCH_SIZE
    c.total_steps = 1000 * STEPS_PER_EPOCH
    c.warmup_steps = 10 * STEPS_PER_EPOCH
    c.optimizer = "lars"
    c.learning_rate = 0.2
    c.lr_scaling = "linear"
    c.weight_decay = 1.5e-6
    c.momentum = 0.9

    c.recipe = "byol"
    c.crop_min_scale = 0.08

    c.byol.predictor_hidden_dim = 4096
    c.byol.ema_base = 0.996

    c.log_every = 100
    c.checkpoint_every = 10 * STEPS_PER_EPOCH
    return c.lock()
