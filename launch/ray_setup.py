"""Starting or joining Ray: loopback-only for local runs, the user's address for a cluster."""

from __future__ import annotations

import os
import socket

import ray
from ray._private import ray_constants

LOCAL = "local"
WORKER_NICENESS_VAR = ray_constants.RAY_WORKER_NICENESS
"""Read by the raylet when it starts; `ray start` on a cluster node needs it in its environment."""


class ClusterAddressError(RuntimeError):
    """The Ray address given by the user cannot be reached."""


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast with a clear message when HOST:PORT does not answer (ray.init would hang or retry)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    try:
        port_number = int(port)
    except ValueError as err:
        raise ClusterAddressError(
            f"Ray address {address!r} is not HOST:PORT; pass e.g. --run.address 10.0.0.5:6379, "
            "'auto' on a cluster node, or 'local' for a local run"
        ) from err
    try:
        with socket.create_connection((host, port_number), timeout=timeout_s):
            pass
    except OSError as err:
        raise ClusterAddressError(
            f"cannot reach the Ray cluster at {address!r} ({err}); start it with `ray start --head` "
            "on the head node and pass its address, or use --run.address local"
        ) from err


def init_ray(address: str = LOCAL, num_cpus: int = 0, quiet: bool = True) -> dict:
    """Start a loopback-only local Ray instance (address='local') or join a cluster.

    Ray binds a local node to the machine's network address unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set before it starts; with it, every node binds to
    127.0.0.1, so no server of ours listens beyond loopback on a local run.
    """
    if ray.is_initialized():
        return ray.cluster_resources()
    kwargs: dict = {
        "log_to_driver": not quiet,
        "configure_logging": True,
        "logging_level": "warning",
    }
    if address == LOCAL:
        # The variable is read when ray is imported, which the caller may have done already
        # (`sacae train` imports launch.train, which imports ray): set the constant it set too.
        # The processes Ray starts inherit the variable.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
            ray_constants.ENABLE_RAY_CLUSTER = False
        # Ray starts its workers at niceness 15 by default. Next to any ordinary process (another
        # job, a compile, a busy loop) they then get a few percent of a core: with two such
        # processes on 2 cores the learner fell from 13 to 0.45 updates/s and the actors all but
        # stopped (issue 8). Our workers are the job, so they run at the normal priority.
        os.environ.setdefault(WORKER_NICENESS_VAR, "0")
        kwargs.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
        if num_cpus > 0:
            kwargs["num_cpus"] = num_cpus
    else:
        _check_reachable(address)
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise ClusterAddressError(
            f"cannot join the Ray cluster at {address!r} ({err}); check `ray status` on the head node"
        ) from err
    return ray.cluster_resources()


@ray.remote(num_cpus=0)
def _niceness() -> int:
    return os.nice(0)


def niced_nodes(timeout_s: float = 60.0) -> dict[str, int]:
    """Niceness of a Ray worker on each alive node, for the nodes whose workers run above 0.

    A node started by `ray start` without RAY_worker_niceness=0 runs its workers at 15: they then
    get a few percent of a core whenever anything else on that node wants the CPU.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    refs = [
        _niceness.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
        ).remote()
        for node in nodes
    ]
    values = ray.get(refs, timeout=timeout_s)
    return {node: value for node, value in zip(nodes, values, strict=True) if value > 0}


def niceness_warning(niced: dict[str, int]) -> str | None:
    """One line naming the niced nodes and how to start them, or None when there are none."""
    if not niced:
        return None
    listed = ", ".join(f"{node[:8]} (niceness {value})" for node, value in niced.items())
    return (
        f"sacae: warning: Ray workers run at a low priority on {listed}: any other process on "
        f"those nodes takes the CPU from the actors and the learner; start their Ray with "
        f"`{WORKER_NICENESS_VAR}=0 ray start ...`"
    )
