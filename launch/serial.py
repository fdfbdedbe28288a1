"""Serial mode: the learner, one collector and the replay in one process, no Ray.

The same objects as the distributed run (Collector, FrameReplay, RateLimiter, SacAeLearner,
UpdateLoop) with in-process transport. It is the reference for debugging and the oracle for tests:
after the replay holds `min_size` transitions, the learner takes exactly `updates_per_step` updates
per agent step, as in the recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actors.collector import Collector
from actors.config import EnvConfig
from actors.env import make_env
from actors.evaluate import evaluate_policy
from launch.config import TrainConfig
from launch.metrics import MetricsLogger, ProgressBar, plot_learning_curve
from launch.run_dir import RunDir, load_checkpoint
from launch.update_loop import UpdateLoop
from learner.learning import SacAeLearner
from learner.networks import build_policy
from learner.weights import PolicyWeights, load_policy_state
from replay.rate_limiter import RateLimiter
from replay.storage import FrameReplay
from replay.types import TransitionChunk


class LatestWeights:
    """In-process WeightSource: hands out the newest published weights."""

    def __init__(self) -> None:
        self.latest: PolicyWeights | None = None

    def publish(self, weights: PolicyWeights) -> None:
        self.latest = weights

    def fetch(self, min_version: int) -> PolicyWeights | None:
        return (
            self.latest if self.latest is not None and self.latest.version > min_version else None
        )


class ReplaySink:
    """In-process Sink: adds chunks to the replay synchronously and counts the inserts."""

    def __init__(self, replay: FrameReplay, limiter: RateLimiter):
        self.replay, self.limiter = replay, limiter

    def send(self, chunk: TransitionChunk) -> None:
        self.replay.add(chunk)
        self.limiter.record_insert(chunk.num_transitions)

    def wait(self, handle: None, timeout_s: float, stored_only: bool = False) -> bool:
        return True

    def silent_s(self, handle: None) -> float:
        return 0.0


@dataclass(frozen=True)
class SerialResult:
    env_frames: int
    env_steps: int
    updates: int
    episode_returns: tuple[float, ...]
    eval_returns: tuple[float, ...]
    run_dir: Path


def train_serial(
    cfg: TrainConfig,
    resume: Path | None = None,
    env_factory: Callable[[EnvConfig], object] = make_env,
    max_seconds: float | None = None,
) -> SerialResult:
    """Train in this process until `run.total_env_frames` (or `max_seconds`) and return the tallies."""
    run = RunDir.create(cfg)
    probe = env_factory(cfg.env)
    frame_shape, obs_shape, action_dim = probe.frame_shape, probe.obs_shape, probe.action_dim
    probe.close()

    learner = SacAeLearner(obs_shape, action_dim, cfg.learner, seed=cfg.run.seed)
    counters = {"env_frames": 0, "env_steps": 0, "updates": 0, "episodes": 0}
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        learner.load_state_dict(checkpoint["learner"])
        counters.update(checkpoint["counters"])
        # A resumed run drives new tracks: the incarnation is part of every env seed.
        counters["incarnation"] = counters.get("incarnation", 0) + 1
    replay = FrameReplay(
        cfg.replay.capacity, frame_shape, action_dim, cfg.env.frame_stack, seed=cfg.run.seed
    )
    limiter = RateLimiter(
        cfg.samples_per_insert,
        cfg.replay.min_size,
        cfg.replay.rate_tolerance * cfg.samples_per_insert,
    )
    weights = LatestWeights()
    loop = UpdateLoop(learner, weights.publish, cfg.run.weights_publish_every)
    seed_steps = 0 if resume is not None else cfg.actor.seed_steps
    collector = Collector(
        cfg.env,
        cfg.actor,
        cfg.learner,
        actor_index=0,
        run_seed=cfg.run.seed,
        seed_steps=seed_steps,
        weights_source=weights,
        sink=ReplaySink(replay, limiter),
        env_factory=env_factory,
        incarnation=counters.get("incarnation", 0),
    )
    logger = MetricsLogger(run.path)
    bar = ProgressBar(cfg.run.total_env_frames, counters["env_frames"], cfg.run.progress_bar)
    eval_policy = build_policy(obs_shape, action_dim, cfg.learner)
    returns: list[float] = []
    curve: list[tuple[int, float, float]] = []
    next_eval = (
        counters["env_frames"] + cfg.run.eval_every_frames if cfg.run.eval_every_frames else None
    )
    next_log = time.perf_counter() + cfg.run.log_every_s
    started = time.perf_counter()
    if max_seconds is None and cfg.run.max_seconds:
        max_seconds = cfg.run.max_seconds
    window_frames, window_start = 0, time.perf_counter()
    try:
        while counters["env_frames"] < cfg.run.total_env_frames:
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                break
            stats = collector.collect(collector.num_envs)
            counters["env_frames"] += stats.env_frames
            counters["env_steps"] += stats.agent_steps
            counters["episodes"] += stats.episodes
            window_frames += stats.env_frames
            returns.extend(stats.episode_returns)
            collector.flush()
            batch_size = cfg.learner.batch_size
            while replay.num_transitions >= batch_size and limiter.can_sample(batch_size):
                loop.step(replay.sample(batch_size))
                limiter.record_sample(batch_size)
            counters["updates"] = learner.updates
            if next_eval is not None and counters["env_frames"] >= next_eval:
                next_eval += cfg.run.eval_every_frames
                # The newest published weights, as the distributed run evaluates: asking the
                # learner for new ones here would bump the weights version outside the publish cadence.
                load_policy_state(eval_policy, weights.latest)
                result = evaluate_policy(
                    eval_policy,
                    cfg.env,
                    cfg.run.eval_episodes,
                    seed=cfg.run.seed + len(curve),
                    env_factory=env_factory,
                )
                curve.append((counters["env_frames"], result.mean_return, result.std_return))
                logger.write(
                    counters["env_frames"],
                    {"eval/return_mean": result.mean_return, "eval/return_std": result.std_return},
                )
                plot_learning_curve(curve, run.eval_dir / "learning_curve.png")
            if time.perf_counter() >= next_log:
                elapsed = time.perf_counter() - window_start
                row = loop.report()
                row.update(
                    {
                        "actors/env_frames_per_s": window_frames / elapsed,
                        "replay/size": replay.num_transitions,
                        "counters/env_frames": counters["env_frames"],
                        "counters/env_steps": counters["env_steps"],
                    }
                )
                if returns:
                    row["actors/episode_return"] = float(np.mean(returns[-10:]))
                logger.write(counters["env_frames"], row)
                bar.update(
                    counters["env_frames"],
                    learner.updates,
                    returns[-1] if returns else None,
                    row["actors/env_frames_per_s"],
                    row["learner/updates_per_s"],
                )
                window_frames, window_start = 0, time.perf_counter()
                next_log = time.perf_counter() + cfg.run.log_every_s
    finally:
        counters["updates"] = learner.updates
        run.save_checkpoint(learner.state_dict(), counters, cfg)
        collector.close()
        logger.close()
        bar.close()
    return SerialResult(
        env_frames=counters["env_frames"],
        env_steps=counters["env_steps"],
        updates=learner.updates,
        episode_returns=tuple(returns),
        eval_returns=tuple(c[1] for c in curve),
        run_dir=run.path,
    )
