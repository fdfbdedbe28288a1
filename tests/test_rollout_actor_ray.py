"""Ray-local: a RolloutActor drives real CarRacing, ships chunks to a shard and picks up new weights."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import ray

from actors.config import ActorConfig, EnvConfig
from actors.rollout_actor import RolloutActor, ShardSink, WeightsRegistry
from learner.config import LearnerConfig
from learner.networks import build_policy
from learner.weights import PolicyWeights, policy_state

pytestmark = pytest.mark.ray

TINY = LearnerConfig(latent_dim=8, num_filters=4, hidden_dim=16)
TIMEOUT_S = 60


@ray.remote(num_cpus=0)
class RecordingShard:
    """Stands in for a replay shard: records what each chunk held."""

    def __init__(self):
        self.chunks = []

    def insert(self, chunk) -> dict:
        versions = chunk.weights_version[~chunk.first].tolist()
        self.chunks.append((len(chunk), chunk.num_transitions, versions))
        return {"inserted": chunk.num_transitions, "ready": True}

    def summary(self) -> list:
        return self.chunks


def publish(registry, version: int, env_cfg: EnvConfig) -> PolicyWeights:
    policy = build_policy(env_cfg.obs_shape, env_cfg.action_dim, TINY)
    weights = PolicyWeights(version, policy_state(policy))
    ray.get(registry.publish.remote(version, [ray.put(weights)]), timeout=TIMEOUT_S)
    return weights


def incarnation_after_restart(actor, old: int) -> int:
    """Ping until an answer comes from a new process (ray.kill is asynchronous: the old process may
    still answer); a call racing the restart fails with ActorUnavailableError."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            incarnation = ray.get(actor.ping.remote(), timeout=TIMEOUT_S)
        except ray.exceptions.ActorUnavailableError:
            incarnation = old
        if incarnation != old or time.monotonic() > deadline:
            return incarnation
        time.sleep(0.2)


def test_rollout_actor_ships_chunks_and_picks_up_new_weights(ray_local):
    env_cfg = EnvConfig()
    actor_cfg = ActorConfig(
        envs_per_actor=2, weights_poll_every=2, chunk_steps=5, max_inflight_sends=2
    )
    registry, shard = WeightsRegistry.remote(), RecordingShard.remote()
    args = (env_cfg, actor_cfg, TINY, 0, 11, 10, registry, shard, 0)
    actor = RolloutActor.options(max_restarts=1).remote(*args)
    assert ray.get(actor.ping.remote(), timeout=TIMEOUT_S) == 0

    first = ray.get(actor.run_for.remote(20), timeout=TIMEOUT_S)  # 10 ticks; 5 of them seed steps
    assert first.agent_steps == 20 and first.env_frames == 80 and first.weights_version == 0
    for version in (1, 2):
        publish(registry, version, env_cfg)
        # Fetching never blocks, so the version lands a few polls (of 2 ticks) after publishing.
        calls = [ray.get(actor.run_for.remote(20), timeout=TIMEOUT_S) for _ in range(2)]
        while calls[-1].weights_version < version and len(calls) < 20:
            calls.append(ray.get(actor.run_for.remote(20), timeout=TIMEOUT_S))
        assert calls[-1].weights_version == version
    ray.get(actor.close.remote(), timeout=TIMEOUT_S)  # waits for every send

    totals = ray.get(actor.stats.remote(), timeout=TIMEOUT_S)
    assert totals.agent_steps % 20 == 0 and totals.env_frames == 4 * totals.agent_steps
    assert totals.chunks_sent == totals.agent_steps // 2 // 5
    # The rate is the counted frames over the collect time (not a speed the machine must reach).
    assert totals.frames_per_s == totals.env_frames / totals.wall_s
    chunks = ray.get(shard.summary.remote(), timeout=TIMEOUT_S)
    assert len(chunks) == totals.chunks_sent
    assert all(transitions == 5 * 2 for _, transitions, _ in chunks)
    versions = [v for _, _, chunk_versions in chunks for v in chunk_versions]
    assert versions[:10] == [0] * 10  # the seed steps
    assert versions == sorted(versions) and {0, 1, 2} <= set(versions)

    # A process restarted by Ray draws a new incarnation, so its streams never continue old ones.
    ray.kill(actor, no_restart=False)
    assert incarnation_after_restart(actor, old=0) != 0
    ray.kill(actor)


@ray.remote(num_cpus=0)
class HoldingShard:
    """A shard whose limiter holds the first insert back: `ready` False, then ready after a wait."""

    def __init__(self):
        self.waits = 0

    def insert(self, chunk) -> dict:
        return {"inserted": chunk.num_transitions, "ready": False}

    def wait_insert(self, timeout_s: float) -> dict:
        self.waits += 1
        return {"ready": self.waits >= 2}

    def wait_count(self) -> int:
        return self.waits


def test_shard_sink_waits_until_the_shard_lets_inserts_resume(ray_local):
    shard = HoldingShard.remote()
    sink = ShardSink(shard)
    handle = sink.send(SimpleNamespace(num_transitions=3))
    assert sink.wait(handle, 30.0) is True
    # Not done on the insert reply alone: it asked the shard again until it was ready.
    assert ray.get(shard.wait_count.remote()) == 2


def test_local_ray_workers_run_at_normal_priority(ray_local):
    """A local run's workers are not niced: beside a busy process they keep their share of the CPU."""
    from launch.ray_setup import niced_nodes, niceness_warning

    assert niced_nodes() == {}
    assert niceness_warning({}) is None
    line = niceness_warning({"ab12cd34ef": 15})
    assert "ab12cd34 (niceness 15)" in line and "RAY_worker_niceness=0 ray start" in line
