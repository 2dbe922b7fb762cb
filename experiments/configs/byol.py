"""BYOL on the built-in shapes dataset: the laptop scale of `--config.method=byol`.

The shapes base (narrow ResNet-18, 800 steps at batch 256, LARS at lr 1.0 x B/256, weight decay
1e-6, crop area >= 25%) with BYOL's asymmetric views (``recipe="byol"``: blur on view 1,
solarisation on view 2). Projector and predictor 256 -> 64 (shared ``proj_hidden_dim``/
``proj_dim`` and ``byol.predictor_hidden_dim``); target momentum 0.99 cosine to 1
(``sslax.methods.byol.defaults()``), since the paper's 0.996 is for runs of 10^5 steps.
"""

from sslax import configs


def get_config():
    c = configs.shapes_config("byol")
    c.recipe = "byol"
    return c.lock()
