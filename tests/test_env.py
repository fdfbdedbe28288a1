"""The CarRacing pipeline against stock `gymnasium.make("CarRacing-v3")`, byte for byte.

The stock side steps every frame and renders every frame; the crop, the frame stack and the
action-repeat reward sums are rebuilt here from its per-frame outputs, the obvious way. Policy
actions are held for blocks of 12 frames, so one stock rollout is the reference for every action
repeat that divides 12 (1, 2, 3, 4): the stock rollouts are the slow part (~130-200 frames/s).
The training aids (skip_zoom, no_progress_steps) are checked against stock too, and the episode
end reasons and tiles visited that the pipeline reports at each episode end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.box2d.car_dynamics import Car

from actors.carracing import (
    WRONG_WAY_MIN_SPEED,
    ZOOM_FRAMES,
    CarRacingPipeline,
    against_the_lap,
    track_directions,
)
from actors.config import EnvConfig
from actors.env import env_spec as make_env_spec
from actors.env import make_env
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
    StepResult,
    map_action,
)
from common.validation import ConfigError
from tests.test_resize import area_mean

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
        frame = ro.frames[i][top:bottom, left:right].transpose(2, 0, 1)
        return area_resize(frame, cfg.image_size) if cfg.image_size else frame

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
    assert obs.dtype == np.uint8 and obs.shape == env.spec.obs_shape
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
        if exp_term or exp_trunc:
            expected = TIME_LIMIT if exp_trunc else LEFT_PLAYFIELD  # no lap is finished here
            assert result.info[INFO_END_REASON] == expected, where
            assert 0.0 < result.info[INFO_TILES_VISITED] < 1.0, where
        else:
            assert INFO_END_REASON not in result.info, where
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
    "repeat4_64x64": (EnvConfig(action_repeat=4, image_size=64), ["driving", "leave_field_1"]),
}


def area_resize(frame: np.ndarray, size: int) -> np.ndarray:
    return np.rint(area_mean(frame, size, size)).astype(np.uint8)


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
        assert env.spec.obs_shape == (9, 84, 84) and env.spec.frame_shape == (3, 84, 84)
        assert env.spec.action_dim == 3
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
    assert result["actor_precision"] == "fp32" and result["actor_bf16_fps"] > 0


# -- training aids ------------------------------------------------------------------------------

STAND_STILL_POLICY = np.array([0.0, -1.0, -1.0], dtype=np.float32)  # env action (0, 0, 0)


@pytest.mark.parametrize("fast_render", [True, False], ids=["fast", "stock_render"])
def test_skip_zoom_starts_where_stock_is_after_the_zoom_frames(fast_render: bool) -> None:
    """The reset frame is stock's after 50 standing frames; the first step carries those frames
    and their rewards (the first tiles' reward among them); later steps are stock's."""
    seed, cfg = 4, EnvConfig(action_repeat=4, skip_zoom=True, fast_render=fast_render)
    policy = random_policy(104, 8 * 4)
    stock = gym.make("CarRacing-v3")
    stock.reset(seed=seed)
    zoom_reward = 0.0
    for _ in range(ZOOM_FRAMES):
        obs, reward, *_ = stock.step(np.zeros(3, dtype=np.float32))
        zoom_reward += float(reward)
    top, bottom, left, right = cfg.crop
    env = make_env(cfg)
    try:
        reset_obs = env.reset(seed=seed)
        np.testing.assert_array_equal(
            reset_obs, np.tile(obs[top:bottom, left:right].transpose(2, 0, 1), (3, 1, 1))
        )
        for j, action in enumerate(policy):
            stock_reward = 0.0
            for _ in range(cfg.action_repeat):
                obs, reward, *_ = stock.step(map_action(action, LOW, HIGH))
                stock_reward += float(reward)
            result = env.step(action)
            np.testing.assert_array_equal(
                result.obs[-3:], obs[top:bottom, left:right].transpose(2, 0, 1)
            )
            first = j == 0
            assert result.env_frames == cfg.action_repeat + (ZOOM_FRAMES if first else 0)
            assert result.reward == pytest.approx(stock_reward + (zoom_reward if first else 0.0))
    finally:
        env.close()
        stock.close()


def test_skip_zoom_frames_count_toward_the_time_limit() -> None:
    env = make_env(EnvConfig(action_repeat=4, skip_zoom=True))
    try:
        env.reset(seed=6)
        frames, result = 0, None
        while result is None or not (result.terminated or result.truncated):
            result = env.step(STAND_STILL_POLICY)
            frames += result.env_frames
        assert frames == 1000 and result.truncated and not result.terminated
        assert result.info[INFO_END_REASON] == TIME_LIMIT
    finally:
        env.close()


def test_no_progress_truncates_after_k_steps_without_a_new_tile() -> None:
    env = make_env(EnvConfig(action_repeat=4, no_progress_steps=5))
    try:
        env.reset(seed=2)
        results = [env.step(STAND_STILL_POLICY) for _ in range(5)]
        for result in results[:-1]:
            assert not (result.terminated or result.truncated)
        last = results[-1]
        assert last.truncated and not last.terminated  # bootstraps: never a termination
        assert last.info[INFO_END_REASON] == NO_PROGRESS
        assert 0.0 < last.info[INFO_TILES_VISITED] < 0.05  # only the start tiles
        with pytest.raises(RuntimeError, match="reset"):
            env.step(STAND_STILL_POLICY)
        # Straight ahead at 60% gas: a new tile every 1-3 steps until the car leaves the road at
        # a bend (~20 tiles in, on this track), then K steps without a tile end the episode.
        env.reset(seed=2)
        gas = np.array([0.0, 0.2, -1.0], dtype=np.float32)
        tiles, since_tile, step = env._env.tile_visited_count, 0, 0
        while True:
            result = env.step(gas)
            step += 1
            gained = env._env.tile_visited_count > tiles
            tiles = env._env.tile_visited_count
            since_tile = 0 if gained else since_tile + 1
            if since_tile < 5:
                assert not (result.terminated or result.truncated), f"step {step}"
            else:
                assert result.truncated and result.info[INFO_END_REASON] == NO_PROGRESS
                break
        assert tiles > 10 and step > 15  # the count restarted at every tile on the way
        # The tiles it touched, in lap order: a run from the start line, nearly without a gap.
        visited = env.visited_tiles()
        assert visited.shape == (len(env._env.track),) and visited.sum() == tiles
        reached = np.flatnonzero(visited).max()
        assert visited[0] and reached < tiles + 5 and visited[: reached + 1].mean() > 0.8
    finally:
        env.close()


def test_no_progress_off_keeps_a_standing_car_going() -> None:
    env = make_env(EnvConfig(action_repeat=4))
    try:
        env.reset(seed=2)
        assert not any(
            (r.terminated or r.truncated) for r in (env.step(STAND_STILL_POLICY) for _ in range(40))
        )
    finally:
        env.close()


def test_lap_done_is_reported_with_every_tile_visited() -> None:
    """A finished lap, staged: stock terminates when every tile is counted as visited."""
    env = make_env(EnvConfig(action_repeat=4))
    try:
        env.reset(seed=1)
        env._env.tile_visited_count = len(env._env.track)  # white box: the lap is complete
        result = env.step(STAND_STILL_POLICY)
        assert result.terminated and not result.truncated and result.env_frames == 1
        assert result.info[INFO_END_REASON] == LAP_DONE
        assert result.info[INFO_TILES_VISITED] == 1.0
    finally:
        env.close()


def test_against_the_lap_follows_the_nearest_stretch_of_the_loop() -> None:
    """A square loop driven counter-clockwise: moving with the nearest side is the lap direction,
    the opposite way is against it, and a car slower than the threshold counts as standing."""
    square = np.array([(0, 0), (10, 0), (10, 10), (0, 10)], np.float64)
    directions = track_directions(square)
    np.testing.assert_allclose(directions, [(1, 0), (0, 1), (-1, 0), (0, -1)])
    fast = 4 * WRONG_WAY_MIN_SPEED
    on_bottom, on_top = np.array([1.0, -0.5]), np.array([9.0, 10.5])
    assert not against_the_lap(square, directions, on_bottom, np.array([fast, 0.0]))
    assert against_the_lap(square, directions, on_bottom, np.array([-fast, 0.0]))
    assert against_the_lap(square, directions, on_top, np.array([fast, 0.0]))  # top runs leftwards
    assert not against_the_lap(square, directions, on_top, np.array([-fast, 1.0]))
    slow = 0.9 * WRONG_WAY_MIN_SPEED
    assert not against_the_lap(square, directions, on_bottom, np.array([-slow, 0.0]))


def _drive_from_the_start(cfg: EnvConfig, turned: bool) -> tuple[list[StepResult], int]:
    """Gently on the gas from the start of track seed 2 until the episode ends; `turned` rebuilds
    the stock car facing backwards on the start tile first (white box). Returns the steps and the
    tiles visited."""
    gas = np.array([0.0, 0.2, -1.0], dtype=np.float32)
    env = make_env(cfg)
    try:
        env.reset(seed=2)
        if turned:
            angle, x, y = env._env.track[0][1:4]
            env._env.car.destroy()
            env._env.car = Car(env._env.world, angle + np.pi, x, y)
        results = [env.step(gas)]
        while not (results[-1].terminated or results[-1].truncated):
            results.append(env.step(gas))
        return results, env._env.tile_visited_count
    finally:
        env.close()


def test_episode_end_reports_the_share_of_steps_driven_against_the_lap() -> None:
    """Straight ahead from the start is the lap direction; the same drive with the car turned round
    at the start is against it, although it visits new tiles just the same (stock pays for tiles in
    either direction): the diagnostic follows the lap, not the reward."""
    cfg = EnvConfig(action_repeat=4, no_progress_steps=20)
    fractions = {}
    for turned in (False, True):
        results, tiles = _drive_from_the_start(cfg, turned)
        assert len(results) > 25 and tiles > 10  # new tiles either way: the lap, not the reward
        fractions[turned] = results[-1].info[INFO_WRONG_WAY]
    assert fractions[False] == 0.0
    assert fractions[True] > 0.9  # all but the first steps, still below the speed threshold


def test_episode_end_reports_the_cars_mean_speed_over_its_agent_steps() -> None:
    """`INFO_SPEED` is the mean of the hull's speed read after each agent step; a car that never
    moves reports 0, and more gas drives faster."""
    cfg = EnvConfig(action_repeat=4, no_progress_steps=20)
    speeds = {}
    for gas in (0.0, 0.2, 0.6):
        env = make_env(cfg)
        try:
            env.reset(seed=2)
            action = np.array([0.0, 2 * gas - 1, -1.0], dtype=np.float32)  # affine onto [0, 1]
            seen, result = [], None
            while result is None or not (result.terminated or result.truncated):
                result = env.step(action)
                seen.append(float(np.hypot(*env._env.car.hull.linearVelocity)))
        finally:
            env.close()
        assert result.info[INFO_SPEED] == pytest.approx(np.mean(seen), rel=1e-9)
        speeds[gas] = result.info[INFO_SPEED]
    assert speeds[0.0] < 0.01  # stood still until the no-progress stop
    assert 0.0 < speeds[0.2] < speeds[0.6]


def test_wrong_way_stop_terminates_after_k_steps_in_a_row_against_the_lap() -> None:
    """`env.wrong_way_steps`: the turned car's episode ends as a terminal (no bootstrap) exactly K
    steps after it first moves against the lap fast enough; the car driving the lap is not
    stopped, so its episode ends as it does without the aid."""
    k = 6
    cfg = EnvConfig(action_repeat=4, no_progress_steps=20, wrong_way_steps=k)
    turned, _ = _drive_from_the_start(cfg, turned=True)
    last = turned[-1]
    assert last.terminated and not last.truncated
    assert last.info[INFO_END_REASON] == WRONG_WAY
    unaided, _ = _drive_from_the_start(
        EnvConfig(action_repeat=4, no_progress_steps=20), turned=True
    )
    assert len(unaided) > len(turned)  # the same drive went on without the aid
    # The first k-1 steps at speed (0.9 of the unaided run's steps are against the lap) did not
    # end it; the step that made k in a row did.
    slow_start = round(len(unaided) * (1 - unaided[-1].info[INFO_WRONG_WAY]))
    assert len(turned) == slow_start + k
    for a, b in zip(turned[:-1], unaided, strict=False):
        np.testing.assert_array_equal(a.obs, b.obs)  # the aid changes nothing before its stop
        assert a.reward == b.reward and not (a.terminated or a.truncated)
    forward, _ = _drive_from_the_start(cfg, turned=False)
    assert forward[-1].info[INFO_END_REASON] != WRONG_WAY
    assert forward[-1].info[INFO_WRONG_WAY] == 0.0


def test_training_aids_are_validated() -> None:
    for field in ("no_progress_steps", "wrong_way_steps"):
        with pytest.raises(ConfigError, match=f"env.{field}"):
            EnvConfig(**{field: -1})
    cfg = EnvConfig(no_progress_steps=10, wrong_way_steps=5, skip_zoom=True).for_evaluation()
    assert cfg.no_progress_steps == cfg.wrong_way_steps == 0 and not cfg.skip_zoom
    assert cfg == EnvConfig()


def test_image_size_shrinks_the_crop_and_is_validated() -> None:
    spec = make_env_spec(EnvConfig(image_size=64, frame_stack=3))
    assert spec.frame_shape == (3, 64, 64) and spec.obs_shape == (9, 64, 64)
    assert make_env_spec(EnvConfig()).frame_shape == (3, 84, 84)
    assert EnvConfig(image_size=64).for_evaluation().image_size == 64  # part of the policy's input
    for bad in (-1, 85):
        with pytest.raises(ConfigError, match="env.image_size"):
            EnvConfig(image_size=bad)


def test_pedal_axis_is_gas_or_brake_never_both() -> None:
    """`env.action_map = "pedal"`: steer as before, one signed axis for gas (> 0) or brake (< 0)."""
    spec = make_env_spec(EnvConfig(action_map="pedal"))
    assert spec.action_dim == 2 and spec.env_action_dim == 3
    cases = {
        (0.0, 0.0): (0.0, 0.0, 0.0),  # the neutral point presses neither pedal
        (0.5, 0.25): (0.5, 0.25, 0.0),
        (-1.0, -0.75): (-1.0, 0.0, 0.75),
        (3.0, -7.0): (1.0, 0.0, 1.0),  # clipped to [-1, 1] first
    }
    for policy, env_units in cases.items():
        np.testing.assert_array_equal(spec.to_env_action(np.array(policy)), env_units)
    batch = np.random.default_rng(0).uniform(-1, 1, (500, 2)).astype(np.float32)
    mapped = spec.to_env_action(batch)
    assert mapped.shape == (500, 3) and mapped.dtype == np.float32
    assert not np.any((mapped[:, 1] > 0) & (mapped[:, 2] > 0))
    np.testing.assert_array_equal(mapped[:, 1] - mapped[:, 2], batch[:, 1])
    # The recipe's mapping is unchanged: three axes, affine.
    affine = make_env_spec(EnvConfig())
    assert affine.action_dim == 3 and affine.pedal is None
    np.testing.assert_array_equal(affine.to_env_action(np.zeros(3)), [0.0, 0.5, 0.5])


def test_pedal_pipeline_steps_stock_carracing_with_the_mapped_actions() -> None:
    """The env stays stock: the pedal pipeline equals stock CarRacing-v3 stepped with
    `to_env_action` of each 2-D policy action, frame and reward for frame and reward."""
    cfg = EnvConfig(action_map="pedal")
    env = make_env(cfg)
    stock = gym.make("CarRacing-v3")
    try:
        rng = np.random.default_rng(11)
        obs = env.reset(seed=4)
        frame, _ = stock.reset(seed=4)
        top, bottom, left, right = cfg.crop
        np.testing.assert_array_equal(obs[-3:], frame[top:bottom, left:right].transpose(2, 0, 1))
        for step in range(60):
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            result = env.step(action)
            reward = 0.0
            for _ in range(cfg.action_repeat):
                frame, r, term, trunc, _ = stock.step(env.spec.to_env_action(action))
                reward += float(r)
            crop = frame[top:bottom, left:right].transpose(2, 0, 1)
            assert np.array_equal(result.obs[-3:], crop), f"obs differs at agent step {step}"
            assert result.reward == reward and result.terminated == term, step
            if term:
                break
    finally:
        env.close()
        stock.close()


def test_action_map_is_validated() -> None:
    with pytest.raises(ConfigError, match="env.action_map"):
        EnvConfig(action_map="throttle")
    assert EnvConfig(action_map="pedal").for_evaluation().action_map == "pedal"  # the policy's
