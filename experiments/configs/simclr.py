"""SimCLR on the built-in shapes dataset: the laptop default of `python -m sslax.train`.

A narrow ResNet-18 (width 1/4, ImageNet stem) sized so that pretraining plus evaluation finishes
in about 5 minutes on a 2-core CPU. The view recipe is SimCLR's at full colour strength with a
milder crop (area >= 25%) and temperature 0.5 (SimCLR's CIFAR value): on this data these gave
the best kNN accuracy in short runs (README, "Measured"). Override any field from the command
line, e.g. `--config.batch_size=512 --config.total_steps=2000`.
"""

from sslax import configs


def get_config():
    return configs.shapes_config("simclr").lock()
