"""Serial mode: one collector, one replay shard and the learner in this process, no Ray.

The same objects as the distributed run (Collector, ReplayShard, LearnerWorker, Runner) with
in-process transport. It is the reference for debugging and the oracle for tests: the shard's
rate limiter does not block here (LocalBatchSource), so after `replay.min_size` transitions the
learner takes `learner.updates_per_step` updates per agent step, as in the recipe.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from actors.collector import Collector
from actors.config import EnvConfig
from actors.env import make_env
from actors.evaluate import evaluate_policy
from launch.config import TrainConfig
from launch.learner_worker import LearnerWorker
from launch.run_dir import RunDir, load_checkpoint
from launch.runner import Runner, replay_metrics
from learner.networks import build_policy
from learner.weights import PolicyWeights, load_policy_state
from replay.shard import ReplayShard
from replay.source import LocalBatchSource
from replay.types import TransitionChunk


class LatestWeights:
    """In-process WeightSource and publisher: hands out the newest published weights."""

    def __init__(self) -> None:
        self.latest: PolicyWeights | None = None

    def publish(self, weights: PolicyWeights) -> None:
        self.latest = weights

    def fetch(self, min_version: int) -> PolicyWeights | None:
        latest = self.latest
        return latest if latest is not None and latest.version > min_version else None


class ShardSink:
    """In-process Sink: the shard stores each chunk at once; nothing waits (serial mode steps the
    learner itself between collection ticks)."""

    def __init__(self, shard: ReplayShard):
        self.shard = shard

    def send(self, chunk: TransitionChunk) -> None:
        self.shard.insert(chunk)

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
    if max_seconds is not None:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, max_seconds=max_seconds))
    checkpoint = load_checkpoint(resume) if resume is not None else None
    # The learner's cores, as in the distributed run. torch's default, one thread per core, makes
    # every op wait for its slowest thread: beside one busy process on 2 cores that cost 4-10x.
    torch.set_num_threads(cfg.run.learner_cpus)
    run = RunDir.create(cfg)
    probe = env_factory(cfg.env)
    spec = probe.spec
    probe.close()
    frame_shape, obs_shape, action_dim = spec.frame_shape, spec.obs_shape, spec.action_dim
    runner = Runner(cfg, run, checkpoint, spec)
    one_shard = dataclasses.replace(cfg.replay, num_shards=1)
    shard = ReplayShard(
        0,
        one_shard,
        frame_shape,
        action_dim,
        cfg.env.frame_stack,
        cfg.samples_per_insert,
        cfg.run.seed,
        n_step=cfg.learner.n_step,
        gamma=cfg.learner.gamma,
    )
    weights = LatestWeights()
    source = LocalBatchSource(shard, cfg.learner.batch_size)
    worker = LearnerWorker(
        cfg, obs_shape, action_dim, source, weights.publish, runner.learner_state
    )
    collector = Collector(
        cfg.env,
        cfg.actor,
        cfg.learner,
        actor_index=0,
        run_seed=cfg.run.seed,
        seed_steps=runner.seed_steps,
        weights_source=weights,
        sink=ShardSink(shard),
        env_factory=env_factory,
        incarnation=runner.counters.incarnation,
    )
    eval_policy = build_policy(obs_shape, action_dim, cfg.learner)
    returns: list[float] = []
    try:
        while runner.running():
            stats = collector.collect(collector.num_envs)
            runner.on_collect(stats)
            returns.extend(stats.episode_returns)
            collector.flush()
            worker.train_until(None)  # as many updates as the rate limiter allows now
            runner.counters.updates = worker.learner.updates
            if runner.eval_due(runner.counters.env_frames):
                _evaluate(cfg, runner, worker, eval_policy, env_factory)
            if runner.checkpoint_due(runner.counters.updates):
                runner.save_checkpoint(worker.state_dict())
            if runner.log_due(time.monotonic()):
                runner.on_learner_row(worker.report())
                runner.write_row(replay_metrics([shard.stats()], cfg.env.action_repeat))
    finally:
        runner.save_checkpoint(worker.state_dict())
        collector.close()
        runner.close()
    return SerialResult(
        env_frames=runner.counters.env_frames,
        env_steps=runner.counters.env_steps,
        updates=worker.learner.updates,
        episode_returns=tuple(returns),
        eval_returns=tuple(point[1] for point in runner.curve),
        run_dir=run.path,
    )


def _evaluate(cfg: TrainConfig, runner: Runner, worker: LearnerWorker, policy, env_factory) -> None:
    """Evaluate the newest published weights, as the distributed run does (asking the learner for
    new ones would bump the weights version outside the publish cadence)."""
    frames = runner.counters.env_frames
    load_policy_state(policy, worker.policy_weights())
    video = runner.run.eval_dir / f"eval_{frames:010d}.mp4" if cfg.run.eval_video else None
    result = evaluate_policy(
        policy,
        cfg.env,
        cfg.run.eval_episodes,
        runner.eval_seed(),
        video,
        env_factory=env_factory,
        gamma=cfg.learner.gamma,
    )
    runner.record_eval(
        frames,
        result,
        reconstruction=worker.reconstruction_image(),
        value_metrics=worker.value_metrics(result.probes),
    )
