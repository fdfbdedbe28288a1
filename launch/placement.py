"""Where each process of a run lives: decided here, over the alive Ray nodes, not left to Ray's hints.

`plan_placement` is plain Python: it spreads processes over nodes by free CPUs (each process goes to
the node with the most CPUs still free after what the plan already put there; ties go to the node
listed first, the driver's). Ray's SPREAD strategy is only a hint: with free CPUs everywhere it may
still put every actor on one node, which the multi-node test once saw. `NodeAffinitySchedulingStrategy`
then pins each process to its planned node.

A replacement for a dead process is placed the same way over the nodes alive at that moment, so a
node that joined after the start is used, and a dead node is not.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class Demand:
    """One process to place: its name (e.g. 'actor3'), CPUs, and a node it must go to (or '')."""

    name: str
    cpus: float
    node_id: str = ""


@dataclass
class Placement:
    """Process name -> (node id, CPUs) over the nodes known alive."""

    nodes: dict[str, NodeInfo]
    processes: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def assigned(self) -> dict[str, str]:
        return {name: node for name, (node, _) in self.processes.items()}

    def free_cpus(self, node_id: str) -> float:
        used = sum(cpus for node, cpus in self.processes.values() if node == node_id)
        return self.nodes[node_id].cpus - used

    def place(self, demand: Demand, avoid: str = "") -> str:
        """Put `demand` on its required node, else on the node with the most free CPUs; among
        equals, not on `avoid` (where its predecessor just died), then the first listed."""
        self.processes.pop(demand.name, None)  # a replacement frees its predecessor's CPUs first
        # max() keeps the first of equal keys: the node order given to the plan breaks ties.
        node = demand.node_id or max(self.nodes, key=lambda n: (self.free_cpus(n), n != avoid))
        self.processes[demand.name] = (node, demand.cpus)
        return node

    def update_nodes(self, nodes: list[NodeInfo]) -> None:
        """Take the nodes alive now: processes on a node that left are forgotten."""
        self.nodes = {n.node_id: n for n in nodes}
        self.processes = {k: v for k, v in self.processes.items() if v[0] in self.nodes}

    def describe_one(self, name: str) -> str:
        """The node of process `name` as address/id-prefix."""
        node = self.processes[name][0]
        return f"{self.nodes[node].address}/{node[:8]}"

    def describe(self) -> str:
        """One line: every process and the node it went to."""
        return ", ".join(f"{name}->{self.describe_one(name)}" for name in self.processes)


def plan_placement(nodes: list[NodeInfo], demands: list[Demand]) -> Placement:
    """Place `demands` in order over `nodes` (the first node breaks ties; put the driver's first)."""
    if not nodes:
        raise RuntimeError("no alive Ray node to place the run on; check `ray status`")
    placement = Placement({n.node_id: n for n in nodes})
    for demand in demands:
        placement.place(demand)
    return placement


def alive_nodes(first: str = "") -> list[NodeInfo]:
    """The alive Ray nodes with CPUs, the node `first` (the driver's) leading the list."""
    nodes = [
        NodeInfo(
            node_id=n["NodeID"],
            address=n.get("NodeManagerAddress", ""),
            cpus=float(n.get("Resources", {}).get("CPU", 0.0)),
            gpus=float(n.get("Resources", {}).get("GPU", 0.0)),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return sorted(nodes, key=lambda n: (n.node_id != first, n.node_id))


def pin(node_id: str, soft: bool = False) -> NodeAffinitySchedulingStrategy:
    """The scheduling strategy that puts a process on `node_id` (soft: elsewhere if it is gone)."""
    return NodeAffinitySchedulingStrategy(node_id, soft=soft)


class PlacementLog:
    """placement.jsonl in the run directory: the plan at start and every re-placement after it."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, event: str, placement: Placement, names: list[str] | None = None) -> None:
        names = list(placement.assigned) if names is None else names
        row = {
            "time": time.time(),
            "event": event,
            "processes": {
                name: {
                    "node_id": placement.assigned[name],
                    "address": placement.nodes[placement.assigned[name]].address,
                }
                for name in names
                if name in placement.assigned
            },
        }
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
