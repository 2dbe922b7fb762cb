"""SimCLR on the built-in shapes dataset: the laptop default of `python -m sslax.train`.

A narrow ResNet-18 (width 1/4, ImageNet stem) sized so that pretraining plus evaluation finishes
in about 7.5 minutes on a 2-core CPU: 1000 steps at batch 256. The view recipe is SimCLR's with
the colour distortion at 3x SimCLR's strength, a milder crop (area >= 50%) and temperature 0.1
(SimCLR's ImageNet value): on this data, where colour is pure nuisance, these reached kNN top-1
0.58 after 400 steps, where colour strength 1, area >= 25% and temperature 0.5 had reached 0.37
after 800 (README, "How the laptop recipe was found"). Override any field from the command
line, e.g. `--config.batch_size=512 --config.total_steps=2000`.
"""

from sslax import configs


def get_config():
    return configs.shapes_config("simclr").lock()
