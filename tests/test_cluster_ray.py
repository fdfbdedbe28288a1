"""A simulated multi-node cluster (ray.cluster_utils.Cluster, all nodes on 127.0.0.1).

Actors and shards are spread across nodes, weights reach every actor, and a worker node removed
mid-run takes its actors down without stopping the run: Ray restarts them on the nodes left.
"""

from __future__ import annotations

import dataclasses

import pytest
import ray
from conftest import train_with_fault
from ray.cluster_utils import Cluster

from launch.config import smoke
from launch.run_dir import RunDir
from launch.train import Driver, plan_topology

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def node_of(handle) -> str:
    """The node an actor lives on, from the GCS (the actor itself may be busy in a long call)."""
    return ray._private.state.actors(handle._actor_id.hex())["Address"]["NodeID"]


@pytest.fixture
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    # Fast health checks: a removed node is declared dead in seconds, not Ray's default ~30 s.
    system_config = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "_system_config": system_config}
    )
    workers = [cluster.add_node(num_cpus=2) for _ in range(3)]
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
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
    learner_node = node_of(driver.learner)
    actor_nodes = [node_of(a) for a in driver.actors]
    shard_nodes = [node_of(s) for s in driver.shards]
    assert len(set(actor_nodes)) >= 2, "rollout actors were not spread over nodes"
    assert len(set(shard_nodes)) == 2, "replay shards were not spread over nodes"

    # The worker node to remove: one that hosts a rollout actor but not the learner (a shard there
    # would restart from its snapshot, which the fault test covers).
    candidates = [w for w in workers if w.node_id in actor_nodes and w.node_id != learner_node]
    assert candidates, (
        f"no worker node hosts an actor without the learner: {learner_node=} {actor_nodes=} {[w.node_id for w in workers]}"
    )
    victim = min(candidates, key=lambda w: w.node_id in shard_nodes)
    # Weights must have reached every actor, on every node, before the node goes.
    counters, removed = train_with_fault(
        driver,
        lambda: all(v > 0 for v in driver.actor_versions),
        lambda: cluster.remove_node(victim),
    )
    assert counters.env_frames >= 2000 and counters.updates > 20
    assert driver.actor_restarts >= 1
    assert removed, "the node was never removed: weights did not reach every actor"
    assert all(version > 0 for version in driver.actor_versions), driver.actor_versions
    alive_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert victim.node_id not in alive_nodes
    for actor in driver.actors:
        assert node_of(actor) in alive_nodes
    driver.close()
