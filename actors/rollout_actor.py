"""Thin Ray wrappers: the rollout actor around a Collector, and the registry of the latest weights.

All behaviour lives in `actors/collector.py`; this module adds placement (1 CPU, 1 torch thread)
and transport: a weight source that asks the `WeightsRegistry` asynchronously, and a sink that sends
chunks to a replay shard actor with `shard.insert.remote(chunk)`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import ray
import torch
from ray.exceptions import ActorUnavailableError, RayActorError

from actors.collector import Collector, CollectStats, actor_seeds
from actors.config import ActorConfig, EnvConfig
from learner.config import LearnerConfig
from learner.weights import PolicyWeights
from replay.types import TransitionChunk

RESOLVE_TIMEOUT_S = 60.0
"""Longest wait to read a remote result that ray.wait already reported ready."""


def _ready(ref: ray.ObjectRef) -> bool:
    """Whether `ref` is ready (and local) now; starts fetching it in the background otherwise."""
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)


@ray.remote(num_cpus=0)
class WeightsRegistry:
    """Holds the latest policy weights: one ObjectRef, wrapped in a list so Ray does not resolve it.

    The learner does one `ray.put(weights)` per version and publishes `[ref]`; actors ask
    `latest(their_version)` and get `[ref]` only when it is newer. Only the latest version stays
    referenced here, so the object store frees older ones once actors drop them.
    """

    def __init__(self) -> None:
        self._version = 0
        self._ref_list: list[ray.ObjectRef] | None = None

    def publish(self, version: int, weights_ref_list: list[ray.ObjectRef]) -> None:
        if version <= self._version:
            raise ValueError(
                f"published weights version {version} is not newer than {self._version}"
            )
        assert len(weights_ref_list) == 1, "publish [ray.put(weights)]: one ref in a list"
        self._version, self._ref_list = version, weights_ref_list

    def latest(self, min_version: int) -> list[ray.ObjectRef] | None:
        """`[ref]` of the latest weights when their version is above `min_version`, else None."""
        return self._ref_list if self._version > min_version else None

    def version(self) -> int:
        return self._version


class RegistryWeightSource:
    """A `WeightSource` that never blocks collection on the registry or on the weight transfer.

    Each `fetch` checks the query issued at the previous poll with `ray.wait(timeout=0)`; when it
    returned a ref, the weights are pulled to this node in the background and handed out at a later
    poll. So new weights arrive within about two poll periods, and no poll waits on the network.
    """

    def __init__(self, registry: ray.actor.ActorHandle):
        self._registry = registry
        self._query: ray.ObjectRef | None = None
        self._weights_ref: ray.ObjectRef | None = None
        self._known_version = 0

    def fetch(self, min_version: int) -> PolicyWeights | None:
        self._known_version = max(self._known_version, min_version)
        weights = self._take_ready_weights()
        if weights is not None:
            self._known_version = max(self._known_version, weights.version)
        if self._query is None and self._weights_ref is None:
            # Ask for versions above the newest one seen, so the same weights are not pulled twice.
            self._query = self._registry.latest.remote(self._known_version)
        return weights if weights is not None and weights.version > min_version else None

    def _take_ready_weights(self) -> PolicyWeights | None:
        if self._query is not None and _ready(self._query):
            ref_list = ray.get(self._query, timeout=RESOLVE_TIMEOUT_S)
            self._query = None
            if ref_list is not None:
                self._weights_ref = ref_list[0]
        if self._weights_ref is not None and _ready(self._weights_ref):
            weights = ray.get(self._weights_ref, timeout=RESOLVE_TIMEOUT_S)
            self._weights_ref = None
            return weights
        return None


@dataclass
class _Send:
    """One chunk in flight to a shard: the call to wait on, and the chunk to send again if it is lost."""

    chunk: TransitionChunk
    ref: ray.ObjectRef
    stored: bool = False
    resends: int = 0


class ShardSink:
    """A `Sink` to a replay shard actor. Tasks of one caller run in order, so chunks arrive in order.

    A send completes when the shard stored the chunk AND its rate limiter lets this actor insert more:
    an insert whose reply says `ready: False` (held back for the shard's whole insert timeout) is
    followed by `wait_insert` calls until the shard is ready, so the actor never runs ahead. A chunk
    whose insert was lost because the shard restarted is sent again (at most MAX_RESENDS times);
    the restarted shard restores its snapshot and links the chunk to nothing it no longer has.
    """

    FOLLOW_UP_WAIT_S = 10.0
    MAX_RESENDS = 5

    def __init__(self, shard: ray.actor.ActorHandle):
        self._shard = shard

    def send(self, chunk: TransitionChunk) -> _Send:
        return _Send(chunk, self._shard.insert.remote(chunk))

    def wait(self, handle: _Send, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            ready, _ = ray.wait([handle.ref], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            try:
                info = ray.get(handle.ref, timeout=RESOLVE_TIMEOUT_S)
            except (ActorUnavailableError, RayActorError):
                if handle.stored:  # only the follow-up wait was lost: ask the restarted shard again
                    handle.ref = self._shard.wait_insert.remote(self.FOLLOW_UP_WAIT_S)
                    continue
                handle.resends += 1
                if handle.resends > self.MAX_RESENDS:
                    raise
                handle.ref = self._shard.insert.remote(handle.chunk)
                continue
            handle.stored = True
            if info.get("ready", True):
                return True
            handle.ref = self._shard.wait_insert.remote(self.FOLLOW_UP_WAIT_S)


@ray.remote(num_cpus=1)
class RolloutActor:
    """One rollout process: a Collector on 1 CPU with 1 torch thread, fed by the weights registry.

    The launcher sets `max_restarts` through `.options()`. A restarted process runs `__init__` again
    with the same arguments; it then draws a random 32-bit incarnation so it starts new streams and new
    tracks, and skips the seed steps (the replay already holds them).
    """

    def __init__(
        self,
        env_cfg: EnvConfig,
        actor_cfg: ActorConfig,
        learner_cfg: LearnerConfig,
        actor_index: int,
        run_seed: int,
        seed_steps: int,
        weights_registry: ray.actor.ActorHandle,
        shard: ray.actor.ActorHandle,
        incarnation: int = 0,
    ):
        torch.set_num_threads(1)
        if ray.get_runtime_context().was_current_actor_reconstructed:
            incarnation, seed_steps = secrets.randbits(32), 0
        self.incarnation = incarnation
        # Seeds the initial weights (version 0) and the policy's sampling noise.
        torch.manual_seed(
            actor_seeds(run_seed, actor_index, incarnation, actor_cfg.envs_per_actor).torch_seed
        )
        self.collector = Collector(
            env_cfg,
            actor_cfg,
            learner_cfg,
            actor_index,
            run_seed,
            seed_steps,
            RegistryWeightSource(weights_registry),
            ShardSink(shard),
            incarnation=incarnation,
        )

    def run_for(self, num_agent_steps: int) -> CollectStats:
        """Collect for `num_agent_steps` agent steps (summed over envs); the launcher calls this repeatedly."""
        return self.collector.collect(num_agent_steps)

    def stats(self) -> CollectStats:
        """Totals since this process started (the last KEPT_EPISODES episode returns)."""
        return self.collector.totals

    def flush(self) -> None:
        """Ship the partial chunk now."""
        self.collector.flush()

    def close(self) -> None:
        """Ship what is pending, wait for the sends and close the envs (before a clean shutdown)."""
        self.collector.close()

    def ping(self) -> int:
        """Liveness check; returns this process's incarnation (it changes when Ray restarted it)."""
        return self.incarnation
