"""What every env pipeline hands the rest of the system: its spec, its steps and its episode ends.

An env pipeline (CarRacing in `actors/carracing.py`, the DotReach toy in `tests/toy_env.py`) is any
class with the `EnvPipeline` methods, built from an `EnvConfig` by a factory registered in
`actors/env.py`. Its `EnvSpec` is the one source of the shapes and action bounds that the replay
shards, the learner, the policy copies and the collector are built with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# Episode end reasons, reported in `StepResult.info[INFO_END_REASON]` at an episode's last step.
LAP_DONE = "lap_done"
"""The env terminated because the lap (or task) was completed."""
LEFT_PLAYFIELD = "left_playfield"
"""The env terminated because the car left the playfield (CarRacing's -100)."""
TIME_LIMIT = "time_limit"
"""The env's time limit truncated the episode."""
NO_PROGRESS = "no_progress"
"""A training aid truncated the episode: `env.no_progress_steps` agent steps without a new tile."""
WRONG_WAY = "wrong_way"
"""A training aid terminated the episode: `env.wrong_way_steps` agent steps in a row driven against
the lap (CarRacing)."""
OTHER = "other"
"""Any other end: an env that does not say why it ended."""
END_REASONS = (LAP_DONE, LEFT_PLAYFIELD, TIME_LIMIT, NO_PROGRESS, WRONG_WAY, OTHER)

INFO_END_REASON = "end_reason"
"""`StepResult.info` key at an episode's last step: one of END_REASONS."""
INFO_TILES_VISITED = "tiles_visited_fraction"
"""`StepResult.info` key at an episode's last step: the fraction of track tiles visited (CarRacing)."""
INFO_WRONG_WAY = "wrong_way_fraction"
"""`StepResult.info` key at an episode's last step: the fraction of its agent steps that ended with
the car moving against the lap direction (CarRacing)."""
INFO_SPEED = "speed_mean"
"""`StepResult.info` key at an episode's last step: the car's mean speed in Box2D units/s (the
HUD's speed bar), taken at the end of each agent step (CarRacing)."""


@dataclass(frozen=True)
class EnvSpec:
    """Shapes and action bounds of an env pipeline; obs_shape and action_dim follow from the rest.

    The policy acts in [-1, 1]^action_dim; the pipeline maps that affinely onto
    [action_low, action_high], the env's own units (CarRacing: steer [-1, 1], gas and brake [0, 1]).
    """

    frame_shape: tuple[int, int, int]
    """uint8 (C, H, W) of one frame, as the replay stores it."""
    frame_stack: int
    """Frames stacked into one observation, oldest first, along the channels."""
    action_low: tuple[float, ...]
    """Lower bound of each action in env units."""
    action_high: tuple[float, ...]
    """Upper bound of each action in env units."""
    action_names: tuple[str, ...]
    """One name per action, used in metric keys (`actors/<name>_mean`)."""
    fps: float
    """Env frames per second of simulated time; a video with one frame per agent step plays at
    fps / action_repeat."""
    pedal: tuple[int, int] | None = None
    """(gas, brake): env actions, both with a lower bound of 0, that one signed policy axis drives
    (`env.action_map = "pedal"`): its positive part is gas, its negative part brake, so the two are
    never pressed together and the axis' neutral point presses neither. None: one policy axis per
    env action, mapped affinely."""
    obs_shape: tuple[int, int, int] = field(init=False)
    """uint8 (C * frame_stack, H, W): what the policy and the learner see."""
    action_dim: int = field(init=False)
    """Policy actions: one per env action, one fewer with a pedal axis."""

    def __post_init__(self) -> None:
        c, h, w = self.frame_shape
        dim = len(self.action_low)
        assert len(self.action_high) == dim == len(self.action_names), "one bound/name per action"
        assert self.frame_stack >= 1 and min(c, h, w) >= 1, (self.frame_shape, self.frame_stack)
        if self.pedal is not None:
            gas, brake = self.pedal
            assert gas != brake and self.action_low[gas] == self.action_low[brake] == 0, self.pedal
        object.__setattr__(self, "obs_shape", (c * self.frame_stack, h, w))
        object.__setattr__(self, "action_dim", dim - (self.pedal is not None))

    @property
    def env_action_dim(self) -> int:
        """Actions of the env itself (`action_names`), which metrics report in env units."""
        return len(self.action_low)

    def to_env_action(self, action: np.ndarray) -> np.ndarray:
        """Policy actions in [-1, 1]^action_dim (shape [..., action_dim]) in env units, float32
        [..., env_action_dim]: affinely onto [action_low, action_high] (`map_action`), and with a
        pedal axis, in the gas action's place, split into gas (its positive part) and brake."""
        if self.pedal is None:
            return map_action(action, self.action_low, self.action_high)
        gas, brake = self.pedal
        axes = [i for i in range(self.env_action_dim) if i != brake]  # policy axes, in env order
        a = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        out = np.zeros((*a.shape[:-1], self.env_action_dim), np.float32)
        out[..., axes] = map_action(a, low[axes], high[axes])
        push = a[..., axes.index(gas)]
        out[..., gas] = np.maximum(push, 0.0) * high[gas]
        out[..., brake] = np.maximum(-push, 0.0) * high[brake]
        return out


def map_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map policy actions in [-1, 1]^d (shape [..., d]) affinely onto [low, high] (float32).

    CarRacing's Box is steer [-1, 1], gas [0, 1], brake [0, 1]: passing [-1, 1] through would brake
    half the time. The input is clipped to [-1, 1] first.
    """
    a = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
    low = np.asarray(low, dtype=np.float32)
    high = np.asarray(high, dtype=np.float32)
    return (low + (a + 1.0) * 0.5 * (high - low)).astype(np.float32)


@dataclass(frozen=True)
class StepResult:
    """One agent step: every env frame and reward since the previous agent decision."""

    obs: np.ndarray
    """uint8 [C*S, H, W], oldest frame first."""
    reward: float
    """Sum of the per-frame rewards of the frames stepped (see `env_frames`)."""
    terminated: bool
    """The env ended the episode (left the playfield, or finished the lap)."""
    truncated: bool
    """The episode was cut short and bootstraps: the time limit, or a training aid's early stop."""
    env_frames: int
    """Env frames stepped: `action_repeat`, fewer when the episode ended early, and on an episode's
    first step also the frames the pipeline stepped inside reset() (`env.skip_zoom`)."""
    info: dict = field(default_factory=dict)
    """The info dict of the last env frame; at an episode's last step also INFO_END_REASON and,
    where the env has a track, INFO_TILES_VISITED, INFO_WRONG_WAY and INFO_SPEED."""


def end_reason(result: StepResult) -> str:
    """Why the episode ended at this (final) step: the env's own word, else the time limit for a
    truncation and OTHER for a termination."""
    return result.info.get(INFO_END_REASON, TIME_LIMIT if result.truncated else OTHER)


def tiles_visited(result: StepResult) -> float:
    """The fraction of track tiles visited, from an episode's final step; NaN for an env without."""
    return float(result.info.get(INFO_TILES_VISITED, np.nan))


def wrong_way(result: StepResult) -> float:
    """The fraction of agent steps driven against the lap direction, from an episode's final step;
    NaN for an env without a track."""
    return float(result.info.get(INFO_WRONG_WAY, np.nan))


def speed(result: StepResult) -> float:
    """The car's mean speed over the episode's agent steps (Box2D units/s), from an episode's final
    step; NaN for an env without a car."""
    return float(result.info.get(INFO_SPEED, np.nan))


class EnvPipeline(Protocol):
    """What the collector and the evaluation need from an env (see CarRacingPipeline)."""

    spec: EnvSpec

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode; returns the uint8 observation (the stack padded with its first frame)."""
        ...

    def step(self, action: np.ndarray) -> StepResult:
        """Act with a policy action in [-1, 1]^action_dim."""
        ...

    @property
    def last_frame(self) -> np.ndarray:
        """uint8 frame_shape: the newest frame, as the replay stores it."""
        ...

    def render_full(self) -> np.ndarray:
        """uint8 [H, W, 3]: a frame for videos."""
        ...

    def close(self) -> None: ...
