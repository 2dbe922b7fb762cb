"""SupCon on ImageNet: ResNet-50 with the supervised contrastive loss (Khosla et al. 2020).

The paper's choices that sslax carries: the "out" loss at temperature 0.1, a projection head
2048 - BN - ReLU - 128, LARS, a ResNet-50 trained for 700 epochs (78.7 top-1 with
AutoAugment; Table 2 and Sec. 4). The batch (4,096), learning rate (0.3 x B/256), weight decay
(1e-6), warm-up (10 epochs) and SimCLR's views are SimCLR's ImageNet recipe, not values read
from the paper; the paper's own linear classifier on the frozen network is sslax's linear probe.
"""

from sslax import configs


def get_config():
    c = configs.imagenet_config(
        "supcon", batch_size=4096, epochs=700, warmup_epochs=10, checkpoint_every_epochs=10
    )
    c.proj_hidden_dim = 2048
    c.proj_dim = 128
    c.optimizer = "lars"
    c.learning_rate = 0.3
    c.weight_decay = 1e-6
    c.temperature = 0.1
    c.augment_strength = 1.0
    c.augment_blur = True
    return c.lock()
