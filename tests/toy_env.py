"""DotReach: a tiny pixel task for the learning test, an env pipeline registered as `TOY_ENV_ID`.

A red dot must be steered onto a green target drawn at the centre of a small image. Positions are only visible in
the pixels, so the policy must read them through the conv trunk. The reward of a step is the progress
towards the target, 10 * (distance before - distance after), so the return is about 10 times the
distance covered; episodes last `HORIZON` agent steps (time-limit truncation). The image size comes from `EnvConfig.crop` (e.g. (0, 24, 0, 24) gives 24x24).

Importing this module registers the env the way CarRacing is registered, so
`make_env(EnvConfig(env_id="DotReach-toy", ...))` builds it; in a process that never imported it,
`env_id="toy_env:DotReach-toy"` imports it first.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from actors.config import EnvConfig
from actors.env import register_env
from actors.spec import INFO_END_REASON, TIME_LIMIT, EnvSpec, StepResult

TOY_ENV_ID = "DotReach-toy"
HORIZON = 20
SPEED = 0.25
DOT = 4


def dot_reach_spec(cfg: EnvConfig) -> EnvSpec:
    """RGB frames of the crop's size; three actions in [-1, 1], of which the first two move the dot.

    The third action is ignored: the learning test's settings were tuned with three.
    """
    top, bottom, left, right = cfg.crop
    return EnvSpec(
        frame_shape=(3, bottom - top, right - left),
        frame_stack=cfg.frame_stack,
        action_low=(-1.0, -1.0, -1.0),
        action_high=(1.0, 1.0, 1.0),
        action_names=("move_row", "move_col", "unused"),
        fps=10.0,
    )


class DotReach:
    def __init__(self, cfg: EnvConfig):
        self.cfg = cfg
        self.spec = dot_reach_spec(cfg)
        # Read by launch/serial.py's probe.
        self.frame_shape = self.spec.frame_shape
        self.obs_shape = self.spec.obs_shape
        self.action_dim = self.spec.action_dim
        self.size = self.frame_shape[1]
        self._rng = np.random.default_rng(0)
        self._frames: deque[np.ndarray] = deque(maxlen=cfg.frame_stack)

    def _draw(self) -> np.ndarray:
        frame = np.zeros(self.frame_shape, np.uint8)
        for pos, channel in ((self.target, 1), (self.pos, 0)):
            r, c = np.clip(
                ((pos + 1) / 2 * (self.size - DOT)).round().astype(int), 0, self.size - DOT
            )
            frame[channel, r : r + DOT, c : c + DOT] = 255
        return frame

    def _obs(self) -> np.ndarray:
        return np.concatenate(list(self._frames), axis=0)

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.pos = self._rng.uniform(-1, 1, 2)
        self.target = np.zeros(2)
        self.t = 0
        frame = self._draw()
        for _ in range(self.cfg.frame_stack):
            self._frames.append(frame)
        return self._obs()

    def step(self, action: np.ndarray) -> StepResult:
        move = np.clip(np.asarray(action, np.float64)[:2], -1, 1)
        before = float(np.linalg.norm(self.pos - self.target))
        self.pos = np.clip(self.pos + SPEED * move, -1, 1)
        self.t += 1
        reward = 10.0 * (before - float(np.linalg.norm(self.pos - self.target)))
        self._frames.append(self._draw())
        truncated = self.t >= HORIZON
        return StepResult(
            obs=self._obs(),
            reward=reward,
            terminated=False,
            truncated=truncated,
            env_frames=1,
            info={INFO_END_REASON: TIME_LIMIT} if truncated else {},
        )

    @property
    def last_frame(self) -> np.ndarray:
        return self._frames[-1]

    def render_full(self) -> np.ndarray:
        return np.ascontiguousarray(self.last_frame.transpose(1, 2, 0))

    def close(self) -> None:
        pass


register_env(TOY_ENV_ID, DotReach, spec=dot_reach_spec)
