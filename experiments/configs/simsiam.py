"""SimSiam on the built-in shapes dataset: the laptop scale of `--config.method=simsiam`.

The shapes base (narrow ResNet-18, 1000 steps at batch 256, the shapes-tuned SimCLR views: colour
strength 3, crop area >= 50%) with SimSiam's optimiser: SGD, momentum 0.9, weight decay 1e-4, cosine
decay with the predictor's lr kept at its peak; lr 0.5 x B/256, ten times the paper's ImageNet rate,
as the small-data recipes use (solo-learn's CIFAR SimSiam). Projector 256 -> 256 -> 64 with
BatchNorm on every layer, predictor bottleneck 64 -> 16 -> 64 (shared ``proj_hidden_dim``/
``proj_dim`` and ``simsiam.predictor_hidden_dim``).
"""

from sslax import configs


def get_config():
    c = configs.shapes_config("simsiam")
    c.optimizer = "sgd"
    c.learning_rate = 0.5
    c.weight_decay = 1e-4
    return c.lock()
