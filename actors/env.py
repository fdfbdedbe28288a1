"""The CarRacing pixel pipeline: action mapping, action repeat, crop and frame stack.

Plain Python, no Ray. With `EnvConfig.fast_render` the env is `FastCarRacing`, which renders only
the last frame of each agent step and renders it faster; its observations, rewards and episode ends
are byte-identical to stock `gymnasium.make("CarRacing-v3")` (tests/test_env.py checks this).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from actors.config import EnvConfig
from actors.fast_render import FastCarRacing
from learner.config import require

FAST_ENV_ID = "CarRacing-v3"


def map_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map a policy action in [-1, 1]^d affinely onto the env's Box [low, high] (float32).

    CarRacing's Box is steer [-1, 1], gas [0, 1], brake [0, 1]: passing [-1, 1] through would brake
    half the time. The input is clipped to [-1, 1] first.
    """
    a = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
    low = np.asarray(low, dtype=np.float32)
    high = np.asarray(high, dtype=np.float32)
    return (low + (a + 1.0) * 0.5 * (high - low)).astype(np.float32)


@dataclass(frozen=True)
class StepResult:
    """One agent step: `env_frames` env frames with the same action."""

    obs: np.ndarray
    """uint8 [3*S, H, W], oldest frame first."""
    reward: float
    """Sum of the per-frame rewards of the repeated frames."""
    terminated: bool
    """The env ended the episode (left the playfield, or finished the lap)."""
    truncated: bool
    """The time limit (1000 env frames) ended the episode."""
    env_frames: int
    """Frames stepped this agent step (< action_repeat when the episode ended early)."""
    info: dict = field(default_factory=dict)
    """The info dict of the last env frame."""


class CarRacingPipeline:
    """CarRacing with policy actions in [-1, 1]^3, action repeat, cropped channels-first frames
    and a frame stack."""

    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg = cfg
        self.obs_shape = cfg.obs_shape
        self.frame_shape = cfg.frame_shape
        self.action_dim = cfg.action_dim
        require(
            cfg.env_id == FAST_ENV_ID or not cfg.fast_render,
            "env.env_id",
            cfg.env_id,
            f"{FAST_ENV_ID!r} with env.fast_render=True (or set env.fast_render=False)",
        )
        self._max_episode_frames = gym.spec(cfg.env_id).max_episode_steps
        if cfg.fast_render:
            self._env = FastCarRacing(obs_rows=cfg.crop[1], render_mode="rgb_array")
        else:
            # The unwrapped stock env: the time limit is counted here, as for the fast env.
            self._env = gym.make(cfg.env_id, render_mode="rgb_array").unwrapped
        self._low = self._env.action_space.low
        self._high = self._env.action_space.high
        self._stack = np.zeros(self.obs_shape, dtype=np.uint8)
        self._episode_frames = 0
        self._episode_over = True

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode; the stack holds S copies of the reset frame."""
        self._env.reset(seed=seed)
        self._episode_frames = 0
        self._episode_over = False
        frame = self._frame()
        self._stack[:] = np.tile(frame, (self.cfg.frame_stack, 1, 1))
        return self._stack.copy()

    def step(self, action: np.ndarray) -> StepResult:
        """Repeat the mapped action up to `action_repeat` frames; stop at an episode end."""
        if self._episode_over:
            raise RuntimeError("CarRacingPipeline.step() after the episode ended: call reset()")
        env_action = map_action(action, self._low, self._high)
        reward = 0.0
        terminated = truncated = False
        info: dict = {}
        frames = 0
        while frames < self.cfg.action_repeat and not (terminated or truncated):
            _, frame_reward, terminated, _, info = self._env.step(env_action)
            frames += 1
            self._episode_frames += 1
            reward += float(frame_reward)
            truncated = self._episode_frames >= self._max_episode_frames
        self._episode_over = terminated or truncated
        c = self.frame_shape[0]
        self._stack[:-c] = self._stack[c:]
        self._stack[-c:] = self._frame()
        return StepResult(self._stack.copy(), reward, terminated, truncated, frames, info)

    @property
    def last_frame(self) -> np.ndarray:
        """uint8 [3, H, W]: the newest cropped frame."""
        return self._stack[-self.frame_shape[0] :].copy()

    def render_full(self) -> np.ndarray:
        """uint8 [400, 600, 3]: the stock "rgb_array" render of the current state, for videos."""
        return self._env.render()

    def close(self) -> None:
        self._env.close()

    def _frame(self) -> np.ndarray:
        """The current state's frame, cropped, channels first."""
        if isinstance(self._env, FastCarRacing):
            pixels = self._env.render_state()  # [rows, 96, 3], rows >= crop bottom
        else:
            pixels = self._env.state  # [96, 96, 3], rendered by every stock step
        top, bottom, left, right = self.cfg.crop
        return pixels[top:bottom, left:right].transpose(2, 0, 1)


def make_env(cfg: EnvConfig) -> CarRacingPipeline:
    return CarRacingPipeline(cfg)
