"""Replay without Ray: stacks against the actors' padding, validity, uniformity, limiter, snapshots."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import pyarrow.parquet as pq
import pytest

from learner.config import ConfigError
from replay.config import ReplayConfig
from replay.rate_limiter import RateLimiter
from replay.sampler import split_batch
from replay.shard import ReplayShard
from replay.snapshot import (
    SnapshotError,
    SnapshotMismatchError,
    export_parquet,
    list_snapshots,
    load_snapshot,
    restore_latest,
    save_snapshot,
)
from replay.storage import FrameReplay
from replay.types import TransitionChunk

FRAME_SHAPE = (3, 4, 4)
ACTION_DIM = 2
STACK = 3


def encode(stream: int, episode: int, t: int) -> np.ndarray:
    """A frame whose pixels say which stream, episode and step it is."""
    frame = np.empty(FRAME_SHAPE, np.uint8)
    frame[0], frame[1], frame[2] = stream, episode % 256, t % 256
    return frame


class Streams:
    """Synthetic env streams (random episode lengths, both episode ends) with the truth of every entry."""

    def __init__(self, stream_ids: list[int], seed: int = 0, max_len: int = 9) -> None:
        self.rng = np.random.default_rng(seed)
        self.max_len = max_len
        self.state = {s: [-1, -1, 0] for s in stream_ids}  # stream -> [episode, t, episode length]
        self.abs_of: dict[tuple[int, int, int], int] = {}  # (stream, episode, t) -> absolute index
        self.written = 0

    def _next(self, s: int) -> tuple:
        ep, t, length = self.state[s]
        if t < 0 or t == length:  # reset
            ep, t, length = ep + 1, 0, int(self.rng.integers(1, self.max_len))
            self.state[s] = [ep, t, length]
            return s, ep, 0, True, False, False
        t += 1
        self.state[s][1] = t
        end = t == length
        terminated = end and bool(self.rng.integers(2))
        return s, ep, t, False, terminated, end and not terminated

    def chunk(self, n: int, streams: list[int] | None = None) -> TransitionChunk:
        streams = streams or list(self.state)
        rows = [self._next(int(self.rng.choice(streams))) for _ in range(n)]
        for i, (s, ep, t, *_) in enumerate(rows):
            self.abs_of[(s, ep, t)] = self.written + i
        self.written += n
        return make_chunk(rows)


def make_chunk(rows: list[tuple]) -> TransitionChunk:
    """rows of (stream, episode, t, first, terminated, truncated)."""
    s, ep, t, first, term, trunc = (np.array(c) for c in zip(*rows, strict=True))
    return TransitionChunk(
        stream_ids=s.astype(np.int64),
        frames=np.stack([encode(*r[:3]) for r in rows]),
        first=first.astype(bool),
        actions=np.stack([s, t], axis=1).astype(np.float32) * ~first[:, None],
        rewards=(10_000.0 * s + 100.0 * ep + t).astype(np.float32) * ~first,
        terminated=term.astype(bool),
        truncated=trunc.astype(bool),
        weights_version=(ep * 7).astype(np.int64),
    )


def actor_stack(stream: int, episode: int, t: int) -> np.ndarray:
    """The actors' frame stack after step t: a deque seeded with the reset frame repeated."""
    frames = deque([encode(stream, episode, 0)] * STACK, maxlen=STACK)
    for k in range(1, t + 1):
        frames.append(encode(stream, episode, k))
    return np.stack(frames)


def check_batch(batch, streams: Streams | None = None) -> list[tuple[int, int, int]]:
    """Every transition's obs/next stacks, reward and action equal the actors' truth."""
    ids = []
    for i in range(len(batch)):
        s, ep, t = (int(v) for v in batch.frames[i, -1, :, 0, 0])
        assert t >= 1, "an episode start was sampled as a transition"
        np.testing.assert_array_equal(batch.frames[i, :STACK], actor_stack(s, ep, t - 1))
        np.testing.assert_array_equal(batch.frames[i, 1:], actor_stack(s, ep, t))
        assert batch.rewards[i] == 10_000 * s + 100 * ep + t
        np.testing.assert_array_equal(batch.actions[i], [s, t])
        assert batch.weights_version[i] == ep * 7
        ids.append((s, ep, t))
    return ids


def expected_valid(
    streams: Streams, replay: FrameReplay, linked_from: dict | None = None
) -> set[int]:
    """Absolute indices of transitions whose whole frame chain is still stored."""
    valid = set()
    for (s, ep, t), a in streams.abs_of.items():
        chain = [streams.abs_of[(s, ep, max(0, k))] for k in range(t - STACK, t + 1)]
        if t >= 1 and min(chain) >= replay.lowest and a < replay.total_written:
            valid.add(a)
    return valid


# ---- storage -----------------------------------------------------------------------------------


def test_bytes_per_transition_at_84x84_rgb():
    replay = FrameReplay(1000, (3, 84, 84), action_dim=3, frame_stack=3)
    assert 3 * 84 * 84 < replay.bytes_per_transition <= 21_500
    assert replay.bytes_used == 0


def test_stacks_match_actor_padding_across_episode_boundaries():
    streams = Streams([3, 5, 8], seed=1)
    replay = FrameReplay(10_000, FRAME_SHAPE, ACTION_DIM, STACK, seed=0)
    for _ in range(40):
        replay.add(streams.chunk(int(streams.rng.integers(1, 12))))
    seen = check_batch(replay.sample(2000))
    ts = {t for _, _, t in seen}
    assert {1, 2, 3} <= ts, "episode starts (padded stacks) must be sampled too"
    batch = replay.sample(256)
    assert batch.terminated.dtype == np.float32 and set(np.unique(batch.terminated)) <= {0.0, 1.0}


def test_wraparound_never_samples_overwritten_frames():
    streams = Streams([0, 1, 2], seed=2)
    replay = FrameReplay(37, FRAME_SHAPE, ACTION_DIM, STACK, seed=3)
    for _ in range(80):
        replay.add(streams.chunk(int(streams.rng.integers(1, 9))))
        every = np.arange(replay.lowest, replay.total_written)
        got = set(every[replay.chains(every)[1]].tolist())
        assert got == expected_valid(streams, replay)
        if got:
            check_batch(replay.sample(64))
    assert replay.num_entries == 37
    assert replay.num_transitions == 37 - int(replay.first.sum())


def test_chunk_longer_than_the_ring_keeps_the_newest_entries():
    streams = Streams([0], seed=4)
    replay = FrameReplay(16, FRAME_SHAPE, ACTION_DIM, STACK)
    replay.add(streams.chunk(50))
    assert replay.num_entries == 16 and replay.lowest == 34
    check_batch(replay.sample(100))


def test_entries_with_an_unknown_predecessor_are_not_sampled():
    """A stream's first chunk after a restart arrives mid-episode: its chain starts at that chunk."""
    replay = FrameReplay(100, FRAME_SHAPE, ACTION_DIM, STACK)
    rows = [
        (7, 4, t, False, False, False) for t in range(10, 16)
    ]  # t = 10..15, no reset frame seen
    replay.add(make_chunk(rows))
    _, ok = replay.chains(np.arange(6))
    # t=10..12 need frames before t=10; t=13 stacks frames 10..13, all known.
    np.testing.assert_array_equal(ok, [False, False, False, True, True, True])
    batch = replay.sample(50)
    assert set(batch.frames[:, -1, 2, 0, 0].tolist()) <= {13, 14, 15}


GAMMA = 0.5  # powers of two: the reward sums below are exact in float32


def check_n_step_batch(batch, n: int) -> list[tuple[int, int, int]]:
    """Every n-step transition: obs n steps before next, the action taken at obs, the discounted
    sum of the n rewards that followed, the n-th step's flags, all inside one episode."""
    ids = []
    for i in range(len(batch)):
        s, ep, t = (int(v) for v in batch.frames[i, -1, :, 0, 0])
        assert t >= n, "an n-step sample reached back past its episode's start"
        np.testing.assert_array_equal(batch.frames[i, :STACK], actor_stack(s, ep, t - n))
        np.testing.assert_array_equal(batch.frames[i, n:], actor_stack(s, ep, t))
        np.testing.assert_array_equal(batch.actions[i], [s, t - n + 1])
        rewards = [10_000 * s + 100 * ep + (t - n + 1 + k) for k in range(n)]
        assert batch.rewards[i] == sum(GAMMA**k * r for k, r in enumerate(rewards))
        assert batch.weights_version[i] == ep * 7
        ids.append((s, ep, t))
    return ids


@pytest.mark.parametrize("n", [2, 3])
def test_n_step_samples_stay_in_one_episode_and_sum_discounted_rewards(n):
    streams = Streams([3, 5, 8], seed=11, max_len=12)
    replay = FrameReplay(60, FRAME_SHAPE, ACTION_DIM, STACK, seed=0, n_step=n, gamma=GAMMA)
    assert replay.frames_per_sample == STACK + n
    flags = set()
    for _ in range(60):  # through several wrap-arounds of the ring
        replay.add(streams.chunk(int(streams.rng.integers(1, 9))))
        every = np.arange(replay.lowest, replay.total_written)
        got = set(every[replay.chains(every)[1]].tolist())
        want = set()
        for (s, ep, t), a in streams.abs_of.items():
            oldest = streams.abs_of[(s, ep, max(0, t - n - STACK + 1))]
            if t >= n and oldest >= replay.lowest and a < replay.total_written:
                want.add(a)
        assert got == want
        if got:
            batch = replay.sample(64)
            assert batch.frames.shape[1] == STACK + n
            check_n_step_batch(batch, n)
            flags |= set(batch.terminated.tolist())
    assert flags == {0.0, 1.0}  # the n-th step's flag, both kinds


def test_n_step_covers_every_start_but_the_last_n_minus_1_of_an_episode():
    replay = FrameReplay(100, FRAME_SHAPE, ACTION_DIM, STACK, n_step=3, gamma=GAMMA)
    rows = [(1, 0, 0, True, False, False)]
    rows += [(1, 0, t, False, t == 6, False) for t in range(1, 7)]  # terminates at t=6
    replay.add(make_chunk(rows))
    # obs at t = 0..3 (ends 3..6); obs at 4 and 5 would need steps past the end.
    starts = {int(t) - 3 for t in replay.sample(500).frames[:, -1, 2, 0, 0]}
    assert starts == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="gamma"):
        FrameReplay(100, FRAME_SHAPE, ACTION_DIM, STACK, n_step=3)


def test_sampling_is_uniform_over_valid_transitions():
    streams = Streams([0, 1], seed=5)
    replay = FrameReplay(200, FRAME_SHAPE, ACTION_DIM, STACK, seed=6)
    for _ in range(60):
        replay.add(streams.chunk(7))
    every = np.arange(replay.lowest, replay.total_written)
    valid = every[replay.chains(every)[1]]
    draws = np.concatenate([replay.sample_indices(512) for _ in range(200)])
    assert set(draws.tolist()) == set(valid.tolist())
    counts = np.array([np.count_nonzero(draws == v) for v in valid])
    assert_uniform(counts)


def assert_uniform(counts: np.ndarray) -> None:
    """Pearson chi-square against equal cells, at about 4 standard deviations."""
    expected = counts.sum() / len(counts)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = len(counts) - 1
    assert chi2 < dof + 4 * np.sqrt(2 * dof), (chi2, dof)


def test_sampling_is_uniform_across_shards_of_different_sizes():
    """Per-shard counts drawn by size, then uniform within a shard: uniform over all transitions."""
    rng = np.random.default_rng(7)
    shards = []
    for k, entries in enumerate((400, 100)):
        streams = Streams([10 * k], seed=k, max_len=50)
        replay = FrameReplay(entries, FRAME_SHAPE, ACTION_DIM, STACK, seed=k)
        replay.add(streams.chunk(entries))
        shards.append(replay)
    sizes = np.array([r.num_transitions for r in shards])
    hits = [dict() for _ in shards]
    for _ in range(1000):
        for k, n in enumerate(split_batch(rng, 128, sizes)):
            for a in shards[k].sample_indices(int(n)).tolist():
                hits[k][a] = hits[k].get(a, 0) + 1
    per_shard = np.array([sum(h.values()) for h in hits])
    share = per_shard[0] / per_shard.sum()
    p = sizes[0] / sizes.sum()
    assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / per_shard.sum())
    assert_uniform(np.array([c for h in hits for c in h.values()]))


# ---- rate limiter --------------------------------------------------------------------------------


def test_rate_limiter_arithmetic():
    lim = RateLimiter(samples_per_insert=4, min_size=10, error_buffer=8)
    assert lim.min_diff == 32 and lim.max_diff == 48
    assert lim.can_insert(10) and not lim.can_sample(
        1
    )  # below min_size: insert freely, never sample
    lim.record_insert(9)
    assert not lim.can_sample(1)
    lim.record_insert(1)  # diff = 40, the balanced point
    assert lim.can_sample(8) and not lim.can_sample(9)
    assert lim.can_insert(2) and not lim.can_insert(3)  # (12 * 4) - 0 = 48 <= 48; 52 > 48
    lim.record_insert(2)  # diff 48
    assert not lim.can_insert(1)
    lim.record_sample(4)  # diff 44
    assert lim.can_insert(1) and not lim.can_insert(2)
    lim.record_sample(12)  # diff 32
    assert not lim.can_sample(1) and lim.can_insert(4)
    assert lim.max_sample_request == 12  # 2 * 8 - 4
    lim.reset_balanced(inserts=30)
    assert lim.diff == 40 and lim.can_insert(1) and lim.can_sample(8)


def test_rate_limiter_refuses_a_buffer_that_could_block_both_sides():
    with pytest.raises(ConfigError, match="raise replay.rate_tolerance"):
        RateLimiter(samples_per_insert=128, min_size=10, error_buffer=64)
    with pytest.raises(ConfigError):
        ReplayConfig(rate_tolerance=0.5)


def small_shard(tmp_path=None, **cfg) -> ReplayShard:
    base = dict(capacity=2000, min_size=20, rate_tolerance=4, insert_timeout_s=5.0)
    base.update(cfg)
    return ReplayShard(
        0,
        ReplayConfig(**base),
        FRAME_SHAPE,
        ACTION_DIM,
        STACK,
        samples_per_insert=8,
        snapshot_dir=str(tmp_path or ""),
    )


def insert_and_wait(shard: ReplayShard, chunk: TransitionChunk, timeout_s: float = 5.0) -> dict:
    """A writer's protocol: insert, then wait while the shard holds it back (as ShardSink does)."""
    info = shard.insert(chunk)
    if not info["ready"]:
        info = {**info, **shard.wait_insert(timeout_s)}
    return info


def run_chunk(stream: int, t0: int, n: int, episode: int = 0) -> TransitionChunk:
    """Steps t0 .. t0 + n - 1 of one long episode (t = 0 is its reset frame)."""
    return make_chunk([(stream, episode, t, t == 0, False, False) for t in range(t0, t0 + n)])


def test_shard_insert_and_sample_unblock_each_other():
    shard = small_shard()  # min_size 20, spi 8, error buffer 4 steps = 32 samples
    assert shard.sample(8, timeout_s=0.05) == (None, 0, False, False)  # empty: times out
    result = {}
    waiter = threading.Thread(target=lambda: result.update(out=shard.sample(8, timeout_s=10.0)))
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive()  # below min_size: the sample waits ...
    info = shard.insert(run_chunk(0, 0, 21))  # 20 transitions: min_size reached
    waiter.join(5.0)
    assert not waiter.is_alive() and result["out"][0] is not None  # ... and an insert releases it
    assert info["ready"] and info["inserted"] == 20
    # Writers ahead of the learner by more than the buffer wait until it samples.
    infos = []
    writer = threading.Thread(
        target=lambda: infos.extend(
            insert_and_wait(shard, run_chunk(0, t, 4)) for t in range(21, 61, 4)
        )
    )
    writer.start()
    time.sleep(0.2)
    assert writer.is_alive() and shard.limiter.inserts < 60
    while writer.is_alive():
        assert shard.sample(8, timeout_s=1.0)[0] is not None
        writer.join(0.01)
    assert all(i["ready"] for i in infos)
    stats = shard.stats()
    # Both sides were held back at least once: the sample below min_size, the inserts ahead.
    assert stats["inserts_held"] >= 1 and stats["samples_held"] >= 1
    assert stats["size"] == shard.storage.num_transitions == 60 and stats["bytes_used"] > 0
    assert stats["inserts"] == 60 and stats["samples"] == shard.limiter.samples


def test_released_shard_serves_the_learner_without_waiting_for_writers():
    """At the end of a run nobody writes any more: the learner's last call must not hang."""
    shard = small_shard()  # min_size 20, spi 8, error buffer 4 steps = 32 samples
    shard.insert(run_chunk(0, 0, 21))
    while shard.sample(8, timeout_s=0.0).batch is not None:
        pass  # the learner is as far ahead of the writers as the limiter allows
    held = shard.stats()["samples_held"]
    shard.release()
    reply = shard.sample(8, timeout_s=60.0)
    assert reply.batch is not None and reply.sampleable
    assert shard.stats()["samples_held"] == held  # served at once, never held
    # A released shard with nothing sampleable answers at once instead of waiting its timeout.
    empty = small_shard()
    empty.release()
    assert empty.sample(8, timeout_s=3600.0).batch is None


def test_a_shard_released_below_its_minimum_size_ends_the_learners_wait_without_a_batch():
    """A run stopped (time budget) before its replay filled up: the learner waiting for the
    minimum size must be let go, and must not train on the few transitions there are."""
    shard = small_shard()  # min_size 20
    shard.insert(run_chunk(0, 0, 10))
    size, may_stop_waiting, _ = shard.status()
    assert size > 0 and not may_stop_waiting
    assert shard.sample(8, timeout_s=0.0) == (None, size, False, False)
    shard.release()
    assert shard.status()[1]  # the learner's wait for the minimum size ends
    reply = shard.sample(8, timeout_s=3600.0)  # answers at once
    assert reply.batch is None and reply.released and not reply.sampleable
    assert shard.stats()["samples"] == 0 and not shard.stats()["ready"]


@pytest.mark.parametrize("writers", [1, 3])
def test_rate_holds_whatever_the_number_of_writers(writers):
    """A slow learner: writers wait, so inserts track samples / spi within the tolerance."""
    shard = small_shard(min_size=16, rate_tolerance=2)
    stop = threading.Event()

    def write(k: int) -> None:
        streams = Streams([k], seed=k)
        while not stop.is_set():
            insert_and_wait(shard, streams.chunk(2, [k]))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        shard.sample(8, timeout_s=1.0)
        time.sleep(0.002)
    stop.set()
    for _ in range(20):  # release the writers that wait
        shard.sample(8, timeout_s=0.01)
    for thread in threads:
        thread.join(5.0)
    lim = shard.limiter
    lead = lim.inserts - lim.min_size - lim.samples / lim.samples_per_insert
    # Each writer may store one chunk (2 entries, <= 2 transitions) past the limit before waiting.
    assert lim.samples > 0 and -2 <= lead <= 2 + 2 * writers + 1, lead


# ---- snapshots -----------------------------------------------------------------------------------


def filled_replay(seed: int = 0, capacity: int = 120, chunks: int = 40) -> FrameReplay:
    streams = Streams([0, 1, 2], seed=seed)
    replay = FrameReplay(capacity, FRAME_SHAPE, ACTION_DIM, STACK, seed=seed)
    for _ in range(chunks):
        replay.add(streams.chunk(5))
    return replay


def stored(replay: FrameReplay) -> dict[str, np.ndarray]:
    return replay.read_entries(replay.lowest, replay.total_written)


def test_snapshot_round_trip_is_byte_identical(tmp_path):
    replay = filled_replay()
    replay.sample(32)  # the RNG has moved: the restored one must resume from here
    path = save_snapshot(replay, tmp_path)
    restored = FrameReplay(120, FRAME_SHAPE, ACTION_DIM, STACK, seed=99)
    assert load_snapshot(path, restored) == replay.num_entries
    for name, values in stored(replay).items():
        np.testing.assert_array_equal(stored(restored)[name], values, err_msg=name)
        assert stored(restored)[name].dtype == values.dtype
    assert restored.num_transitions == replay.num_transitions
    for _ in range(3):
        a, b = replay.sample(64), restored.sample(64)
        for field in ("frames", "actions", "rewards", "terminated", "weights_version"):
            assert getattr(a, field).tobytes() == getattr(b, field).tobytes()
    check_batch(restored.sample(128))


def test_corrupted_snapshot_is_refused_and_nothing_is_lost(tmp_path):
    replay = filled_replay()
    path = save_snapshot(replay, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    target = filled_replay(seed=5)
    before = {k: v.copy() for k, v in stored(target).items()}
    with pytest.raises(SnapshotError, match="sha256") as err:
        load_snapshot(path, target)
    assert str(path) in str(err.value) and "move it aside" in str(err.value)
    for name, values in before.items():
        np.testing.assert_array_equal(stored(target)[name], values)
    assert path.exists() and path.with_suffix(".json").exists()


def test_mismatched_snapshot_is_refused_with_the_fix(tmp_path):
    path = save_snapshot(filled_replay(), tmp_path)
    other = FrameReplay(120, (3, 8, 8), ACTION_DIM, STACK)
    with pytest.raises(
        SnapshotMismatchError, match=r"frames \(3, 4, 4\).*expects frames \(3, 8, 8\)"
    ):
        load_snapshot(path, other)
    assert other.num_entries == 0
    # A shard never starts on a snapshot of another shape (older ones would mismatch as well).
    (tmp_path / "shard0").mkdir()
    for f in tmp_path.glob("snapshot-*"):
        f.rename(tmp_path / "shard0" / f.name)
    with pytest.raises(SnapshotMismatchError, match="replay.snapshot_dir"):
        ReplayShard(
            0,
            ReplayConfig(capacity=100, min_size=10),
            (3, 8, 8),
            ACTION_DIM,
            STACK,
            8,
            snapshot_dir=str(tmp_path),
        )


def test_restore_latest_keeps_two_and_skips_a_corrupt_newest(tmp_path):
    replay = filled_replay(chunks=10)
    streams = Streams([9], seed=1)
    paths = []
    for _ in range(3):
        replay.add(streams.chunk(5))
        paths.append(save_snapshot(replay, tmp_path))
    assert list_snapshots(tmp_path) == [paths[2], paths[1]]  # the oldest was pruned
    paths[2].write_bytes(paths[2].read_bytes()[:-100])  # truncated newest
    target = FrameReplay(120, FRAME_SHAPE, ACTION_DIM, STACK)
    assert restore_latest(tmp_path, target) == paths[1]
    assert target.total_written == replay.total_written - 5
    assert restore_latest(tmp_path / "none", FrameReplay(16, FRAME_SHAPE, ACTION_DIM)) is None


def test_restored_shard_has_its_size_limiter_state_and_stream_tallies(tmp_path):
    shard = small_shard(tmp_path, rate_tolerance=100)
    streams = Streams([0, 1], seed=3)
    for _ in range(10):
        assert shard.insert(streams.chunk(10))["ready"]
    while shard.sample(8, timeout_s=0.01)[0] is not None:  # learner as far ahead as allowed
        pass
    shard.save_snapshot()
    saved = shard.limiter.state()
    again = small_shard(tmp_path, rate_tolerance=100)  # the same config as the lost shard
    assert again.restored_from and again.storage.num_entries == shard.storage.num_entries
    assert again.size() == shard.size() and again.limiter.state() == saved
    assert again.stream_transitions() == shard.stream_transitions()
    assert sum(again.stream_transitions().values()) == again.limiter.inserts
    # The learner was as far ahead as allowed when the snapshot was taken, and still is: an
    # insert (never held back) lets it sample again.
    assert not again.limiter.can_sample(8) and again.limiter.can_insert(1)
    assert again.insert(streams.chunk(10))["ready"]
    assert again.sample(8, timeout_s=0.01).batch is not None


def test_shard_saves_snapshots_periodically(tmp_path):
    shard = small_shard(tmp_path, snapshot_every_s=0.05)
    shard.insert(run_chunk(0, 0, 10))
    # Waits for the event itself (the saver's count); a broken saver is stopped by the test's
    # timeout (pytest-timeout), not by a deadline of ours that a loaded machine could miss.
    while shard.stats()["snapshots_saved"] < 1:
        time.sleep(0.02)
    shard.close()
    assert len(list_snapshots(tmp_path / "shard0")) >= 1
    # What was saved is the shard: a shard started on the same folder restores its transitions.
    again = small_shard(tmp_path)
    assert again.restored_from and again.size() == shard.size()
    assert again.storage.num_entries == shard.storage.num_entries == 10  # the chunk inserted
    again.close()


def test_export_parquet(tmp_path):
    replay = filled_replay()
    rows = export_parquet(replay, tmp_path / "replay.parquet")
    table = pq.read_table(tmp_path / "replay.parquet")
    assert rows == table.num_rows == replay.num_entries
    every = np.arange(replay.lowest, replay.total_written)
    np.testing.assert_array_equal(table.column("sampleable").to_numpy(), replay.chains(every)[1])
    frames = np.frombuffer(b"".join(table.column("frame").to_pylist()), np.uint8)
    np.testing.assert_array_equal(frames.reshape(-1, *FRAME_SHAPE), stored(replay)["frames"])
