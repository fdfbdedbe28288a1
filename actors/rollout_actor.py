"""Thin Ray wrappers: the rollout actor around a Collector, and the registry of the latest weights.

All behaviour lives in `actors/collector.py`; this module adds placement (1 CPU, 1 torch thread)
and transport: a weight source that asks the `WeightsRegistry` asynchronously, and a sink that sends
chunks to a replay shard actor with `shard.insert.remote(chunk)`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import ray
import torch
from ray.exceptions import RayActorError

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


class RegistryPublisher:
    """The learner's side of the registry: one `ray.put` per version, one publish in flight.

    The previous publish must have landed before the next is sent, so versions arrive in order
    and the object store holds at most two versions of the weights for the learner.
    """

    def __init__(self, registry: ray.actor.ActorHandle, timeout_s: float):
        self._registry, self._timeout_s = registry, timeout_s
        self._in_flight: ray.ObjectRef | None = None

    def __call__(self, weights: PolicyWeights) -> None:
        if self._in_flight is not None:
            ray.get(self._in_flight, timeout=self._timeout_s)
        self._in_flight = self._registry.publish.remote(weights.version, [ray.put(weights)])


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
    ref: ray.ObjectRef | None
    stored: bool = False
    answered_at: float = field(default_factory=time.monotonic)
    retry_at: float = 0.0


class ShardSink:
    """A `Sink` to a replay shard actor. Tasks of one caller run in order, so chunks arrive in order.

    A send completes when the shard stored the chunk AND its rate limiter lets this actor insert more:
    an insert whose reply says `ready: False` (held back for the shard's whole insert timeout) is
    followed by `wait_insert` calls until the shard is ready, so the actor never runs ahead. Every
    reply counts as an answer (`silent_s`), so a held-back actor is never taken for a dead shard.

    A call lost to a shard failure (the shard process died, or Ray is restarting it) is made again
    after RETRY_S, for as long as the caller keeps waiting: the chunk itself when it was not stored
    yet (the restarted shard restores its snapshot and links the chunk to nothing it no longer has),
    else the follow-up wait. The pause keeps a restarting shard from being flooded with calls that
    fail at once; the caller's `actor.send_timeout_s` on silence bounds the whole.
    """

    FOLLOW_UP_WAIT_S = 10.0
    RETRY_S = 0.5

    def __init__(self, shard: ray.actor.ActorHandle):
        self._shard = shard
        self.calls_lost = 0

    def send(self, chunk: TransitionChunk) -> _Send:
        return _Send(chunk, self._shard.insert.remote(chunk))

    def silent_s(self, handle: _Send) -> float:
        return time.monotonic() - handle.answered_at

    def wait(self, handle: _Send, timeout_s: float, stored_only: bool = False) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if stored_only and handle.stored:
                return True
            if handle.ref is None:
                pause = handle.retry_at - time.monotonic()
                if pause > deadline - time.monotonic():
                    time.sleep(max(0.0, deadline - time.monotonic()))
                    return False
                time.sleep(max(0.0, pause))
                handle.ref = (
                    self._shard.wait_insert.remote(self.FOLLOW_UP_WAIT_S)
                    if handle.stored
                    else self._shard.insert.remote(handle.chunk)
                )
            ready, _ = ray.wait([handle.ref], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            try:
                info = ray.get(handle.ref, timeout=RESOLVE_TIMEOUT_S)
            except RayActorError:  # ActorDiedError and ActorUnavailableError (restarting)
                self.calls_lost += 1
                handle.ref, handle.retry_at = None, time.monotonic() + self.RETRY_S
                continue
            handle.answered_at = time.monotonic()
            handle.stored = True
            if stored_only or info.get("ready", True):
                return True
            handle.ref = self._shard.wait_insert.remote(self.FOLLOW_UP_WAIT_S)


@ray.remote(num_cpus=1)
class RolloutActor:
    """One rollout process: a Collector on 1 CPU with 1 torch thread, fed by the weights registry.

    `sacae train` replaces a dead actor itself (a new actor with a new incarnation, placed over the
    nodes alive then). Under Ray's own restarts (`max_restarts` in `.options()`) a restarted process
    runs `__init__` again with the same arguments; it then draws a random 32-bit incarnation so it
    starts new streams and new tracks, and skips the seed steps (the replay already holds them).
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

    def run_for(self, num_agent_steps: int, max_seconds: float | None = None) -> CollectStats:
        """Collect for `num_agent_steps` agent steps (summed over envs), or fewer when the replay
        holds the actor back past `max_seconds`; the launcher calls this repeatedly."""
        return self.collector.collect(num_agent_steps, max_seconds)

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
