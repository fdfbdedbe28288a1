"""The collector without Ray: version stamps, chunk layout, bounded sends, seeds, batched inference;
and the evaluation function. A fake env keeps most tests fast; two use the real CarRacing pipeline."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from actors.collector import (
    KEPT_EPISODES,
    PEDAL_PRESSED,
    Collector,
    CollectStats,
    ReplayUnresponsiveError,
    actor_seeds,
    eval_seeds,
    stream_id,
)
from actors.config import ActorConfig, EnvConfig
from actors.env import env_spec, make_env
from actors.evaluate import WRONG_WAY_TRACK, EvalResult, evaluate_policy
from actors.metrics import diagnostic_metrics
from actors.spec import (
    END_REASONS,
    LAP_DONE,
    LEFT_PLAYFIELD,
    OTHER,
    TIME_LIMIT,
    EnvSpec,
    StepResult,
    map_action,
)
from learner.config import LearnerConfig
from learner.networks import build_policy
from learner.weights import PolicyWeights, policy_state
from replay.types import TransitionChunk

TINY = LearnerConfig(latent_dim=8, num_filters=4, hidden_dim=16)
FAKE_ENV = EnvConfig(crop=(0, 16, 0, 16))  # 16x16 frames: the fake env stays cheap


class FakeEnv:
    """The CarRacingPipeline API with random frames; episodes end after 3 to 8 agent steps."""

    def __init__(self, cfg: EnvConfig):
        self.cfg, self.spec = cfg, env_spec(cfg)  # CarRacing's spec at a 16x16 crop
        self.frame_shape = self.spec.frame_shape
        self._rng = np.random.default_rng(0)

    def _frame(self) -> np.ndarray:
        return self._rng.integers(0, 256, self.frame_shape, dtype=np.uint8)

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._t, self._length = 0, int(self._rng.integers(3, 9))
        self._stack = np.tile(self._frame(), (self.cfg.frame_stack, 1, 1))
        return self._stack.copy()

    def step(self, action: np.ndarray) -> StepResult:
        assert action.shape == (self.spec.action_dim,) and np.all(np.abs(action) <= 1.0)
        self._t += 1
        c = self.frame_shape[0]
        self._stack = np.concatenate([self._stack[c:], self._frame()])
        end = self._t == self._length
        terminated, truncated = end and self._length % 2 == 0, end and self._length % 2 == 1
        frames = 1 if terminated else self.cfg.action_repeat
        return StepResult(self._stack.copy(), float(self._t), terminated, truncated, frames, {})

    @property
    def last_frame(self) -> np.ndarray:
        return self._stack[-self.frame_shape[0] :].copy()

    def render_full(self) -> np.ndarray:
        return np.zeros((32, 48, 3), np.uint8)

    def close(self) -> None:
        pass


class Recording:
    """Wraps an env and logs every observation and reset seed it hands out."""

    def __init__(self, env):
        self.env, self.observations, self.reset_seeds = env, [], []
        self.spec: EnvSpec = env.spec

    def reset(self, seed=None):
        self.reset_seeds.append(seed)
        self.observations.append(self.env.reset(seed=seed))
        return self.observations[-1]

    def step(self, action):
        result = self.env.step(action)
        self.observations.append(result.obs)
        return result

    @property
    def last_frame(self):
        return self.env.last_frame

    def close(self):
        self.env.close()


def fake_env(cfg: EnvConfig) -> Recording:
    return Recording(FakeEnv(cfg))


def real_env(cfg: EnvConfig) -> Recording:
    return Recording(make_env(cfg))


class FakeSource:
    """A weight source whose current weights the test sets; records the versions it was asked for."""

    def __init__(self, weights: PolicyWeights | None = None):
        self.weights, self.asked = weights, []

    def fetch(self, min_version: int) -> PolicyWeights | None:
        self.asked.append(min_version)
        w = self.weights
        return w if w is not None and w.version > min_version else None


class SlowSink:
    """A replay that accepts one chunk at a time, each taking `delay_s`; counts sends in flight."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.chunks, self.done_at = delay_s, [], []
        self.busy_until = self.max_in_flight = 0.0

    def send(self, chunk: TransitionChunk) -> int:
        now = time.perf_counter()
        in_flight = sum(t > now for t in self.done_at) + 1
        self.max_in_flight = max(self.max_in_flight, in_flight)
        self.busy_until = max(self.busy_until, now) + self.delay_s
        self.chunks.append(chunk)
        self.done_at.append(self.busy_until)
        return len(self.chunks) - 1

    def wait(self, handle: int, timeout_s: float, stored_only: bool = False) -> bool:
        remaining_s = self.done_at[handle] - time.perf_counter()
        time.sleep(min(max(remaining_s, 0.0), timeout_s))
        return remaining_s <= timeout_s

    def silent_s(self, handle: int) -> float:
        return 0.0  # a slow replay still answers

    def entries(self) -> TransitionChunk:
        """All chunks concatenated into one."""
        fields = TransitionChunk.__dataclass_fields__
        return TransitionChunk(
            **{f: np.concatenate([getattr(c, f) for c in self.chunks]) for f in fields}
        )


def weights(version: int, env_cfg: EnvConfig = FAKE_ENV) -> PolicyWeights:
    spec = env_spec(env_cfg)
    policy = build_policy(spec.obs_shape, spec.action_dim, TINY)
    return PolicyWeights(version, policy_state(policy))


def make_collector(
    env_cfg=FAKE_ENV,
    env_factory=fake_env,
    source=None,
    sink=None,
    actor_index=0,
    seed_steps=0,
    **actor,
) -> Collector:
    actor_cfg = ActorConfig(
        **{"envs_per_actor": 2, "chunk_steps": 3, "weights_poll_every": 4, **actor}
    )
    return Collector(
        env_cfg,
        actor_cfg,
        TINY,
        actor_index,
        7,
        seed_steps,
        source or FakeSource(),
        sink or SlowSink(),
        env_factory=env_factory,
    )


def transitions_by_tick(entries: TransitionChunk, stream: int) -> np.ndarray:
    """Row indices of a stream's transitions; the k-th is the one of tick k."""
    return np.flatnonzero((entries.stream_ids == stream) & ~entries.first)


def test_versions_stamped_seed_steps_zero_and_switch_mid_run():
    source, sink = FakeSource(), SlowSink()
    collector = make_collector(source=source, sink=sink, seed_steps=8)  # 4 ticks of random actions
    collector.collect(20)  # ticks 0-9, no weights published yet
    source.weights = weights(3)
    collector.collect(20)  # ticks 10-19; the polls at ticks 12 and 16 see version 3
    collector.close()
    entries = sink.entries()
    assert not entries.weights_version[entries.first].any()
    for stream in collector.stream_ids:
        versions = entries.weights_version[transitions_by_tick(entries, stream)]
        assert versions.tolist() == [0] * 12 + [3] * 8
    assert collector.weights_version == 3
    for name, value in collector.policy.state_dict().items():
        assert torch.equal(value, torch.from_numpy(source.weights.state[name]))


@pytest.mark.parametrize(("precision", "bf16"), [("auto", False), ("fp32", False), ("bf16", True)])
def test_acting_precision_is_the_actors_own_choice(precision, bf16):
    """`actor.precision` decides, whatever the learner's: auto acts in fp32 (measured faster at a
    batch of 2); bf16 acting still produces actions inside the bounds."""
    collector = make_collector(precision=precision)
    assert collector.actor_cfg.acting_precision() == ("bf16" if bf16 else "fp32")
    assert collector._numerics.bf16 is bf16
    collector.weights_source.weights = weights(1)
    collector.collect(4)
    collector.close()
    actions = collector.sink.entries().actions
    assert actions.size and np.isfinite(actions).all()


def test_acting_precision_rejects_unknown_values():
    with pytest.raises(ValueError, match="actor.precision.*fp16.*auto, fp32, bf16"):
        ActorConfig(precision="fp16")


def test_seed_steps_carry_version_zero_even_with_weights_available():
    sink = SlowSink()
    collector = make_collector(source=FakeSource(weights(5)), sink=sink, seed_steps=8)
    collector.collect(16)
    collector.close()
    entries = sink.entries()
    for stream in collector.stream_ids:
        assert (
            entries.weights_version[transitions_by_tick(entries, stream)].tolist()
            == [0] * 4 + [5] * 4
        )


def rebuild_stacks(entries: TransitionChunk, stream: int, frame_stack: int) -> list[np.ndarray]:
    """Observation stacks of a stream from its entries: the last S frames, padded with the first."""
    stacks, episode = [], []
    for i in np.flatnonzero(entries.stream_ids == stream):
        episode = [entries.frames[i]] if entries.first[i] else [*episode, entries.frames[i]]
        window = [episode[0]] * max(0, frame_stack - len(episode)) + episode[-frame_stack:]
        stacks.append(np.concatenate(window))
    return stacks


@pytest.mark.parametrize(
    "env_cfg, env_factory, agent_steps",
    [(FAKE_ENV, fake_env, 50), (EnvConfig(), real_env, 48)],
    ids=["fake", "carracing"],
)
def test_chunks_well_formed_and_rebuild_observation_stacks(env_cfg, env_factory, agent_steps):
    sink = SlowSink()
    collector = make_collector(env_cfg, env_factory, sink=sink, seed_steps=20)
    stats = collector.collect(agent_steps)
    collector.close()  # ships the partial chunk
    assert stats.agent_steps == agent_steps and stats.chunks_sent == agent_steps // 2 // 3
    for chunk in sink.chunks[:-1]:  # a full chunk: chunk_steps ticks of both envs
        assert chunk.num_transitions == 3 * 2
    entries = sink.entries()
    n, (c, h, w) = len(entries), collector.spec.frame_shape
    assert entries.frames.shape == (n, c, h, w) and entries.frames.dtype == np.uint8
    assert entries.actions.shape == (n, 3) and entries.actions.dtype == np.float32
    assert entries.stream_ids.dtype == entries.weights_version.dtype == np.int64
    assert entries.first.dtype == entries.terminated.dtype == entries.truncated.dtype == bool
    assert entries.rewards.dtype == np.float32
    first = entries.first
    assert not (entries.actions[first].any() or entries.rewards[first].any())
    assert not (entries.terminated[first].any() or entries.truncated[first].any())
    for slot, stream in enumerate(collector.stream_ids):
        rows = np.flatnonzero(entries.stream_ids == stream)
        # An episode ends exactly where the next entry of the stream is a reset frame.
        ends = entries.terminated[rows] | entries.truncated[rows]
        assert ends[:-1].tolist() == first[rows][1:].tolist()
        env = collector.envs[slot]
        assert entries.first[rows].sum() == len(env.reset_seeds)
        rebuilt = rebuild_stacks(entries, stream, env_cfg.frame_stack)
        assert len(rebuilt) == len(env.observations)
        for stack, obs in zip(rebuilt, env.observations, strict=True):
            np.testing.assert_array_equal(stack, obs)
    assert stats.episodes == int(entries.first.sum()) - 2
    # Every step repeats its action, except the fake env's terminal steps (one frame each); the
    # CarRacing car does not leave the playfield or finish a lap in 48 steps.
    terminal = int(entries.terminated.sum())
    assert stats.env_frames == (agent_steps - terminal) * env_cfg.action_repeat + terminal
    assert stats.frames_per_s == stats.env_frames / stats.wall_s  # its counted frames over its time


class GatedSink(SlowSink):
    """A replay that completes a send only when the actor blocks on it (a wait with a timeout):
    a poll never finds a send done, so sends pile up to the bound, whatever the machine's speed."""

    def __init__(self):
        super().__init__()
        self.done: set[int] = set()
        self.max_pending = 0

    def send(self, chunk):
        handle = super().send(chunk)
        self.max_pending = max(self.max_pending, len(self.chunks) - len(self.done))
        return handle

    def wait(self, handle, timeout_s, stored_only=False):
        if timeout_s > 0:
            self.done.add(handle)
        return handle in self.done


def test_inflight_sends_bounded_by_a_slow_replay():
    sink = GatedSink()
    collector = make_collector(sink=sink, chunk_steps=1, max_inflight_sends=2)
    stats = collector.collect(60)
    assert len(collector._inflight) <= 2
    collector.close()
    assert stats.chunks_sent == 30 and len(sink.chunks) == 30
    assert sink.max_pending == 2  # the bound was reached and never exceeded
    assert stats.sends_blocked == 28  # every send after the first two waited for the oldest


def test_unresponsive_replay_raises_after_the_send_timeout():
    class DeadSink(SlowSink):
        def wait(self, handle, timeout_s, stored_only=False):
            return False

        def silent_s(self, handle):
            return 1.0  # no answer for a second

    collector = make_collector(
        sink=DeadSink(), chunk_steps=1, max_inflight_sends=1, send_timeout_s=0.01
    )
    with pytest.raises(ReplayUnresponsiveError, match="send-timeout-s"):
        collector.collect(10)


class HoldingSink(SlowSink):
    """A replay that answers but holds every send back (a rate limiter waiting for the learner)."""

    def wait(self, handle, timeout_s, stored_only=False):
        time.sleep(min(timeout_s, 0.001))
        return stored_only  # stored at once, held back from going on

    def silent_s(self, handle):
        return 0.0


def test_held_back_actor_returns_at_its_deadline_without_an_error():
    collector = make_collector(
        sink=HoldingSink(), chunk_steps=1, max_inflight_sends=1, send_timeout_s=0.01
    )
    stats = collector.collect(1000, max_seconds=0.05)
    # One chunk went out, then every tick waited for it: fewer steps than asked, and no error,
    # because the replay kept answering (being held back is not being unresponsive).
    assert stats.chunks_sent == 1 and stats.agent_steps == collector.num_envs
    assert stats.sends_blocked == 1
    # Closing waits until the replay stored every chunk, not for its rate limiter: at the end
    # of a run no learner samples any more, so the actor would wait for ever.
    collector.close()
    assert not collector._inflight


def test_seeds_and_streams_differ_across_actors_slots_and_incarnations():
    seeds = [actor_seeds(7, actor, inc, 4) for actor in range(8) for inc in range(3)]
    env_seeds = [s for actor in seeds for s in actor.env_seeds]
    assert len(set(env_seeds)) == len(env_seeds) == 8 * 3 * 4
    assert not set(env_seeds) & set(eval_seeds(7, 100))
    assert actor_seeds(7, 1, 0, 4) == actor_seeds(7, 1, 0, 4)  # reproducible
    assert actor_seeds(8, 1, 0, 4).env_seeds[0] not in env_seeds
    ids = {
        stream_id(actor, slot, inc)
        for actor in range(8)
        for slot in range(4)
        for inc in (0, 1, 2**32 - 1)
    }
    assert len(ids) == 8 * 4 * 3 and min(ids) >= 0 and max(ids) < 2**63

    first_resets = []
    for actor in (0, 1):
        collector = make_collector(actor_index=actor)
        collector.collect(2)
        first_resets += [env.reset_seeds[0] for env in collector.envs]
    assert len(set(first_resets)) == 4


def test_random_seed_actions_then_one_batched_policy_call_per_tick():
    sink = SlowSink()
    collector = make_collector(
        sink=sink, seed_steps=10, envs_per_actor=3
    )  # 4 random ticks (12 >= 10)
    calls = []
    act = collector.policy.act

    def counting_act(obs, deterministic):
        calls.append(tuple(obs.shape))
        assert obs.dtype == torch.uint8 and not deterministic
        return act(obs, deterministic)

    collector.policy.act = counting_act
    collector.collect(12)
    assert calls == []  # seed steps: the policy is not called
    collector.collect(18)  # 6 ticks of 3 envs
    assert calls == [(3, *env_spec(FAKE_ENV).obs_shape)] * 6
    collector.close()
    entries = sink.entries()
    transitions = ~entries.first
    seed_actions = entries.actions[transitions][:12]
    assert seed_actions.min() < -0.8 and seed_actions.max() > 0.8
    assert len(np.unique(seed_actions)) == seed_actions.size  # independent uniform draws


def test_evaluate_policy_one_episode_with_video(tmp_path):
    env_cfg = EnvConfig()
    spec = env_spec(env_cfg)
    policy = build_policy(spec.obs_shape, spec.action_dim, TINY)
    result = evaluate_policy(policy, env_cfg, episodes=1, seed=3, video_path=tmp_path / "eval.mp4")
    assert result.video_path is not None
    assert (tmp_path / "eval.mp4").read_bytes()[4:8] == b"ftyp"  # an MP4 container was written
    assert result.mean_return == pytest.approx(result.returns[0]) and result.std_return == 0.0
    assert len(result.returns) == len(result.lengths) == 1 and 1 <= result.lengths[0] <= 250
    summary = result.summary()
    assert json.loads(json.dumps(summary)) == summary  # what reports keep is plain JSON
    assert summary["returns"] == [round(result.returns[0], 2)]
    assert sum(summary["end_reason_counts"].values()) == 1
    assert summary["end_reasons"] == result.end_reasons and summary["lengths"] == result.lengths
    assert 0.0 <= summary["tiles_visited_mean"] <= 1.0
    assert summary["tiles_visited"] == [round(summary["tiles_visited_mean"], 4)]
    assert 0.0 <= summary["wrong_way_mean"] <= 1.0
    assert summary["wrong_way"] == [round(summary["wrong_way_mean"], 4)]
    assert summary["wrong_way_tracks"] == int(summary["wrong_way_mean"] >= WRONG_WAY_TRACK)
    assert summary["speed_mean"] >= 0.0
    assert summary["speed"] == [round(summary["speed_mean"], 2)]


def test_eval_summary_counts_ends_and_averages_tiles_of_episodes_that_have_them():
    result = EvalResult(
        mean_return=0.0,
        std_return=0.0,
        returns=[900.0, -60.5, 300.123],
        lengths=[200, 40, 250],
        video_path=None,
        end_reasons=[LAP_DONE, LEFT_PLAYFIELD, LAP_DONE],
        tiles_visited_fractions=[1.0, float("nan"), 0.5],
        wrong_way_fractions=[0.0, float("nan"), 0.4],
        speeds=[61.234, float("nan"), 20.0],
    )
    summary = result.summary()
    assert summary["end_reason_counts"] == {LAP_DONE: 2, LEFT_PLAYFIELD: 1}
    assert summary["tiles_visited"] == [1.0, None, 0.5]  # NaN: that env has no tiles
    assert summary["tiles_visited_mean"] == 0.75
    assert (summary["min"], summary["max"], summary["returns"][2]) == (-60.5, 900.0, 300.12)
    assert (summary["wrong_way"], summary["wrong_way_mean"]) == ([0.0, None, 0.4], 0.2)
    assert summary["wrong_way_tracks"] == 1  # 0.4 of the last track's steps, over WRONG_WAY_TRACK
    assert summary["speed"] == [61.23, None, 20.0]
    assert summary["speed_mean"] == pytest.approx((61.234 + 20.0) / 2)
    no_tiles = dataclasses.replace(result, tiles_visited_fractions=[float("nan")] * 3).summary()
    assert no_tiles["tiles_visited_mean"] is None
    no_track = dataclasses.replace(result, wrong_way_fractions=[float("nan")] * 3).summary()
    assert no_track["wrong_way_mean"] is None and no_track["wrong_way_tracks"] is None
    no_car = dataclasses.replace(result, speeds=[float("nan")] * 3).summary()
    assert no_car["speed_mean"] is None and no_car["speed"] == [None] * 3


def test_diagnostics_tally_actions_in_env_units_and_episode_ends():
    """Action sums and gas-brake overlap match the shipped actions; end reasons fall back to the
    flags (the fake env says nothing: truncation is the time limit, termination is OTHER)."""
    sink = SlowSink()
    collector = make_collector(sink=sink, seed_steps=30)  # random actions, then the policy
    first = collector.collect(30)
    second = collector.collect(30)
    collector.close()
    stats = first.merged(second)
    assert stats == collector.totals
    entries = sink.entries()
    actions = map_action(entries.actions[~entries.first], (-1.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert stats.agent_steps == len(actions) == 60
    np.testing.assert_allclose(stats.action_sums, actions.sum(axis=0), rtol=1e-5)
    both = (actions[:, 1] > PEDAL_PRESSED) & (actions[:, 2] > PEDAL_PRESSED)
    assert stats.gas_brake_overlap_steps == int(both.sum()) > 0
    ends = entries.terminated | entries.truncated
    expected = [TIME_LIMIT if t else OTHER for t in entries.truncated[ends]]
    assert sorted(stats.episode_end_reasons) == sorted(expected)
    assert len(stats.episode_end_reasons) == stats.episodes == len(stats.episode_returns)
    assert len(stats.episode_tiles_visited) == stats.episodes
    assert all(np.isnan(stats.episode_tiles_visited))  # the fake env has no track
    assert len(stats.episode_wrong_way) == stats.episodes
    assert all(np.isnan(stats.episode_wrong_way))
    assert len(stats.episode_speed) == stats.episodes
    assert all(np.isnan(stats.episode_speed))

    row = diagnostic_metrics(stats, collector.spec)
    assert row["actors/steer_mean"] == pytest.approx(actions[:, 0].mean(), rel=1e-5)
    assert row["actors/gas_mean"] == pytest.approx(actions[:, 1].mean(), rel=1e-5)
    assert row["actors/brake_mean"] == pytest.approx(actions[:, 2].mean(), rel=1e-5)
    assert row["actors/gas_brake_overlap_fraction"] == pytest.approx(both.mean())
    assert sum(row[f"actors/end_{r}_fraction"] for r in END_REASONS) == pytest.approx(1.0)
    assert "actors/tiles_visited_fraction" not in row  # no env reported tiles
    assert "actors/wrong_way_fraction" not in row
    assert "actors/speed_mean" not in row


def test_pedal_actions_are_shipped_as_policy_actions_and_tallied_in_env_units():
    """With a pedal axis the replay holds the policy's 2-D actions; the diagnostics report gas and
    brake in env units, and the two are never pressed together."""
    env_cfg = EnvConfig(crop=(0, 16, 0, 16), action_map="pedal")
    sink = SlowSink()
    collector = make_collector(env_cfg=env_cfg, sink=sink, seed_steps=20)
    stats = collector.collect(40)
    collector.close()
    policy_actions = sink.entries().actions[~sink.entries().first]
    assert policy_actions.shape == (40, 2)
    pedal = policy_actions[:, 1]
    np.testing.assert_allclose(
        stats.action_sums,
        [policy_actions[:, 0].sum(), pedal.clip(0, None).sum(), (-pedal).clip(0, None).sum()],
        rtol=1e-5,
    )
    assert stats.gas_brake_overlap_steps == 0
    row = diagnostic_metrics(stats, collector.spec)
    assert row["actors/gas_mean"] > 0 and row["actors/brake_mean"] > 0  # uniform seed steps
    assert row["actors/gas_brake_overlap_fraction"] == 0.0


def test_merged_keeps_the_last_episodes_and_adds_action_sums():
    a = CollectStats(
        agent_steps=2,
        episode_returns=(1.0,) * KEPT_EPISODES,
        episode_end_reasons=("time_limit",) * KEPT_EPISODES,
        episode_tiles_visited=(0.5,) * KEPT_EPISODES,
        episode_wrong_way=(0.0,) * KEPT_EPISODES,
        episode_speed=(40.0,) * KEPT_EPISODES,
        episodes=KEPT_EPISODES,
        action_sums=(1.0, 2.0, 3.0),
        gas_brake_overlap_steps=1,
    )
    b = CollectStats(
        agent_steps=3,
        episode_returns=(2.0,),
        episode_end_reasons=("lap_done",),
        episode_tiles_visited=(1.0,),
        episode_wrong_way=(0.3,),
        episode_speed=(140.0,),
        episodes=1,
        action_sums=(0.5, 0.5, 0.5),
        gas_brake_overlap_steps=2,
    )
    m = CollectStats().merged(a).merged(b)
    assert m.episodes == KEPT_EPISODES + 1 and len(m.episode_end_reasons) == KEPT_EPISODES
    assert m.episode_end_reasons[-1] == "lap_done" and m.episode_tiles_visited[-1] == 1.0
    assert m.action_sums == (1.5, 2.5, 3.5) and m.gas_brake_overlap_steps == 3
    row = diagnostic_metrics(m, env_spec(FAKE_ENV))
    assert row["actors/end_lap_done_fraction"] == pytest.approx(1 / KEPT_EPISODES)
    assert row["actors/tiles_visited_fraction"] == pytest.approx((0.5 * 99 + 1.0) / 100)
    assert len(m.episode_wrong_way) == KEPT_EPISODES
    assert row["actors/wrong_way_fraction"] == pytest.approx(0.3 / 100)
    assert len(m.episode_speed) == KEPT_EPISODES
    assert row["actors/speed_mean"] == pytest.approx((40.0 * 99 + 140.0) / 100)
    assert row["actors/steer_mean"] == pytest.approx(1.5 / 5)
    assert diagnostic_metrics(CollectStats(), env_spec(FAKE_ENV)) == {}


def test_evaluation_never_sees_the_training_aids():
    built = []

    def factory(cfg):
        built.append(cfg)
        return FakeEnv(cfg)

    env_cfg = EnvConfig(crop=(0, 16, 0, 16), no_progress_steps=5, wrong_way_steps=3, skip_zoom=True)
    spec = env_spec(env_cfg)
    policy = build_policy(spec.obs_shape, spec.action_dim, TINY)
    result = evaluate_policy(policy, env_cfg, episodes=2, seed=0, env_factory=factory)
    assert built == [EnvConfig(crop=(0, 16, 0, 16))]
    assert len(result.end_reasons) == len(result.tiles_visited_fractions) == 2
