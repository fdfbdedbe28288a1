"""CarRacing-v3: its constants, its spec and its pixel pipeline (action mapping, action repeat, crop,
optional area resize, frame stack), with the training aids `env.no_progress_steps`,
`env.wrong_way_steps` and `env.skip_zoom` (off by default).

Plain Python, no Ray. With `EnvConfig.fast_render` the env is `FastCarRacing`, which renders only
the last frame of each agent step and renders it faster; with the aids off its observations,
rewards and episode ends are byte-identical to stock `gymnasium.make("CarRacing-v3")`
(tests/test_env.py checks this, and checks each aid against stock too).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.box2d.car_racing import FPS, STATE_H, STATE_W

from actors.config import EnvConfig
from actors.fast_render import FastCarRacing
from actors.resize import AreaResize
from actors.spec import (
    INFO_END_REASON,
    INFO_SPEED,
    INFO_TILES_VISITED,
    INFO_WRONG_WAY,
    LAP_DONE,
    LEFT_PLAYFIELD,
    NO_PROGRESS,
    TIME_LIMIT,
    WRONG_WAY,
    EnvSpec,
    StepResult,
)
from common.validation import require

CARRACING_ID = "CarRacing-v3"
FRAME_ROWS, FRAME_COLS = STATE_H, STATE_W
"""The env's observation is 96x96x3: `env.crop` must stay inside it."""
CARRACING_FPS = FPS
"""50 physics frames per second of simulated time."""
SOLVED_RETURN = 900.0
"""CarRacing counts as solved at a mean return >= 900 over 100 random tracks of the stock env."""
ACTION_NAMES = ("steer", "gas", "brake")
ACTION_LOW = (-1.0, 0.0, 0.0)
ACTION_HIGH = (1.0, 1.0, 1.0)
"""The env's Box: the policy's [-1, 1]^3 is mapped affinely onto it (`map_action`)."""
PEDAL = (ACTION_NAMES.index("gas"), ACTION_NAMES.index("brake"))
"""With `env.action_map = "pedal"` one policy axis drives gas (> 0) and brake (< 0)."""
ZOOM_FRAMES = CARRACING_FPS
"""The camera zooms in over the first second (zoom = f(t) for t < 1 s); `reset()` has run one frame,
so 50 more frames put t past 1 s and the camera at its final zoom."""
STAND_STILL = np.zeros(3, np.float32)
"""Env-unit action stepped during a skipped zoom: no steering, no gas, no brake (the car stays put)."""
WRONG_WAY_MIN_SPEED = 5.0
"""Box2D units/s (the HUD's speed bar; a driving policy cruises at 40-60): slower than this a car
counts as standing, never as driving the wrong way (a standing car jitters in every direction)."""


def track_directions(track_xy: np.ndarray) -> np.ndarray:
    """[n, 2] unit vectors from each track point to the next, in lap order (the last to the first).

    CarRacing's track is a closed loop listed in the direction the lap is driven: the car starts
    at point 0 facing point 1."""
    step = np.roll(track_xy, -1, axis=0) - track_xy
    return step / np.linalg.norm(step, axis=1, keepdims=True)


def against_the_lap(
    track_xy: np.ndarray, directions: np.ndarray, position: np.ndarray, velocity: np.ndarray
) -> bool:
    """Whether a car at `position` moving at `velocity` drives against the lap direction: faster
    than WRONG_WAY_MIN_SPEED and more than 90 degrees off the direction of the nearest track point.

    Turned round (a spin, or a loop off the road), a pixel policy can hardly tell a visited
    stretch from the road ahead (only the faint stripes of unvisited tiles differ), so it may
    drive the lap backwards over tiles that pay nothing until the time limit: this is how that
    shows in the diagnostics."""
    if float(np.hypot(*velocity)) < WRONG_WAY_MIN_SPEED:
        return False
    nearest = int(np.argmin(((track_xy - position) ** 2).sum(axis=1)))
    return float(directions[nearest] @ velocity) < 0.0


def carracing_spec(cfg: EnvConfig) -> EnvSpec:
    """The spec from what is known of CarRacing without building one: the crop and the env's Box."""
    top, bottom, left, right = cfg.crop
    require(
        bottom <= FRAME_ROWS and right <= FRAME_COLS,
        "env.crop",
        cfg.crop,
        f"rows and cols inside CarRacing's {FRAME_ROWS}x{FRAME_COLS} frame",
    )
    height, width = (cfg.image_size,) * 2 if cfg.image_size else (bottom - top, right - left)
    return EnvSpec(
        frame_shape=(3, height, width),
        frame_stack=cfg.frame_stack,
        action_low=ACTION_LOW,
        action_high=ACTION_HIGH,
        action_names=ACTION_NAMES,
        fps=float(CARRACING_FPS),
        pedal=PEDAL if cfg.action_map == "pedal" else None,
    )


class CarRacingPipeline:
    """CarRacing with policy actions in [-1, 1]^action_dim (`env.action_map`), action repeat,
    cropped channels-first frames and a frame stack; the training aids of `EnvConfig` when they
    are switched on."""

    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg = cfg
        self.spec = carracing_spec(cfg)
        require(
            cfg.env_id == CARRACING_ID or not cfg.fast_render,
            "env.env_id",
            cfg.env_id,
            f"{CARRACING_ID!r} with env.fast_render=True (or set env.fast_render=False)",
        )
        self._max_episode_frames = gym.spec(cfg.env_id).max_episode_steps
        if cfg.fast_render:
            self._env = FastCarRacing(obs_rows=cfg.crop[1], render_mode="rgb_array")
        else:
            # The unwrapped stock env: the time limit is counted here, as for the fast env.
            self._env = gym.make(cfg.env_id, render_mode="rgb_array").unwrapped
        self._low = self._env.action_space.low
        self._high = self._env.action_space.high
        # The spec was written without an env: it must say what this env says.
        assert tuple(self._low) == ACTION_LOW and tuple(self._high) == ACTION_HIGH, (
            self._env.action_space
        )
        self._stack = np.zeros(self.spec.obs_shape, dtype=np.uint8)
        top, bottom, left, right = cfg.crop
        self._resize = (
            AreaResize((bottom - top, right - left), self.spec.frame_shape[1:])
            if cfg.image_size
            else None
        )
        self._episode_frames = 0
        self._episode_over = True
        self._reset_frames = 0
        self._reset_reward = 0.0
        self._tiles_seen = 0
        self._steps_without_tile = 0
        self._track_xy = np.zeros((0, 2))
        self._track_directions = np.zeros((0, 2))
        self._agent_steps = 0
        self._wrong_way_steps = 0
        self._wrong_way_run = 0
        self._speed_sum = 0.0

    # Pipeline attributes older callers read; the spec is the source.
    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return self.spec.obs_shape

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.spec.frame_shape

    @property
    def action_dim(self) -> int:
        return self.spec.action_dim

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode; the stack holds S copies of the reset frame.

        With `env.skip_zoom` the env first stands still through the zoom-in; those frames and their
        rewards are handed out with the episode's first step (`StepResult.env_frames`, `reward`).
        """
        self._env.reset(seed=seed)
        self._episode_frames = 0
        self._episode_over = False
        self._reset_frames, self._reset_reward = 0, 0.0
        if self.cfg.skip_zoom:
            self._skip_zoom()
        self._tiles_seen = self._env.tile_visited_count
        self._steps_without_tile = 0
        self._track_xy = np.array([(x, y) for _, _, x, y in self._env.track], np.float64)
        self._track_directions = track_directions(self._track_xy)
        self._agent_steps = self._wrong_way_steps = self._wrong_way_run = 0
        self._speed_sum = 0.0
        frame = self._frame()
        self._stack[:] = np.tile(frame, (self.cfg.frame_stack, 1, 1))
        return self._stack.copy()

    def visited_tiles(self) -> np.ndarray:
        """Which of the track's tiles the car has touched this episode, one bool per tile in lap
        order (tile 0 at the start line): where a policy skips tiles and where it never got to."""
        return np.array([tile.road_visited for tile in self._env.road or ()], dtype=bool)

    def _skip_zoom(self) -> None:
        """Step ZOOM_FRAMES frames standing still (nothing is rendered in between with fast_render)."""
        for _ in range(ZOOM_FRAMES):
            _, frame_reward, terminated, _, _ = self._env.step(STAND_STILL)
            # A car standing still at the start can neither finish a lap nor leave the playfield.
            assert not terminated, "the episode ended during the zoom-in"
            self._reset_reward += float(frame_reward)
        self._reset_frames = self._episode_frames = ZOOM_FRAMES

    def step(self, action: np.ndarray) -> StepResult:
        """Repeat the mapped action up to `action_repeat` frames; stop at an episode end."""
        if self._episode_over:
            raise RuntimeError("CarRacingPipeline.step() after the episode ended: call reset()")
        env_action = self.spec.to_env_action(action)
        # The frames and rewards of a skipped zoom belong to the first step (0 otherwise).
        reward, frames = self._reset_reward, self._reset_frames
        self._reset_frames, self._reset_reward = 0, 0.0
        terminated = truncated = False
        info: dict = {}
        repeats = 0
        while repeats < self.cfg.action_repeat and not (terminated or truncated):
            _, frame_reward, terminated, _, info = self._env.step(env_action)
            repeats += 1
            self._episode_frames += 1
            reward += float(frame_reward)
            truncated = self._episode_frames >= self._max_episode_frames
        self._track_car()
        end_reason = self._end_reason(terminated, truncated, info)
        if end_reason == NO_PROGRESS:
            truncated = True  # bootstraps: it changes what is collected, not the objective
        elif end_reason == WRONG_WAY:
            # Terminal, not a truncation: the states after a turn look like any state on the lap,
            # so bootstrapping from them would tell the critic nothing of what the turn cost (a
            # stock episode drives the lap backwards over paid tiles); deviation 14 says more.
            terminated = True
        if end_reason is not None:
            info = {
                **info,
                INFO_END_REASON: end_reason,
                INFO_TILES_VISITED: self._env.tile_visited_count / len(self._env.track),
                INFO_WRONG_WAY: self._wrong_way_steps / self._agent_steps,
                INFO_SPEED: self._speed_sum / self._agent_steps,
            }
        self._episode_over = terminated or truncated
        c = self.spec.frame_shape[0]
        self._stack[:-c] = self._stack[c:]
        self._stack[-c:] = self._frame()
        return StepResult(self._stack.copy(), reward, terminated, truncated, frames + repeats, info)

    def _track_car(self) -> None:
        """Tally the agent step just taken: the car's speed, and whether it drove the wrong way
        (`against_the_lap`) with the steps in a row so far."""
        hull = self._env.car.hull
        position = np.array(hull.position, np.float64)
        velocity = np.array(hull.linearVelocity, np.float64)
        self._agent_steps += 1
        self._speed_sum += float(np.hypot(*velocity))
        if against_the_lap(self._track_xy, self._track_directions, position, velocity):
            self._wrong_way_steps += 1
            self._wrong_way_run += 1
        else:
            self._wrong_way_run = 0

    def _end_reason(self, terminated: bool, truncated: bool, info: dict) -> str | None:
        """Why the episode ends after this step, or None; counts steps without a new tile. The
        env's own ends come first, then the training aids (the wrong way before no progress: a car
        driving back over paid tiles also finds none)."""
        tiles = self._env.tile_visited_count
        self._steps_without_tile = 0 if tiles > self._tiles_seen else self._steps_without_tile + 1
        self._tiles_seen = tiles
        if terminated:
            # Stock v3 sets lap_finished True on a finished lap, False on leaving the playfield.
            return LAP_DONE if info.get("lap_finished") else LEFT_PLAYFIELD
        if truncated:
            return TIME_LIMIT
        if self.cfg.wrong_way_steps and self._wrong_way_run >= self.cfg.wrong_way_steps:
            return WRONG_WAY
        limit = self.cfg.no_progress_steps
        if limit and self._steps_without_tile >= limit:
            return NO_PROGRESS
        return None

    @property
    def last_frame(self) -> np.ndarray:
        """uint8 [3, H, W]: the newest cropped frame."""
        return self._stack[-self.spec.frame_shape[0] :].copy()

    def render_full(self) -> np.ndarray:
        """uint8 [400, 600, 3]: the stock "rgb_array" render of the current state, for videos."""
        return self._env.render()

    def close(self) -> None:
        self._env.close()

    def _frame(self) -> np.ndarray:
        """The current state's frame, cropped (and shrunk with `env.image_size`), channels first."""
        if isinstance(self._env, FastCarRacing):
            pixels = self._env.render_state()  # [rows, 96, 3], rows >= crop bottom
        else:
            pixels = self._env.state  # [96, 96, 3], rendered by every stock step
        top, bottom, left, right = self.cfg.crop
        frame = pixels[top:bottom, left:right].transpose(2, 0, 1)
        return frame if self._resize is None else self._resize(frame)
