"""The rollout collector: steps several envs with one batched policy call and ships transition chunks.

Plain Python, testable without Ray. Transport is injected: a `WeightSource` that hands out newer
policy weights (or None) without blocking, and a `Sink` that sends chunks to a replay shard and lets
the collector wait for the oldest send. `actors/rollout_actor.py` wraps this class in a Ray actor and
supplies the Ray versions of both.

Counting: one *tick* steps every env of the collector once, so a tick is `envs_per_actor` agent
steps. `weights_poll_every` and `chunk_steps` count ticks (agent steps per env); `seed_steps` and the
`num_agent_steps` of `collect()` count agent steps summed over the envs.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from actors.config import ActorConfig, EnvConfig
from actors.env import EnvFactory, make_env
from actors.spec import EnvSpec, StepResult, end_reason, speed, tiles_visited, wrong_way
from learner.config import LearnerConfig, require
from learner.networks import build_policy
from learner.precision import resolve_numerics
from learner.weights import PolicyWeights, load_policy_state
from replay.types import TransitionChunk

TRAIN_SEED_DOMAIN = 0
"""First spawn-key word of training env seeds; evaluation uses EVAL_SEED_DOMAIN, so the two never meet."""
EVAL_SEED_DOMAIN = 1

STREAM_SLOT_BITS, STREAM_ACTOR_BITS, STREAM_INCARNATION_BITS = 8, 23, 32
"""Stream id layout (63 bits, non-negative int64): incarnation | actor index | env slot."""

SEND_POLL_S = 1.0
"""Longest single wait on a send, so the deadline and the silence check are seen at this rate."""

KEPT_EPISODES = 100
"""Finished episodes that the running totals of a collector remember (returns, lengths, end
reasons, tiles visited)."""

PEDAL_PRESSED = 0.1
"""Env units above which a pedal (CarRacing's gas or brake) counts as pressed."""


class WeightSource(Protocol):
    """Where a collector gets policy weights. Must not block for long: it is polled mid-collection."""

    def fetch(self, min_version: int) -> PolicyWeights | None:
        """Weights with a version above `min_version` when they are at hand now, else None."""
        ...


class Sink(Protocol):
    """Where a collector ships chunks: a replay shard, or a fake in tests."""

    def send(self, chunk: TransitionChunk) -> Any:
        """Start sending `chunk`; return a handle for `wait`. Sends complete in the order they start."""
        ...

    def wait(self, handle: Any, timeout_s: float, stored_only: bool = False) -> bool:
        """Wait up to `timeout_s` for the send of `handle`; True once it completed (re-raises its error).

        A send completes when the replay stored the chunk and lets the actor go on; with
        `stored_only`, once it stored the chunk (closing: nobody will sample any more).
        """
        ...

    def silent_s(self, handle: Any) -> float:
        """Seconds since the replay last answered anything about the send of `handle`.

        A shard that holds a send back for its rate limiter still answers; one that is dead or
        hung does not. Only silence counts toward `actor.send_timeout_s`.
        """
        ...


class ReplayUnresponsiveError(TimeoutError):
    """A send to the replay shard did not complete within `actor.send_timeout_s`."""


@dataclass(frozen=True)
class ActorSeeds:
    """Seeds of one actor incarnation, spawned from the run seed (numpy SeedSequence)."""

    env_seeds: tuple[int, ...]
    """Seed of the first reset of each env slot; later resets continue that env's own generator."""
    action_seed: int
    """Generator of the uniform random seed-step actions."""
    torch_seed: int
    """For the process that owns the collector: policy sampling noise and the initial weights."""


def _seed_int(seq: np.random.SeedSequence) -> int:
    """A 63-bit int seed: wide enough that distinct sequences never share a track generator."""
    return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))


def actor_seeds(run_seed: int, actor_index: int, incarnation: int, num_envs: int) -> ActorSeeds:
    """Spawn the seeds of (run, actor, incarnation): distinct actors and restarts drive distinct tracks."""
    root = np.random.SeedSequence(run_seed, spawn_key=(TRAIN_SEED_DOMAIN, actor_index, incarnation))
    children = [_seed_int(child) for child in root.spawn(num_envs + 2)]
    return ActorSeeds(tuple(children[:num_envs]), children[num_envs], children[num_envs + 1])


def eval_seeds(seed: int, episodes: int) -> list[int]:
    """Reset seeds of evaluation episodes: spawned under EVAL_SEED_DOMAIN, disjoint from training."""
    root = np.random.SeedSequence(seed, spawn_key=(EVAL_SEED_DOMAIN,))
    return [_seed_int(child) for child in root.spawn(episodes)]


def stream_id(actor_index: int, env_slot: int, incarnation: int) -> int:
    """A stream id unique per (actor, env slot, incarnation), so a restarted actor starts new streams."""
    assert 0 <= env_slot < 1 << STREAM_SLOT_BITS and 0 <= actor_index < 1 << STREAM_ACTOR_BITS
    assert 0 <= incarnation < 1 << STREAM_INCARNATION_BITS
    incarnation_shift = STREAM_ACTOR_BITS + STREAM_SLOT_BITS
    return (incarnation << incarnation_shift) | (actor_index << STREAM_SLOT_BITS) | env_slot


@dataclass(frozen=True)
class CollectStats:
    """What a collector did during one `collect()` call (or, for `Collector.totals`, since it started)."""

    env_frames: int = 0
    """Env frames after action repeat (fewer than action_repeat per step at an episode end)."""
    agent_steps: int = 0
    """Agent decisions, summed over the envs."""
    episode_returns: tuple[float, ...] = ()
    """Undiscounted returns of the episodes that finished, in finishing order."""
    episode_lengths: tuple[int, ...] = ()
    """Lengths of those episodes in agent steps."""
    episode_end_reasons: tuple[str, ...] = ()
    """Why each of those episodes ended (`actors.spec.END_REASONS`)."""
    episode_tiles_visited: tuple[float, ...] = ()
    """Fraction of the track's tiles each of those episodes visited (NaN for an env without tiles)."""
    episode_wrong_way: tuple[float, ...] = ()
    """Fraction of each of those episodes' agent steps driven against the lap direction (NaN for
    an env without a track)."""
    episode_speed: tuple[float, ...] = ()
    """Each of those episodes' mean speed of the car, Box2D units/s (NaN for an env without a
    car)."""
    episodes: int = 0
    """Episodes that finished (the totals keep only the last KEPT_EPISODES of the tuples above)."""
    action_sums: tuple[float, ...] = ()
    """Actions taken, in env units (`EnvSpec.action_low/high`), summed per action over the agent
    steps; divide by `agent_steps` for the means. Seed steps (uniform random) included."""
    gas_brake_overlap_steps: int = 0
    """Agent steps with gas and brake both above PEDAL_PRESSED (0 for an env without pedals)."""
    chunks_sent: int = 0
    wall_s: float = 0.0
    """Time spent inside collect()."""
    send_wait_s: float = 0.0
    """Time spent waiting for the replay to accept sends (in-flight bound reached)."""
    sends_blocked: int = 0
    """Chunks that found `max_inflight_sends` in flight and waited for the oldest to complete."""
    weights_wait_s: float = 0.0
    """Time spent fetching and loading policy weights."""
    weights_version: int = 0
    """Policy version loaded at the end (0 = the initial weights)."""

    @property
    def frames_per_s(self) -> float:
        return self.env_frames / self.wall_s if self.wall_s > 0 else 0.0

    def merged(self, later: CollectStats) -> CollectStats:
        """Running totals: counts and times add up, the version is the later one."""

        def kept(ours: tuple, theirs: tuple) -> tuple:
            return (ours + theirs)[-KEPT_EPISODES:]

        return CollectStats(
            env_frames=self.env_frames + later.env_frames,
            agent_steps=self.agent_steps + later.agent_steps,
            episode_returns=kept(self.episode_returns, later.episode_returns),
            episode_lengths=kept(self.episode_lengths, later.episode_lengths),
            episode_end_reasons=kept(self.episode_end_reasons, later.episode_end_reasons),
            episode_tiles_visited=kept(self.episode_tiles_visited, later.episode_tiles_visited),
            episode_wrong_way=kept(self.episode_wrong_way, later.episode_wrong_way),
            episode_speed=kept(self.episode_speed, later.episode_speed),
            episodes=self.episodes + later.episodes,
            action_sums=_add(self.action_sums, later.action_sums),
            gas_brake_overlap_steps=self.gas_brake_overlap_steps + later.gas_brake_overlap_steps,
            chunks_sent=self.chunks_sent + later.chunks_sent,
            wall_s=self.wall_s + later.wall_s,
            send_wait_s=self.send_wait_s + later.send_wait_s,
            sends_blocked=self.sends_blocked + later.sends_blocked,
            weights_wait_s=self.weights_wait_s + later.weights_wait_s,
            weights_version=later.weights_version,
        )


def _add(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, ...]:
    """Elementwise sum of two per-action tuples; () stands for no steps yet."""
    if not a or not b:
        return a or b
    return tuple(x + y for x, y in zip(a, b, strict=True))


@dataclass
class _Counters:
    """Mutable tallies of one collect() call."""

    action_dim: int
    env_frames: int = 0
    agent_steps: int = 0
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    end_reasons: list[str] = field(default_factory=list)
    tiles_visited: list[float] = field(default_factory=list)
    wrong_way: list[float] = field(default_factory=list)
    speed: list[float] = field(default_factory=list)
    action_sums: np.ndarray = field(init=False)
    gas_brake_overlap_steps: int = 0
    chunks_sent: int = 0
    send_wait_s: float = 0.0
    sends_blocked: int = 0
    weights_wait_s: float = 0.0

    def __post_init__(self) -> None:
        self.action_sums = np.zeros(self.action_dim, np.float64)


class _ChunkBuilder:
    """Entries waiting to be shipped, in the order they were produced."""

    def __init__(self, action_dim: int):
        self.action_dim = action_dim
        self.clear()

    def clear(self) -> None:
        self.stream_ids: list[int] = []
        self.frames: list[np.ndarray] = []
        self.first: list[bool] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []
        self.versions: list[int] = []

    def __len__(self) -> int:
        return len(self.frames)

    def add_reset(self, stream: int, frame: np.ndarray) -> None:
        """The frame returned by reset(): no transition, so zero action, reward and flags."""
        self._add_frame(stream, frame, first=True)
        self.actions.append(np.zeros(self.action_dim, np.float32))
        self.rewards.append(0.0)
        self.terminated.append(False)
        self.truncated.append(False)
        self.versions.append(0)

    def add_step(
        self, stream: int, frame: np.ndarray, action: np.ndarray, result: StepResult, version: int
    ):
        """The frame reached by taking `action` from the stream's previous entry."""
        self._add_frame(stream, frame, first=False)
        self.actions.append(action)
        self.rewards.append(result.reward)
        self.terminated.append(result.terminated)
        self.truncated.append(result.truncated)
        self.versions.append(version)

    def _add_frame(self, stream: int, frame: np.ndarray, first: bool) -> None:
        # Copy: an env may hand out a view of a buffer that its next step overwrites.
        self.stream_ids.append(stream)
        self.frames.append(np.array(frame, dtype=np.uint8, copy=True))
        self.first.append(first)

    def build(self) -> TransitionChunk:
        return TransitionChunk(
            stream_ids=np.asarray(self.stream_ids, np.int64),
            frames=np.stack(self.frames),
            first=np.asarray(self.first, bool),
            actions=np.asarray(self.actions, np.float32).reshape(-1, self.action_dim),
            rewards=np.asarray(self.rewards, np.float32),
            terminated=np.asarray(self.terminated, bool),
            truncated=np.asarray(self.truncated, bool),
            weights_version=np.asarray(self.versions, np.int64),
        )


class Collector:
    """Steps `actor.envs_per_actor` envs with one batched policy call per tick and ships their entries.

    Uniform random actions in [-1, 1]^action_dim for the first `seed_steps` agent steps (stamped
    version 0), then samples of its CPU policy copy, stamped with the version of the weights loaded
    at the time. Shapes come from the envs' own `EnvSpec`.
    """

    def __init__(
        self,
        env_cfg: EnvConfig,
        actor_cfg: ActorConfig,
        learner_cfg: LearnerConfig,
        actor_index: int,
        run_seed: int,
        seed_steps: int,
        weights_source: WeightSource,
        sink: Sink,
        env_factory: EnvFactory = make_env,
        incarnation: int = 0,
    ):
        max_actors, max_envs = 1 << STREAM_ACTOR_BITS, 1 << STREAM_SLOT_BITS
        require(0 <= actor_index < max_actors, "actor_index", actor_index, f"in [0, {max_actors})")
        envs = actor_cfg.envs_per_actor
        require(envs <= max_envs, "actor.envs_per_actor", envs, f"<= {max_envs}")
        require(0 <= incarnation < 1 << 32, "incarnation", incarnation, "in [0, 2^32)")
        require(seed_steps >= 0, "seed_steps", seed_steps, ">= 0")
        self.env_cfg, self.actor_cfg = env_cfg, actor_cfg
        self.seed_steps = seed_steps
        self.weights_source, self.sink = weights_source, sink
        self.num_envs = actor_cfg.envs_per_actor
        self.seeds = actor_seeds(run_seed, actor_index, incarnation, self.num_envs)
        self.stream_ids = [stream_id(actor_index, slot, incarnation) for slot in range(envs)]
        self.envs = [env_factory(env_cfg) for _ in range(envs)]
        self.spec: EnvSpec = self.envs[0].spec
        assert all(env.spec == self.spec for env in self.envs), "one factory, one spec"
        self.policy = build_policy(self.spec.obs_shape, self.spec.action_dim, learner_cfg)
        # Acting precision is the actor's own choice (`actor.precision`), not the learner's: what
        # pays at the learner's batch of 64-128 does not at a batch of 2.
        self._numerics = resolve_numerics(torch.device("cpu"), actor_cfg.acting_precision(), "off")
        self.policy.eval().requires_grad_(False)
        self.weights_version = 0
        self.totals = CollectStats()
        self._rng = np.random.default_rng(self.seeds.action_seed)
        self._obs = np.zeros((self.num_envs, *self.spec.obs_shape), np.uint8)
        self._episode_return = np.zeros(self.num_envs, np.float64)
        self._episode_length = np.zeros(self.num_envs, np.int64)
        self._chunk = _ChunkBuilder(self.spec.action_dim)
        names = self.spec.action_names
        self._pedals = (
            (names.index("gas"), names.index("brake")) if {"gas", "brake"} <= set(names) else None
        )
        self._inflight: deque[Any] = deque()
        self._ticks = 0
        self._agent_steps = 0
        self._started = self._closed = False

    # -- the loop -------------------------------------------------------------------------------

    def collect(self, num_agent_steps: int, max_seconds: float | None = None) -> CollectStats:
        """Step all envs for `num_agent_steps` agent steps (whole ticks) and return the tallies.

        With `max_seconds`, return early (fewer steps) once that time has passed while the replay
        held a chunk back: a rate-limited actor answers its caller in bounded time, so a caller
        can tell an actor that waits for the learner from one that hangs.
        """
        assert not self._closed, "collect() after close()"
        start = time.perf_counter()
        deadline = start + max_seconds if max_seconds is not None else float("inf")
        counters = _Counters(self.spec.env_action_dim)
        if not self._started:
            for slot in range(self.num_envs):
                self._reset(slot, seed=self.seeds.env_seeds[slot])
            self._started = True
        for _ in range(-(-num_agent_steps // self.num_envs)):
            if self._ships_next_tick() and not self._make_room(counters, deadline):
                break
            self._tick(counters)
        stats = CollectStats(
            env_frames=counters.env_frames,
            agent_steps=counters.agent_steps,
            episode_returns=tuple(counters.returns),
            episode_lengths=tuple(counters.lengths),
            episode_end_reasons=tuple(counters.end_reasons),
            episode_tiles_visited=tuple(counters.tiles_visited),
            episode_wrong_way=tuple(counters.wrong_way),
            episode_speed=tuple(counters.speed),
            episodes=len(counters.returns),
            action_sums=tuple(counters.action_sums.tolist()),
            gas_brake_overlap_steps=counters.gas_brake_overlap_steps,
            chunks_sent=counters.chunks_sent,
            wall_s=time.perf_counter() - start,
            send_wait_s=counters.send_wait_s,
            sends_blocked=counters.sends_blocked,
            weights_wait_s=counters.weights_wait_s,
            weights_version=self.weights_version,
        )
        self.totals = self.totals.merged(stats)
        return stats

    def _ships_next_tick(self) -> bool:
        return (self._ticks + 1) % self.actor_cfg.chunk_steps == 0

    def _tick(self, counters: _Counters) -> None:
        """One agent step of every env: poll weights, one action batch, step, record, maybe ship."""
        if self._ticks % self.actor_cfg.weights_poll_every == 0:
            self._poll_weights(counters)
        actions, version = self._choose_actions()
        self._tally_actions(actions, counters)
        for slot, env in enumerate(self.envs):
            result = env.step(actions[slot])
            self._obs[slot] = result.obs
            stream = self.stream_ids[slot]
            self._chunk.add_step(stream, env.last_frame, actions[slot], result, version)
            counters.env_frames += result.env_frames
            self._episode_return[slot] += result.reward
            self._episode_length[slot] += 1
            if result.terminated or result.truncated:
                counters.returns.append(float(self._episode_return[slot]))
                counters.lengths.append(int(self._episode_length[slot]))
                counters.end_reasons.append(end_reason(result))
                counters.tiles_visited.append(tiles_visited(result))
                counters.wrong_way.append(wrong_way(result))
                counters.speed.append(speed(result))
                self._reset(slot, seed=None)
        self._ticks += 1
        self._agent_steps += self.num_envs
        counters.agent_steps += self.num_envs
        if self._ticks % self.actor_cfg.chunk_steps == 0:
            self._ship(counters)

    def _tally_actions(self, actions: np.ndarray, counters: _Counters) -> None:
        """Action statistics in env units: sums per action, and gas and brake pressed together."""
        env_actions = self.spec.to_env_action(actions)
        counters.action_sums += env_actions.sum(axis=0, dtype=np.float64)
        if self._pedals is not None:
            gas, brake = env_actions[:, self._pedals[0]], env_actions[:, self._pedals[1]]
            counters.gas_brake_overlap_steps += int(
                np.count_nonzero((gas > PEDAL_PRESSED) & (brake > PEDAL_PRESSED))
            )

    def _reset(self, slot: int, seed: int | None) -> None:
        """Start an episode in one env; its reset frame becomes an entry with first=True."""
        self._obs[slot] = self.envs[slot].reset(seed=seed)
        self._chunk.add_reset(self.stream_ids[slot], self.envs[slot].last_frame)
        self._episode_return[slot] = 0.0
        self._episode_length[slot] = 0

    def _choose_actions(self) -> tuple[np.ndarray, int]:
        """Random actions during the seed steps (version 0), else ONE policy call for all envs."""
        if self._agent_steps < self.seed_steps:
            shape = (self.num_envs, self.spec.action_dim)
            return self._rng.uniform(-1.0, 1.0, shape).astype(np.float32), 0
        with self._numerics.autocast() if self._numerics.bf16 else contextlib.nullcontext():
            actions = self.policy.act(torch.from_numpy(self._obs), deterministic=False)
        return actions.numpy().astype(np.float32, copy=False), self.weights_version

    def _poll_weights(self, counters: _Counters) -> None:
        start = time.perf_counter()
        weights = self.weights_source.fetch(self.weights_version)
        if weights is not None and weights.version > self.weights_version:
            load_policy_state(self.policy, weights)
            self.weights_version = weights.version
        counters.weights_wait_s += time.perf_counter() - start

    # -- transport ------------------------------------------------------------------------------

    def _ship(self, counters: _Counters | None = None) -> None:
        """Send the pending entries as one chunk, first waiting while `max_inflight_sends` are in flight."""
        if not self._chunk:
            return
        self._make_room(counters, deadline=float("inf"))
        self._inflight.append(self.sink.send(self._chunk.build()))
        self._chunk.clear()
        if counters is not None:
            counters.chunks_sent += 1

    def _make_room(self, counters: _Counters | None, deadline: float) -> bool:
        """Wait until fewer than `max_inflight_sends` chunks are in flight; False at `deadline`."""
        while self._inflight and self.sink.wait(self._inflight[0], 0.0):
            self._inflight.popleft()
        if len(self._inflight) < self.actor_cfg.max_inflight_sends:
            return True
        start = time.perf_counter()
        if counters is not None:
            counters.sends_blocked += 1
        try:
            return self._drain(self.actor_cfg.max_inflight_sends - 1, deadline)
        finally:
            if counters is not None:
                counters.send_wait_s += time.perf_counter() - start

    def _drain(self, keep: int, deadline: float, stored_only: bool = False) -> bool:
        """Wait until at most `keep` sends are in flight; False when `deadline` comes first.

        Raises ReplayUnresponsiveError when the replay stays silent about the oldest send for
        `actor.send_timeout_s` (a shard holding it back for its rate limiter is not silent).
        """
        while len(self._inflight) > keep:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return False
            oldest = self._inflight[0]
            if self.sink.wait(oldest, min(remaining, SEND_POLL_S), stored_only):
                self._inflight.popleft()
            elif self.sink.silent_s(oldest) > self.actor_cfg.send_timeout_s:
                raise ReplayUnresponsiveError(
                    f"the replay shard has not answered about a chunk for "
                    f"{self.actor_cfg.send_timeout_s} s; check that the shard is alive, or raise "
                    "--actor.send-timeout-s if it is only slow"
                )
        return True

    def flush(self) -> None:
        """Ship the partial chunk now (entries since the last chunk), without waiting for it."""
        self._ship()

    def close(self) -> None:
        """Ship what is pending, wait until the replay stored every send in flight, close the envs.
        Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            # Stored is enough: the run is ending and its learner may sample no more, so the
            # shards' rate limiters would hold these sends back for ever. Draining first also
            # makes room for the partial chunk.
            self._drain(0, deadline=float("inf"), stored_only=True)
            self.flush()
            self._drain(0, deadline=float("inf"), stored_only=True)
        finally:
            for env in self.envs:
                env.close()
