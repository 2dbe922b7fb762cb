"""SwAV on ImageNet: the 800-epoch multi-crop ResNet-50 recipe of Caron et al. 2020.

facebookresearch/swav's README command for batch 4,096 (64 GPUs x 64): LARS (trust 1e-3) at
4.8 = 0.3 x B/256, weight decay 1e-6, 10 warm-up epochs then cosine, 800 epochs; projection
2048 - BN - ReLU - 128, 3000 prototypes frozen for the first 313 iterations (one epoch),
temperature 0.1, Sinkhorn-Knopp epsilon 0.05 with 3 rounds; multi-crop 2 x 224 px (area
0.14-1) + 6 x 96 px (0.05-0.14), SimCLR's colour distortion and blur; no queue (at this batch
the official code's queue length, 3840 rounded down to a multiple of the global batch, is 0).
Reported linear top-1: 75.3.

Departures: the rate warms up from 0 (official 0.3) and decays to 0 (official 0.0048); bfloat16
compute instead of apex fp16.
"""

from sslax import configs

BATCH_SIZE = 4096


def get_config():
    c = configs.imagenet_config(
        "swav", batch_size=BATCH_SIZE, epochs=800, warmup_epochs=10, checkpoint_every_epochs=10
    )
    c.proj_hidden_dim = 2048
    c.proj_dim = 128
    c.optimizer = "lars"
    c.learning_rate = 0.3
    c.weight_decay = 1e-6
    c.temperature = 0.1
    c.augment_strength = 1.0
    c.augment_blur = True
    c.crop_min_scale = 0.14
    c.swav.num_prototypes = 3000
    c.swav.freeze_prototypes_steps = configs.imagenet_steps_per_epoch(BATCH_SIZE)
    c.swav.num_local = 6
    c.swav.local_size = 96
    c.swav.local_min_scale = 0.05
    return c.lock()
