"""Shared fixtures. Ray tests run on loopback only (see launch/ray_setup.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance on 127.0.0.1 with 4 logical CPUs, shut down after the module."""
    import ray

    from launch.ray_setup import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray("local", num_cpus=4)
    yield ray
    ray.shutdown()
