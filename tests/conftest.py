"""Fixtures shared by the end-to-end tests."""

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One SSLAX_DATA_DIR for every command-line run, so the built-in data is generated once."""
    return str(tmp_path_factory.mktemp("data"))
