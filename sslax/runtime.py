"""XLA:CPU settings that sslax measured to be faster, applied before JAX starts its backends.

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so these must be set before the
first computation. ``python -m sslax.train`` and ``python -m sslax.eval`` do it for you; a
script of your own calls :func:`use_tuned_xla_flags` first thing (importing jax is fine,
computing is not).

What is tuned, and why (``experiments/benchmarks/README.md`` has the numbers):

- ``xla_cpu_experimental_ynn_fusion_type``: which ops XLA:CPU hands to the YNNPACK library.
  jax 0.10's default sends convolutions there too; on x86 CPUs its convolutions (forward and
  weight gradient) ran 2-2.5x slower than XLA's Eigen path on ResNet layer shapes, so
  convolutional networks get ``reduce`` (Eigen convolutions, YNNPACK's reductions for the
  BatchNorm statistics). ``eltwise,reduce`` was ~10% faster still on ResNet-18, but XLA:CPU
  then failed to compile an FSDP-sharded ResNet step ("unsupported layout in YNN fusion"), so
  sslax does not use YNNPACK's elementwise fusions. Transformers get ``dot,reduce``: YNNPACK's
  dot fusions without its elementwise ones, which made a ViT step ~25% slower; the float32
  ViT-Tiny step ran 9-20% faster than under the defaults (the DINO steps: within noise).

The flags only concern the CPU backend; GPU and TPU compilers ignore them. A flag you set
yourself in ``XLA_FLAGS`` always wins, and ``SSLAX_XLA_FLAGS=default`` leaves XLA alone.
"""

from __future__ import annotations

import logging
import os

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
PRESETS = {
    "convnet": {YNN_FLAG: "reduce"},
    "transformer": {YNN_FLAG: "dot,reduce"},
}
OPT_OUT = "SSLAX_XLA_FLAGS"


def preset_for(model: str | None) -> str:
    """The preset name for a model name ("resnet50" -> "convnet", "vit_small" -> ...)."""
    return "transformer" if model and model.startswith("vit") else "convnet"


def tuned_xla_flags(current: str, model: str | None = None) -> str:
    """``current`` XLA_FLAGS plus the preset's flags that ``current`` does not already set.

    >>> tuned_xla_flags("", "resnet18")
    '--xla_cpu_experimental_ynn_fusion_type=reduce'
    >>> tuned_xla_flags("--xla_cpu_experimental_ynn_fusion_type=dot --x=1", "resnet50")
    '--xla_cpu_experimental_ynn_fusion_type=dot --x=1'
    >>> tuned_xla_flags("--x=1", "vit_tiny")
    '--x=1 --xla_cpu_experimental_ynn_fusion_type=dot,reduce'
    """
    given = {arg.lstrip("-").split("=", 1)[0] for arg in current.split()}
    extra = [
        f"--{name}={value}"
        for name, value in PRESETS[preset_for(model)].items()
        if name not in given
    ]
    return " ".join(filter(None, [current.strip(), *extra]))


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a jax without this private helper: assume not
        return False


def use_tuned_xla_flags(model: str | None = None) -> bool:
    """Adds the tuned flags for ``model`` to ``os.environ["XLA_FLAGS"]``.

    Returns True if the environment now carries them; False (with a warning) if JAX's
    backends already started, when XLA would ignore them, or if ``SSLAX_XLA_FLAGS=default``.
    """
    if os.environ.get(OPT_OUT, "").strip().lower() == "default":
        return False
    if _backends_started():
        logging.getLogger(__name__).warning(
            "JAX backends already started: XLA_FLAGS changes are ignored; call "
            "sslax.runtime.use_tuned_xla_flags() before the first JAX computation"
        )
        return False
    os.environ["XLA_FLAGS"] = tuned_xla_flags(os.environ.get("XLA_FLAGS", ""), model)
    return True


def quiet_absent_tpu() -> bool:
    """On a machine without TPU chips but with libtpu installed (``sslax[tpu]`` or the test
    extra, for plans), keeps JAX's probe of the TPU backend from printing libtpu's start-up
    errors: it gets a placeholder accelerator type and host, fails quietly and JAX runs on
    what is there. Changes nothing where TPU chips exist or those variables are set. Returns
    True if it set them.
    """
    import glob
    import importlib.util

    if importlib.util.find_spec("libtpu") is None or _backends_started():
        return False
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):  # TPU VMs' chips
        return False
    if "TPU_ACCELERATOR_TYPE" in os.environ or "TPU_WORKER_HOSTNAMES" in os.environ:
        return False
    os.environ["TPU_ACCELERATOR_TYPE"] = "v5litepod-1"
    os.environ["TPU_WORKER_HOSTNAMES"] = "localhost"
    return True
