"""The CarRacing pipeline against stock `gymnasium.make("CarRacing-v3")`, byte for byte.

The stock side steps every frame and renders every frame; the crop, the frame stack and the
action-repeat reward sums are rebuilt here from its per-frame outputs, the obvious way. Policy
actions are held for blocks of 12 frames, so one stock rollout is the reference for every action
repeat that divides 12 (1, 2, 3, 4): the stock rollouts are the slow part (~130-200 frames/s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest

from actors.config import EnvConfig
from actors.env import CarRacingPipeline, make_env, map_action
from learner.config import ConfigError

BLOCK_FRAMES = 12
LOW = np.array([-1.0, 0.0, 0.0], dtype=np.float32)
HIGH = np.array([1.0, 1.0, 1.0], dtype=np.float32)
# Straight ahead at 80% gas: leaves the playfield (-100, terminated) after ~255 frames on every
# track tried; full gas spins the wheels and the car barely moves.
LEAVE_FIELD = np.array([0.0, 0.6, -1.0], dtype=np.float32)


@dataclass
class Rollout:
    """Stock per-frame outputs of one episode (or its first `max_frames` frames)."""

    seed: int
    policy: np.ndarray  # [blocks, 3] policy actions in [-1, 1], each held BLOCK_FRAMES frames
    frames: np.ndarray  # [n + 1, 96, 96, 3] uint8: the reset frame, then one per step
    rewards: list[float]
    terminated: list[bool]
    truncated: list[bool]

    @property
    def ended(self) -> bool:
        return self.terminated[-1] or self.truncated[-1]


def stock_rollout(seed: int, policy: np.ndarray) -> Rollout:
    env = gym.make("CarRacing-v3")
    obs, _ = env.reset(seed=seed)
    frames, rewards, terminated, truncated = [obs], [], [], []
    for block in policy:
        action = map_action(block, env.action_space.low, env.action_space.high)
        for _ in range(BLOCK_FRAMES):
            obs, reward, term, trunc, _ = env.step(action)
            frames.append(obs)
            rewards.append(reward)
            terminated.append(term)
            truncated.append(trunc)
            if term or trunc:
                env.close()
                return Rollout(seed, policy, np.stack(frames), rewards, terminated, truncated)
    env.close()
    return Rollout(seed, policy, np.stack(frames), rewards, terminated, truncated)


def random_policy(
    seed: int, frames: int, low=(-1.0, -1.0, -1.0), high=(1.0, 1.0, 1.0)
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = -(-frames // BLOCK_FRAMES)
    return rng.uniform(low, high, size=(blocks, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def rollouts() -> dict[str, Rollout]:
    """~2600 stock frames: a full random episode (time limit), two random prefixes (one with gas
    and no brake: the car spins, moves and repaints visited tiles), two crashes."""
    leave = np.tile(LEAVE_FIELD, (1000 // BLOCK_FRAMES + 1, 1))
    return {
        "time_limit": stock_rollout(0, random_policy(100, 1008)),
        "random_prefix": stock_rollout(3, random_policy(103, 600)),
        "driving": stock_rollout(5, random_policy(105, 480, (-1.0, -0.2, -1.0), (1.0, 0.4, -1.0))),
        "leave_field_1": stock_rollout(1, leave),
        "leave_field_2": stock_rollout(2, leave),
    }


def expected_steps(ro: Rollout, cfg: EnvConfig):
    """Reset obs, then (obs, reward, terminated, truncated, env_frames) per agent step."""
    top, bottom, left, right = cfg.crop

    def crop(i: int) -> np.ndarray:
        return ro.frames[i][top:bottom, left:right].transpose(2, 0, 1)

    stack = [crop(0)] * cfg.frame_stack
    reset_obs = np.concatenate(stack)
    steps, start, n = [], 0, len(ro.rewards)
    k = cfg.action_repeat
    while start < n and (ro.ended or start + k <= n):
        end = min(start + k, n)
        reward = 0.0
        for f in range(start, end):
            reward += float(ro.rewards[f])
        stack = stack[1:] + [crop(end)]
        term, trunc = ro.terminated[end - 1], ro.truncated[end - 1]
        steps.append((np.concatenate(stack), reward, term, trunc, end - start))
        start = end
    return reset_obs, steps


def check_pipeline(env: CarRacingPipeline, ro: Rollout) -> int:
    """Run `env` on the rollout's seed and actions; assert identity at every agent step."""
    cfg = env.cfg
    reset_obs, steps = expected_steps(ro, cfg)
    obs = env.reset(seed=ro.seed)
    assert obs.dtype == np.uint8 and obs.shape == cfg.obs_shape
    np.testing.assert_array_equal(obs, reset_obs)
    for j, (exp_obs, exp_reward, exp_term, exp_trunc, exp_frames) in enumerate(steps):
        result = env.step(ro.policy[j * cfg.action_repeat // BLOCK_FRAMES])
        where = f"seed {ro.seed}, agent step {j}, action_repeat {cfg.action_repeat}"
        assert np.array_equal(result.obs, exp_obs), f"obs differs at {where}"
        assert result.reward == exp_reward, where
        assert (result.terminated, result.truncated) == (exp_term, exp_trunc), where
        assert result.env_frames == exp_frames, where
        np.testing.assert_array_equal(env.last_frame, exp_obs[-3:])
        if j % 97 == 5:  # a video frame in between must not disturb the observations
            assert env.render_full().shape == (400, 600, 3)
    return len(steps)


PIPELINES = {
    "repeat4": (
        EnvConfig(action_repeat=4),
        ["time_limit", "random_prefix", "driving", "leave_field_1"],
    ),
    "repeat3": (EnvConfig(action_repeat=3), ["leave_field_2", "driving", "time_limit"]),
    # Every frame and the whole 96x96 frame: the HUD and score text are drawn too.
    "repeat1_hud": (
        EnvConfig(action_repeat=1, frame_stack=2, crop=(0, 96, 0, 96)),
        ["driving", "leave_field_2"],
    ),
    "repeat2_odd_crop": (
        EnvConfig(action_repeat=2, frame_stack=4, crop=(5, 50, 11, 77)),
        ["leave_field_1", "random_prefix"],
    ),
    "stock_render": (EnvConfig(action_repeat=4, fast_render=False), ["leave_field_1"]),
}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_pipeline_matches_stock(name: str, rollouts: dict[str, Rollout]) -> None:
    cfg, which = PIPELINES[name]
    env = make_env(cfg)  # one env across episodes: resets must rebuild all per-track state
    try:
        for key in which:
            assert check_pipeline(env, rollouts[key]) > 0
    finally:
        env.close()


def test_rollouts_end_as_intended(rollouts: dict[str, Rollout]) -> None:
    ro = rollouts["time_limit"]
    assert len(ro.rewards) == 1000 and ro.truncated[-1] and not ro.terminated[-1]
    assert not any(ro.terminated) and not any(ro.truncated[:-1])
    for key in ("leave_field_1", "leave_field_2"):
        ro = rollouts[key]
        assert ro.terminated[-1] and not ro.truncated[-1], key
        assert ro.rewards[-1] == -100 and len(ro.rewards) < 1000, key
    assert not rollouts["random_prefix"].ended and not rollouts["driving"].ended


def test_episode_ends_and_repeat_sums(rollouts: dict[str, Rollout]) -> None:
    """Truncation mid-repeat (1000 = 3 * 333 + 1) and a crash inside a repeat."""
    _, steps = expected_steps(rollouts["time_limit"], EnvConfig(action_repeat=3))
    assert len(steps) == 334 and steps[-1][4] == 1
    assert steps[-1][3] and not steps[-1][2]
    assert all(s[4] == 3 and not (s[2] or s[3]) for s in steps[:-1])
    ro = rollouts["leave_field_1"]
    _, steps = expected_steps(ro, EnvConfig(action_repeat=4))
    assert steps[-1][2] and not steps[-1][3]
    assert steps[-1][1] == sum(float(r) for r in ro.rewards[-steps[-1][4] :])
    assert steps[-1][1] < -100  # the -100 plus earlier frames' -0.1


def test_reset_stack_is_padded_with_the_reset_frame() -> None:
    env = make_env(EnvConfig(frame_stack=3))
    try:
        obs = env.reset(seed=5)
        assert obs.shape == (9, 84, 84) and obs.dtype == np.uint8
        assert env.obs_shape == (9, 84, 84) and env.frame_shape == (3, 84, 84)
        assert env.action_dim == 3
        frame = env.last_frame
        assert frame.shape == (3, 84, 84)
        for i in range(3):
            np.testing.assert_array_equal(obs[3 * i : 3 * i + 3], frame)
        result = env.step(np.zeros(3, dtype=np.float32))
        np.testing.assert_array_equal(result.obs[:6], obs[3:])  # shifted by one frame
        np.testing.assert_array_equal(result.obs[6:], env.last_frame)
        assert result.env_frames == 4
        full = env.render_full()
        assert full.dtype == np.uint8 and full.shape == (400, 600, 3)
    finally:
        env.close()


def test_step_after_episode_end_raises(rollouts: dict[str, Rollout]) -> None:
    env = make_env(EnvConfig(action_repeat=4))
    try:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(3))
        env.reset(seed=1)
        result = env.step(LEAVE_FIELD)
        while not (result.terminated or result.truncated):
            result = env.step(LEAVE_FIELD)
        assert result.terminated
        with pytest.raises(RuntimeError, match="reset"):
            env.step(LEAVE_FIELD)
    finally:
        env.close()


def test_map_action() -> None:
    np.testing.assert_array_equal(map_action(np.array([-1.0, -1.0, -1.0]), LOW, HIGH), LOW)
    np.testing.assert_array_equal(map_action(np.array([1.0, 1.0, 1.0]), LOW, HIGH), HIGH)
    mid = map_action(np.zeros(3), LOW, HIGH)
    np.testing.assert_array_equal(mid, [0.0, 0.5, 0.5])
    clipped = map_action(np.array([-3.0, 2.0, -7.0]), LOW, HIGH)
    np.testing.assert_array_equal(clipped, [-1.0, 1.0, 0.0])  # brake 0 at policy <= -1
    assert clipped.dtype == np.float32
    a = np.array([0.5, -0.5, 0.25], dtype=np.float32)
    np.testing.assert_allclose(map_action(a, LOW, HIGH), [0.5, 0.25, 0.625])


def test_fast_render_needs_car_racing_v3() -> None:
    with pytest.raises(ConfigError, match="env.env_id"):
        CarRacingPipeline(EnvConfig(env_id="CarRacing-v2"))


def test_bench_cli_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark command runs and prints one JSON line (the figures are not checked)."""
    from actors.bench import main

    result = main(["--seconds", "0.3", "--rounds", "2", "--action-repeat", "2"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["action_repeat"] == 2
    assert result["stock_fps"] > 0 and result["pipeline_fps"] > 0
