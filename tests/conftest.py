"""Test setup: a fake 8-device CPU mesh, float32 matmuls, and the `slow` marker."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pathlib

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """Path to ../shared/data (real benchmark JSONL); skips where the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark folder {SHARED_DATA} is absent (it exists only beside the r1jax repo)")
    return SHARED_DATA
