"""Importing the scripts of experiments/ (not a package) the way `python experiments/X.py` does."""

import importlib.util
import pathlib
import sys

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def load(name: str):
    """The module ``experiments/NAME.py``, with experiments/ importable as the script sees it."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))  # the scripts import their shared `sweep` module
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
