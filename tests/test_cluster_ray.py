"""A simulated multi-node cluster (ray.cluster_utils.Cluster, all nodes on 127.0.0.1).

The run places actors and shards over the nodes itself (never left to Ray's SPREAD hint), weights
reach every actor, and a worker node killed mid-run (SIGKILL of its processes) takes its actor
down without stopping the run: the driver starts a replacement on the node that joined after the
start, which has the most free CPUs.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import ray
from conftest import train_with_fault
from ray.cluster_utils import Cluster

from launch.config import smoke
from launch.run_dir import RunDir
from launch.train import Driver, plan_topology

pytestmark = [pytest.mark.ray, pytest.mark.slow]
NODE_CPUS = 2


def node_of(handle) -> str:
    """The node an actor lives on, from the GCS (the actor itself may be busy in a long call)."""
    return ray._private.state.actors(handle._actor_id.hex())["Address"]["NodeID"]


def wait_for_cpus(total: float, timeout_s: float = 60.0) -> None:
    """Wait until every node's CPUs are registered: placement reads them."""
    deadline = time.monotonic() + timeout_s
    while ray.cluster_resources().get("CPU", 0) != total:
        assert time.monotonic() < deadline, f"cluster CPUs {ray.cluster_resources()} != {total}"
        time.sleep(0.1)


@pytest.fixture
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    # Fast health checks: a killed node is declared dead in seconds, not Ray's default ~30 s.
    system_config = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": NODE_CPUS, "_system_config": system_config},
    )
    workers = [cluster.add_node(num_cpus=NODE_CPUS) for _ in range(3)]
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    wait_for_cpus(4 * NODE_CPUS)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def test_cluster_placement_weight_delivery_and_node_loss(tmp_path, cluster):
    cluster, workers = cluster
    base = smoke()
    cfg = dataclasses.replace(
        base,
        actor=dataclasses.replace(base.actor, num_actors=3),
        replay=dataclasses.replace(base.replay, num_shards=2, snapshot_every_s=1.0),
        run=dataclasses.replace(
            base.run,
            address=cluster.address,
            run_dir=str(tmp_path / "run"),
            total_env_frames=2000,
            eval_every_frames=0,
            progress_bar=False,
        ),
    )
    topology = plan_topology(cfg, cpus=8, gpus=0)
    driver = Driver(cfg, RunDir.create(cfg), topology, resume=None)
    plan = driver.placement.assigned
    # Wait until every process is up: an actor still being created has no node yet.
    ray.get([h.ping.remote() for h in [*driver.actors, *driver.shards]], timeout=120)
    ray.get(driver.learner.device.remote(), timeout=120)
    # Every process is where the plan put it, and the plan spreads them by free CPUs.
    assert node_of(driver.learner) == plan["learner"] == driver.driver_node
    actor_nodes = [node_of(a) for a in driver.actors]
    shard_nodes = [node_of(s) for s in driver.shards]
    assert actor_nodes == [plan[f"actor{i}"] for i in range(3)]
    assert shard_nodes == [plan[f"shard{i}"] for i in range(2)]
    assert len(set(actor_nodes)) == 3 and len(set(shard_nodes)) == 2
    assert '"event": "start"' in (tmp_path / "run" / "placement.jsonl").read_text()

    # The worker node to kill: one that hosts a rollout actor and nothing else of the run.
    victim = next(
        w for w in workers if actor_nodes.count(w.node_id) and w.node_id not in shard_nodes
    )
    victim_actor = actor_nodes.index(victim.node_id)
    # A node that joins after the start: the replacement must go there (most free CPUs).
    joined = cluster.add_node(num_cpus=NODE_CPUS)
    wait_for_cpus(5 * NODE_CPUS)
    # Weights must have reached every actor, on every node, before the node goes.
    counters, killed = train_with_fault(
        driver,
        lambda: all(v > 0 for v in driver.actor_versions),
        lambda: cluster.remove_node(victim, allow_graceful=False),  # SIGKILL, as a crash
    )
    assert killed, "the node was never killed: weights did not reach every actor"
    assert counters.env_frames >= 2000 and counters.updates > 20
    assert driver.actor_restarts == 1
    alive_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert victim.node_id not in alive_nodes
    assert node_of(driver.actors[victim_actor]) == joined.node_id
    assert driver.placement.assigned[f"actor{victim_actor}"] == joined.node_id
    for actor in driver.actors:
        assert node_of(actor) in alive_nodes
    driver.close()
