"""Value probes: evaluation records where it went and what followed, for Q against observed returns."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from toy_env import HORIZON, DotReach

import actors.evaluate as evaluate
from actors.config import EnvConfig
from actors.evaluate import evaluate_policy
from learner.config import LearnerConfig
from learner.learning import SacAeLearner
from learner.networks import build_policy

TINY = LearnerConfig(latent_dim=8, num_filters=4, hidden_dim=16)
TOY = EnvConfig(crop=(0, 16, 0, 16), frame_stack=1, action_repeat=1)


class EndsEarly(DotReach):
    """DotReach that terminates (a true end: nothing to bootstrap) after 7 agent steps."""

    def step(self, action):
        result = super().step(action)
        return dataclasses.replace(result, terminated=True) if self.t == 7 else result


def evaluate_toy(monkeypatch, factory, gamma: float, episodes: int = 2):
    monkeypatch.setattr(evaluate, "PROBE_EVERY_STEPS", 5)
    torch.manual_seed(0)
    policy = build_policy((3, 16, 16), 3, TINY)
    return evaluate_policy(policy, TOY, episodes, seed=0, env_factory=factory, gamma=gamma)


def test_probes_sum_the_rewards_that_followed_and_bootstrap_a_time_limit(monkeypatch):
    undiscounted = evaluate_toy(monkeypatch, DotReach, gamma=1.0)
    probes = undiscounted.probes
    # 20-step episodes probed at steps 0, 5, 10, 15; from step 0 the sum is the episode's return.
    assert len(probes.obs) == 2 * 4 and probes.obs.dtype == np.uint8
    assert probes.returns_to_end[[0, 4]] == pytest.approx(undiscounted.returns, abs=1e-4)
    assert probes.end_index.tolist() == [0] * 4 + [1] * 4
    discounted = evaluate_toy(monkeypatch, DotReach, gamma=0.5).probes
    steps_left = HORIZON - np.array([0, 5, 10, 15] * 2)
    assert discounted.tail_discount == pytest.approx(0.5**steps_left)  # truncated: bootstrapped
    end_q = np.array([10.0, -4.0])
    expected = discounted.returns_to_end + 0.5**steps_left * end_q[[0] * 4 + [1] * 4]
    assert discounted.observed_values(end_q) == pytest.approx(expected)
    metrics = discounted.metrics(expected + 2.0, end_q)
    assert metrics["eval/q_bias"] == pytest.approx(2.0)
    assert metrics["eval/observed_value_mean"] == pytest.approx(expected.mean())


def test_a_terminated_episode_has_no_tail(monkeypatch):
    probes = evaluate_toy(monkeypatch, EndsEarly, gamma=0.9, episodes=1).probes
    assert len(probes.obs) == 2  # steps 0 and 5 of a 7-step episode
    assert probes.tail_discount.tolist() == [0.0, 0.0]
    assert probes.observed_values(np.array([1e6])) == pytest.approx(probes.returns_to_end)


def test_no_probes_without_a_discount():
    policy = build_policy((3, 16, 16), 3, TINY)
    assert evaluate_policy(policy, TOY, 1, seed=0, env_factory=DotReach).probes is None


def test_learner_q_values_are_the_smaller_head():
    learner = SacAeLearner((3, 16, 16), 3, TINY)
    obs = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    actions = torch.rand(5, 3) * 2 - 1
    with torch.no_grad():
        q1, q2 = learner.nets.critic(obs, actions)
    values = learner.q_values(obs, actions)
    assert values.shape == (5,)
    assert values.numpy() == pytest.approx(torch.min(q1, q2).squeeze(-1).numpy())
    assert not torch.equal(q1, q2)  # the heads differ: the minimum is a real choice
