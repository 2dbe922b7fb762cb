"""Running the main command in a subprocess, as a user does, on a tiny setting."""

import os
import socket
import subprocess
import sys

TINY = [
    "--config.total_steps=4",
    "--config.batch_size=16",
    "--config.image_size=16",
    "--config.width=0.125",
    "--config.proj_hidden_dim=32",
    "--config.proj_dim=16",
    "--config.knn_train_examples=200",
    "--config.knn_test_examples=64",
    "--config.log_every=2",
    "--config.checkpoint_every=2",
    "--config.warmup_steps=1",
]


def run_cli(args, data_dir, **env):
    """``python -m sslax.train ARGS`` on the CPU with the built-in data under ``data_dir``."""
    environment = {**os.environ, "SSLAX_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu", **env}
    return subprocess.run(
        [sys.executable, "-m", "sslax.train", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        check=False,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a test's coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
