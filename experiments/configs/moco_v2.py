"""MoCo v2 on the built-in shapes dataset: the laptop scale of `--config.method=moco_v2`.

The shapes base (narrow ResNet-18, 1000 steps at batch 256, colour strength 3, crop area >= 50%)
with MoCo v2's choices: SGD with momentum 0.9 and weight decay 1e-4, temperature 0.2; the
shapes-tuned SimCLR views rather than MoCo v2's weaker colour jitter, and the symmetric loss of
solo-learn's MoCo v2+ (both views as queries), which doubles the training signal of a short run
(together: kNN top-1 0.157 -> 0.185 after 800 steps with the earlier views, colour strength 1
and crop area >= 25%, at 1.6x the step time). The queue (4,096 keys, 16 batches) and the key
encoder's momentum (0.99, for a run of hundreds rather than a million steps) are
``sslax.methods.moco_v2.defaults()``.
"""

from sslax import configs


def get_config():
    c = configs.shapes_config("moco_v2")
    c.moco_v2.symmetric = True
    c.optimizer = "sgd"
    # At batch 256, scaled linearly. Ten times MoCo v2's ImageNet rate, which is tuned for
    # 200 epochs; a run of about ten short epochs needs larger steps.
    c.learning_rate = 0.3
    c.weight_decay = 1e-4
    c.temperature = 0.2
    return c.lock()
