"""Starting or joining Ray: loopback-only for local runs, the user's address for a cluster."""

from __future__ import annotations

import os
import socket

import ray
from ray._private import ray_constants

LOCAL = "local"


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
