"""Env-side throughput on one core: stock CarRacing-v3 against the pixel pipeline.

    python -m actors.bench --seconds 10 --action-repeat 4

prints one JSON line. Frame rates count env frames (agent steps x action repeat), resets included
in the time; the variants run in alternating slices. Not a test: the figures depend on the
machine and its load. A further variant is one more `Throughput` in `env_bench`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import gymnasium as gym
import numpy as np
import torch
import tyro

from actors.collector import Collector
from actors.config import ActorConfig, EnvConfig
from actors.env import make_env
from learner.config import LearnerConfig
from replay.types import TransitionChunk

StepFn = Callable[[], tuple[int, bool]]


class Throughput:
    """Env frames/s of one variant, measured in time slices that keep its episode going.

    `step_fn()` returns (env frames stepped, episode over); `reset_fn()` starts an episode. The
    first reset is outside the clock; later resets count as time without frames.
    """

    def __init__(self, step_fn: StepFn, reset_fn: Callable[[], None]) -> None:
        self.step_fn = step_fn
        self.reset_fn = reset_fn
        self.frames = 0
        self.elapsed_s = 0.0
        self._started = False

    def run(self, seconds: float) -> None:
        if not self._started:
            self.reset_fn()
            self._started = True
        start = time.perf_counter()
        elapsed = 0.0
        while elapsed < seconds:
            stepped, done = self.step_fn()
            self.frames += stepped
            if done:
                self.reset_fn()
            elapsed = time.perf_counter() - start
        self.elapsed_s += elapsed

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s


def measure_fps(step_fn: StepFn, reset_fn: Callable[[], None], seconds: float) -> float:
    """Env frames/s of `step_fn` over `seconds`."""
    meter = Throughput(step_fn, reset_fn)
    meter.run(seconds)
    return meter.fps


def measure_interleaved(meters: dict[str, Throughput], seconds: float, rounds: int) -> dict:
    """Each meter runs `seconds` in total, in `rounds` alternating slices, so that a change in
    machine load during the run hits all of them alike. Returns frames/s by name."""
    for _ in range(rounds):
        for meter in meters.values():
            meter.run(seconds / rounds)
    return {name: meter.fps for name, meter in meters.items()}


def stock_meter(seed: int) -> tuple[Throughput, Callable[[], None]]:
    """Stock `gym.make("CarRacing-v3")`, one frame per step, random actions in its Box."""
    env = gym.make("CarRacing-v3")
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    seeds = iter([seed])

    def reset() -> None:
        env.reset(seed=next(seeds, None))

    def step() -> tuple[int, bool]:
        action = rng.uniform(low, high).astype(np.float32)
        _, _, terminated, truncated, _ = env.step(action)
        return 1, terminated or truncated

    return Throughput(step, reset), env.close


def pipeline_meter(cfg: EnvConfig, seed: int) -> tuple[Throughput, Callable[[], None]]:
    """`CarRacingPipeline` with random policy actions in [-1, 1]^3, counting env frames."""
    env = make_env(cfg)
    rng = np.random.default_rng(seed)
    seeds = iter([seed])

    def reset() -> None:
        env.reset(seed=next(seeds, None))

    def step() -> tuple[int, bool]:
        result = env.step(rng.uniform(-1.0, 1.0, size=env.spec.action_dim).astype(np.float32))
        return result.env_frames, result.terminated or result.truncated

    return Throughput(step, reset), env.close


class _NoWeights:
    """A weight source that never has newer weights: the actor keeps its initial policy."""

    def fetch(self, min_version: int) -> None:
        return None


class _NoOpSink:
    """A sink that drops chunks at once: the actor's own cost, without the replay's."""

    def send(self, chunk: TransitionChunk) -> None:
        return None

    def wait(self, handle: None, timeout_s: float, stored_only: bool = False) -> bool:
        return True

    def silent_s(self, handle: None) -> float:
        return 0.0


def actor_meter(
    cfg: EnvConfig, seed: int, precision: str = "auto"
) -> tuple[Throughput, Callable[[], None]]:
    """A rollout `Collector` as an actor runs it: default networks acting from the first step
    (seed_steps=0), `envs_per_actor` envs, chunks built and dropped by a no-op sink."""
    torch.manual_seed(seed)
    actor_cfg = ActorConfig(precision=precision)
    collector = Collector(cfg, actor_cfg, LearnerConfig(), 0, seed, 0, _NoWeights(), _NoOpSink())

    def step() -> tuple[int, bool]:
        # One tick of all envs; the collector resets finished episodes inside the tick.
        return collector.collect(collector.num_envs).env_frames, False

    def reset() -> None:
        collector.collect(collector.num_envs)  # the first resets (and one tick), off the clock

    return Throughput(step, reset), collector.close


def actor_fps(seconds: float, action_repeat: int, seed: int) -> float:
    """Env frames/s of one rollout actor's collector on 1 torch thread (policy inference included)."""
    torch.set_num_threads(1)
    meter, close = actor_meter(replace(EnvConfig(), action_repeat=action_repeat), seed)
    try:
        meter.run(seconds)
    finally:
        close()
    return meter.fps


def env_bench(
    seconds: float = 10.0, action_repeat: int = 4, seed: int = 0, rounds: int = 5
) -> dict:
    """Stock, pipeline and actor (pipeline + policy) env frames/s on one core, each for `seconds`.

    The actor runs twice, acting in fp32 and under bf16 autocast: `actor_fps` is the precision
    `actor.precision auto` picks (fp32), `actor_bf16_fps` the other, measured in the same rounds.
    """
    torch.set_num_threads(1)
    cfg = replace(EnvConfig(), action_repeat=action_repeat)
    auto = ActorConfig().acting_precision()
    other = "bf16" if auto == "fp32" else "fp32"
    meters, closers = {}, []
    for name, (meter, close) in {
        "stock": stock_meter(seed),
        "pipeline": pipeline_meter(cfg, seed),
        "actor": actor_meter(cfg, seed, auto),
        f"actor_{other}": actor_meter(cfg, seed, other),
    }.items():
        meters[name] = meter
        closers.append(close)
    try:
        fps = measure_interleaved(meters, seconds, rounds)
    finally:
        for close in closers:
            close()
    return {
        "action_repeat": action_repeat,
        "stock_fps": round(fps["stock"], 1),
        "pipeline_fps": round(fps["pipeline"], 1),
        "pipeline_speedup": round(fps["pipeline"] / fps["stock"], 2),
        "actor_precision": auto,
        "actor_fps": round(fps["actor"], 1),
        "actor_speedup": round(fps["actor"] / fps["stock"], 2),
        f"actor_{other}_fps": round(fps[f"actor_{other}"], 1),
    }


@dataclass
class BenchArgs:
    """Env throughput benchmark."""

    seconds: float = 10.0
    """Measuring time per variant."""
    action_repeat: int = 4
    """Env frames per agent step for the pipeline."""
    seed: int = 0
    """Seed of the first track and of the random actions."""
    rounds: int = 5
    """Alternating time slices per variant (evens out load changes on a shared machine)."""


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(BenchArgs, args=argv)
    result = env_bench(args.seconds, args.action_repeat, args.seed, args.rounds)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
