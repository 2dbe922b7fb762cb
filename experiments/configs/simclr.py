"""SimCLR on the built-in shapes dataset: the laptop default of `python -m sslax.train`.

A narrow ResNet-18 (CIFAR stem, width 1/4) sized so that pretraining plus evaluation finishes in
a few minutes on a 2-core CPU. Override any field from the command line, e.g.
`--config.batch_size=512 --config.total_steps=2000`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "simclr"
  c.dataset = "shapes"
  c.image_size = 32
  c.data_dir = ""  # TFDS data_dir; "" means TFDS's default
  c.train_split = "train"
  c.eval_split = "test"  # held-out split for kNN ("validation" for tfds:imagenet2012)

  c.model = "resnet18"
  c.width = 0.25
  c.stem = "cifar"
  c.proj_hidden_dim = 256
  c.proj_dim = 64

  c.batch_size = 256  # global, in images (2x as many views)
  c.total_steps = 600
  c.optimizer = "lars"
  c.learning_rate = 0.3  # base rate at batch 256, scaled by lr_scaling
  c.lr_scaling = "linear"  # "linear": lr x B/256, "sqrt": lr x sqrt(B), "none" (SimCLR App. B)
  c.warmup_steps = 30
  c.weight_decay = 1e-6
  c.momentum = 0.9
  c.temperature = 0.2

  # Views: SimCLR recipe at this strength; blur off for 32 px images (SimCLR App. B.9).
  c.augment_strength = 0.5
  c.augment_blur = False
  c.crop_min_scale = 0.08  # random resized crop area in [crop_min_scale, 1]

  c.seed = 0
  c.log_every = 25
  c.checkpoint_every = 200
  c.eval_every = 0  # 0: evaluate at the end only
  c.knn_k = 20
  c.knn_temperature = 0.07
  c.knn_train_examples = 20_000
  c.knn_test_examples = 4_000
  return c.lock()
