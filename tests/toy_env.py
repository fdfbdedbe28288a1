"""DotReach: a tiny pixel task for the learning test, with the CarRacingPipeline API.

A red dot must be steered onto a green target drawn on a small image. Positions are only visible in
the pixels, so the policy must read them through the conv trunk. Reward per step is minus the
distance to the target (plus a bonus on it); episodes last `HORIZON` agent steps (time-limit
truncation). The image size comes from `EnvConfig.crop` (e.g. (0, 24, 0, 24) gives 24x24).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from actors.config import EnvConfig
from actors.env import StepResult

HORIZON = 20
SPEED = 0.25


class DotReach:
    def __init__(self, cfg: EnvConfig):
        self.cfg = cfg
        self.frame_shape = cfg.frame_shape
        self.obs_shape = cfg.obs_shape
        self.action_dim = cfg.action_dim
        self.size = self.frame_shape[1]
        self._rng = np.random.default_rng(0)
        self._frames: deque[np.ndarray] = deque(maxlen=cfg.frame_stack)

    def _draw(self) -> np.ndarray:
        frame = np.zeros(self.frame_shape, np.uint8)
        for pos, channel in ((self.target, 1), (self.pos, 0)):
            r, c = np.clip(((pos + 1) / 2 * (self.size - 3)).round().astype(int), 0, self.size - 3)
            frame[channel, r : r + 3, c : c + 3] = 255
        return frame

    def _obs(self) -> np.ndarray:
        return np.concatenate(list(self._frames), axis=0)

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.pos = self._rng.uniform(-1, 1, 2)
        self.target = self._rng.uniform(-1, 1, 2)
        self.t = 0
        frame = self._draw()
        for _ in range(self.cfg.frame_stack):
            self._frames.append(frame)
        return self._obs()

    def step(self, action: np.ndarray) -> StepResult:
        move = np.clip(np.asarray(action, np.float64)[:2], -1, 1)
        self.pos = np.clip(self.pos + SPEED * move, -1, 1)
        self.t += 1
        distance = float(np.linalg.norm(self.pos - self.target))
        reward = -distance + (1.0 if distance < 0.15 else 0.0)
        self._frames.append(self._draw())
        return StepResult(
            obs=self._obs(), reward=reward, terminated=False, truncated=self.t >= HORIZON, env_frames=1, info={}
        )

    @property
    def last_frame(self) -> np.ndarray:
        return self._frames[-1]

    def render_full(self) -> np.ndarray:
        return np.ascontiguousarray(self.last_frame.transpose(1, 2, 0))

    def close(self) -> None:
        pass
