"""Test setup: 8 simulated CPU devices, and one compilation cache for the whole session.

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

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
