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

IMAGENET_TRAIN_IMAGES = 1_281_167


def get_config():
    c = configs.shapes_config("moco_v3")
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

    steps_per_epoch = IMAGENET_TRAIN_IMAGES // 4096
    c.batch_size = 4096
    c.total_steps = 100 * steps_per_epoch
    c.optimizer = "lars"
    c.learning_rate = 0.6
    c.lr_scaling = "linear"
    c.warmup_steps = 10 * steps_per_epoch
    c.weight_decay = 1e-6
    c.momentum = 0.9
    c.temperature = 1.0

    c.recipe = "byol"
    c.crop_min_scale = 0.08

    c.moco_v3.momentum_base = 0.99
    c.moco_v3.pred_hidden_dim = 4096

    c.log_every = 100
    c.checkpoint_every = steps_per_epoch
    return c.lock()
