"""NNCLR on ImageNet: the ResNet-50 recipe of Dwibedi et al. 2021 (arXiv 2104.14548).

Paper Sec. 4: batch 4,096, 1000 epochs, LARS, weight decay 1e-6, 10 warm-up epochs then
cosine, temperature 0.1, a support set of 98,304 projections, a 3-layer projector (hidden 2048,
output 256, BatchNorm) and a predictor of hidden width 4096; SimCLR's views. Reported linear
top-1: 75.4. The learning rate, 0.3 x B/256, is SimCLR's rule; the paper's exact base rate is
not carried here.
"""

from sslax import configs


def get_config():
    c = configs.imagenet_config(
        "nnclr", batch_size=4096, epochs=1000, warmup_epochs=10, checkpoint_every_epochs=10
    )
    c.proj_hidden_dim = 2048
    c.proj_dim = 256
    c.optimizer = "lars"
    c.learning_rate = 0.3
    c.weight_decay = 1e-6
    c.temperature = 0.1
    c.augment_strength = 1.0
    c.augment_blur = True
    c.nnclr.queue_size = 98_304
    c.nnclr.pred_hidden_dim = 4096
    return c.lock()
