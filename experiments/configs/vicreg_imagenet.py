"""VICReg on ImageNet: the paper's recipe (Bardes, Ponce and LeCun 2022, arXiv 2105.04906).

ResNet-50 and an 8192-8192-8192 expander, loss coefficients 25 / 25 / 1, batch 2048, 1000
epochs (the official code's default is 100), LARS at 0.2 x B/256 for every parameter, weight
decay 1e-6, 10 warm-up epochs then cosine decay (to 0 here, to 1/1000 of the peak in the
official code), the asymmetric BYOL views, mixed precision as in the official code.
"""

from sslax import configs

IMAGENET_TRAIN_IMAGES = 1_281_167
BATCH_SIZE = 2048
STEPS_PER_EPOCH = IMAGENET_TRAIN_IMAGES // BATCH_SIZE  # 625


def get_config():
    config = configs.shapes_config("vicreg")
    config.update(
        {
            "dataset": "tfds:imagenet2012",
            "train_split": "train",
            "eval_split": "validation",
            "image_size": 224,
            "model": "resnet50",
            "width": 1.0,
            "stem": "imagenet",
            "compute_dtype": "bfloat16",
            "batch_size": BATCH_SIZE,
            "total_steps": 1000 * STEPS_PER_EPOCH,
            "warmup_steps": 10 * STEPS_PER_EPOCH,
            "optimizer": "lars",
            "learning_rate": 0.2,
            "lr_scaling": "linear",
            "weight_decay": 1e-6,
            "momentum": 0.9,
            "recipe": "byol",
            "crop_min_scale": 0.08,
            "log_every": 100,
            "checkpoint_every": 10 * STEPS_PER_EPOCH,
        }
    )
    config.vicreg.update(
        {"expander_dim": 8192, "sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0}
    )
    return config.lock()
