"""Shared fixtures. Ray tests run on loopback only (see launch/ray_setup.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# One torch thread in the test process, as in every actor and (by default) the learner: with one
# thread per core, each op waits for its slowest thread, and beside a busy process that made
# the tests 4-10x slower.
torch.set_num_threads(1)
# Ray workers inherit the environment of the node that starts them: with tests/ on their path they
# import the toy env's module the way a user's installed env package would be imported.
_TESTS = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_TESTS, os.environ.get("PYTHONPATH", "")) if p
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n 2 --dist loadgroup` (pyproject's addopts): every Ray test in one
    group, so that one worker runs them one after another (never two Ray instances at once, and
    the fault tests' busy machine stays what they expect); every other module in a group of its
    own, so that its module fixtures (the stock CarRacing rollouts) are built once. The 2 cores
    were idle much of a serial run: the Ray tests wait on process starts and restarts while the
    single-threaded learning test could run beside them."""
    for item in items:
        group = "ray" if item.get_closest_marker("ray") else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


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


def train_with_fault(driver, when, fault):
    """Run `driver.train()` while a thread calls `fault()` once `when()` holds.

    Returns (counters, injected): `injected` is False when the run ended before `when()` held.
    """
    import threading

    injected, done = threading.Event(), threading.Event()

    def inject():
        while not when():
            if done.wait(0.2):
                return
        fault()
        injected.set()

    thread = threading.Thread(target=inject, daemon=True)
    thread.start()
    try:
        counters = driver.train()
    finally:
        done.set()
        thread.join()
    return counters, injected.is_set()


@pytest.fixture(scope="module")
def cpu_load():
    """A CPU-bound process for the whole module: faults must be survived on a busy machine."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield proc
    proc.kill()
    proc.wait()


def pid_of(handle) -> int:
    """The OS process id of a Ray actor, from the GCS (the actor may be busy in a long call)."""
    import ray

    return int(ray._private.state.actors(handle._actor_id.hex())["Pid"])


def sigkill(handle) -> int:
    """Kill a Ray actor's OS process as a real fault does (the OOM killer, a segfault)."""
    pid = pid_of(handle)
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.fixture(scope="module")
def ray_six_cpus():
    """A local Ray instance with 6 logical CPUs (a whole smoke run), shut down after the module."""
    import ray

    from launch.ray_setup import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray("local", num_cpus=6)
    yield
    ray.shutdown()
