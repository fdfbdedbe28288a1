"""The learning test: the serial loop must learn DotReach from pixels within a CPU budget.

A random policy scores about 0 per episode (it wanders), and so does a policy whose gradient path is
broken (with the action detached from the critic in the policy loss, checked by hand: -0.07 after
4000 frames); a working SAC-AE heads for the target and scores about 10 times the initial distance:
after 4000 frames (3504 updates) 6.74, 7.24 and 6.60 for run seeds 0, 1 and 2 (2026-12-02, a 2-core
AVX2 EPYC, 150-166 s each; 5000 frames gave 6.9 before and cost a quarter more of the suite).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from toy_env import DotReach

from actors.config import ActorConfig, EnvConfig
from launch.config import RunConfig, TrainConfig
from launch.serial import train_serial
from learner.config import LearnerConfig
from replay.config import ReplayConfig

RETURN_THRESHOLD = 5.0


def toy_config(tmp_path, total_frames: int) -> TrainConfig:
    return TrainConfig(
        env=EnvConfig(crop=(0, 24, 0, 24), frame_stack=1, action_repeat=1),
        actor=ActorConfig(envs_per_actor=1, seed_steps=500, weights_poll_every=1, chunk_steps=1),
        replay=ReplayConfig(capacity=20_000, min_size=500, rate_tolerance=4),
        learner=LearnerConfig(batch_size=64, latent_dim=16, num_filters=8, hidden_dim=64),
        run=RunConfig(
            total_env_frames=total_frames,
            run_dir=str(tmp_path / "run"),
            eval_every_frames=total_frames,
            eval_episodes=20,
            weights_publish_every=1,
            log_every_s=5.0,
            progress_bar=False,
        ),
    )


def random_return(episodes: int = 50) -> float:
    env = DotReach(EnvConfig(crop=(0, 24, 0, 24), frame_stack=1, action_repeat=1))
    rng = np.random.default_rng(0)
    total = 0.0
    for episode in range(episodes):
        env.reset(seed=1000 + episode)
        done = False
        while not done:
            result = env.step(rng.uniform(-1, 1, 3))
            total += result.reward
            done = result.terminated or result.truncated
    return total / episodes


HANG_GUARD_S = 1500
"""A run that takes this long has hung: the test's 3500 updates take about 160 s on a 2-core AVX2
EPYC (a 2-core Xeon with AMX is about 3x faster). Its pass must depend on the updates, not the machine."""


@pytest.mark.slow
@pytest.mark.timeout(HANG_GUARD_S + 300)
def test_serial_sac_ae_learns_dot_reach(tmp_path):
    assert random_return() < RETURN_THRESHOLD - 4
    result = train_serial(
        toy_config(tmp_path, total_frames=4000), env_factory=DotReach, max_seconds=HANG_GUARD_S
    )
    assert result.updates >= 3500, f"only {result.updates} updates ran"
    assert result.eval_returns, "no evaluation ran"
    assert result.eval_returns[-1] > RETURN_THRESHOLD, f"eval return {result.eval_returns[-1]:.2f}"


def test_serial_run_with_n_step_targets_samples_and_updates(tmp_path):
    """The n-step seam end to end (no Ray): the shard builds S + n frame samples, the learner's
    host buffers take them, and updates run (the math is pinned in test_learner and test_replay)."""
    cfg = toy_config(tmp_path, total_frames=400)
    cfg = dataclasses.replace(
        cfg,
        actor=dataclasses.replace(cfg.actor, seed_steps=100),
        replay=dataclasses.replace(cfg.replay, min_size=100),
        learner=dataclasses.replace(cfg.learner, batch_size=16, n_step=3),
        run=dataclasses.replace(cfg.run, eval_episodes=1),
    )
    result = train_serial(cfg, env_factory=DotReach)
    assert result.updates >= 250, f"only {result.updates} updates ran"
    assert result.eval_returns, "no evaluation ran"
