"""Test setup: 8 simulated CPU devices, sslax's XLA:CPU flags, and one compilation cache.

The device count must be fixed before JAX initialises its backend, hence at import time here.

Many tests run the same tiny programs (in this process, and in the `python -m sslax.train`
subprocesses of the end-to-end tests, which inherit the environment). JAX's persistent
compilation cache, in a fresh folder per session, compiles each program once; what runs is
unchanged, and a session never sees a cache it did not fill itself.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="sslax-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache

# The XLA:CPU flags `python -m sslax.train` runs with (most test networks are ResNets); the
# CLI subprocesses of the end-to-end tests inherit them. tests/test_runtime.py checks that they
# change no result.
from sslax import runtime  # noqa: E402

runtime.use_tuned_xla_flags("resnet18")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
