"""A replay shard: FrameReplay and its RateLimiter behind one condition variable.

`ReplayShard` is plain, thread-safe Python; `create_shards` runs it as threaded Ray actors (placement,
restarts). Each shard limits its own samples per insert, like one Reverb server per shard; the
learner's sampler draws per-shard counts in proportion to the shards' sizes, so sampling stays
uniform over all stored transitions and the ratio holds per shard.

Writers (rollout actors) call `insert(chunk)`, which stores the chunk and answers at once; the
reply says `ready: False` when the writers are ahead of the learner, and the writer then calls
`wait_insert` (each call waits at most `replay.insert_timeout_s`) until it is ready before its next
chunk, so the ratio holds whatever the number of actors. Answering at once keeps "stored" and
"may go on" apart: a writer that is closing needs only the first.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray

from replay.config import ReplayConfig
from replay.rate_limiter import RateLimiter
from replay.snapshot import restore_latest, save_snapshot, snapshot_extra
from replay.storage import FrameReplay, NoSampleableError
from replay.types import SampleReply, TransitionChunk

# Threads of one shard actor: every writer's blocked insert holds one, plus stats and snapshots.
# Threads waiting on the condition cost nothing.
MAX_CONCURRENCY = 64
# Samples run on one thread of their own. A sample reply is a fresh 10 MB array; on one thread
# glibc reuses the freed block, while across a pool of threads each thread's arena maps and
# zero-fills new pages (measured: 13 ms instead of 1.5 ms per batch of 128). Samples serialise on
# the shard's lock anyway.
SAMPLE_GROUP = "sample"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardParams:
    """What one shard gets of the replay config."""

    capacity: int
    min_size: int
    samples_per_insert: float
    error_buffer: float


def shard_params(cfg: ReplayConfig, samples_per_insert: float) -> ShardParams:
    """Split capacity and min_size over the shards; the tolerance is in agent steps per shard."""
    return ShardParams(
        capacity=cfg.capacity // cfg.num_shards,
        min_size=math.ceil(cfg.min_size / cfg.num_shards),
        samples_per_insert=float(samples_per_insert),
        error_buffer=cfg.rate_tolerance * float(samples_per_insert),
    )


def assign_shard(actor_index: int, num_shards: int) -> int:
    """The shard a rollout actor writes to (round robin: equal actors per shard keep rates equal)."""
    return actor_index % num_shards


class ReplayShard:
    """One shard of the replay service; every public method is safe to call from many threads."""

    def __init__(
        self,
        index: int,
        cfg: ReplayConfig,
        frame_shape: tuple[int, int, int],
        action_dim: int,
        frame_stack: int = 3,
        samples_per_insert: float = 128.0,
        seed: int = 0,
        snapshot_dir: str = "",
        n_step: int = 1,
        gamma: float | None = None,
    ) -> None:
        self.index = index
        self.cfg = cfg
        params = shard_params(cfg, samples_per_insert)
        shard_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        self.storage = FrameReplay(
            params.capacity, frame_shape, action_dim, frame_stack, shard_seed, n_step, gamma
        )
        self.limiter = RateLimiter(params.samples_per_insert, params.min_size, params.error_buffer)
        self._cond = threading.Condition()
        self._snapshot_lock = threading.Lock()
        self.snapshot_dir = Path(snapshot_dir) / f"shard{index}" if snapshot_dir else None
        self.restored_from = ""
        self.restored_state: dict = {}
        # Transitions stored per stream id: lets a caller check that nothing a writer sent was lost.
        self._stream_transitions: dict[int, int] = {}
        if self.snapshot_dir is not None:
            path = restore_latest(self.snapshot_dir, self.storage)
            if path is not None:
                self._restore_state(path)
        self._insert_wait_s = 0.0
        self._sample_wait_s = 0.0
        self._inserts_held = 0
        self._samples_held = 0
        self._snapshots_saved = 0
        self._rate_mark = (time.monotonic(), self.limiter.inserts, self.limiter.samples)
        self._stop = threading.Event()
        self._released = False
        if cfg.snapshot_every_s > 0 and self.snapshot_dir is not None:
            threading.Thread(
                target=self._snapshot_loop, name="replay-snapshots", daemon=True
            ).start()

    def _restore_state(self, path: Path) -> None:
        """Take the limiter counts and stream tallies saved with the snapshot just restored."""
        self.restored_from = str(path)
        extra = snapshot_extra(path)
        if "limiter" in extra:
            self.limiter.load_state(extra["limiter"])
        else:  # a snapshot written without them (checkpoint of an older run): restart balanced
            self.limiter.reset_balanced(self.storage.num_transitions)
        self._stream_transitions = {int(k): v for k, v in extra.get("streams", {}).items()}
        self.restored_state = {"size": self.storage.num_transitions, **self.limiter.state()}
        log.warning(
            "replay shard %d restored %d entries and limiter %s from %s",
            self.index,
            self.storage.num_entries,
            self.limiter.state(),
            path,
        )

    def _snapshot_state(self) -> dict:
        """What a snapshot saves beside the entries (read under the shard's lock)."""
        return {
            "limiter": self.limiter.state(),
            "streams": {str(k): v for k, v in self._stream_transitions.items()},
        }

    # ---- writers -----------------------------------------------------------------------------

    def insert(self, chunk: TransitionChunk) -> dict:
        """Store the chunk; `ready` says whether the writer may send more now."""
        with self._cond:
            added = self.storage.add(chunk)
            self.limiter.record_insert(added)
            streams, counts = np.unique(chunk.stream_ids[~chunk.first], return_counts=True)
            for stream, count in zip(streams.tolist(), counts.tolist(), strict=True):
                self._stream_transitions[stream] = self._stream_transitions.get(stream, 0) + count
            self._cond.notify_all()
        info = self.wait_insert(0.0)
        info["inserted"] = added
        return info

    def wait_insert(self, timeout_s: float) -> dict:
        """Wait until one more insert is within the rate limit (at most `timeout_s` and
        `replay.insert_timeout_s`); `ready` is False on timeout."""
        timeout_s = min(timeout_s, self.cfg.insert_timeout_s)
        start = time.monotonic()
        with self._cond:
            if not self.limiter.can_insert(1) and timeout_s > 0:
                self._inserts_held += 1
            ready = self._cond.wait_for(lambda: self.limiter.can_insert(1), timeout=timeout_s)
            wait_s = time.monotonic() - start
            self._insert_wait_s += wait_s
            size = self.storage.num_transitions
        return {"ready": bool(ready), "wait_s": wait_s, "size": size}

    def stream_transitions(self) -> dict[int, int]:
        """Transitions stored per stream id since the shard started (restored with a snapshot)."""
        with self._cond:
            return dict(self._stream_transitions)

    # ---- learner -----------------------------------------------------------------------------

    def sample(self, n: int, timeout_s: float) -> SampleReply:
        """`n` transitions drawn uniformly from this shard, the shard's size after sampling, and
        whether it could give more now (`sampleable`: the sampler leaves a starved shard out).

        Waits while the learner is ahead of the actors or the shard is below its minimum size;
        returns a reply without a batch when `timeout_s` passes first.
        """
        if n > self.limiter.max_sample_request:
            raise ValueError(
                f"a sample request of {n} transitions can block shard {self.index} for good: "
                f"at most {self.limiter.max_sample_request}; raise replay.rate_tolerance"
            )
        start = time.monotonic()
        deadline = start + timeout_s
        batch = None
        with self._cond:
            if not self._may_sample(n):
                self._samples_held += 1
            while batch is None:
                if self._may_sample(n):
                    try:
                        batch = self.storage.sample(n)
                        break
                    except NoSampleableError:
                        pass  # only episode starts or unlinked entries so far: wait for inserts
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._released:
                    break
                self._cond.wait(remaining)
            if batch is not None:
                self.limiter.record_sample(n)
                self._cond.notify_all()
            self._sample_wait_s += time.monotonic() - start
            return SampleReply(
                batch, self.storage.num_transitions, self._may_sample(1), self._released
            )

    def _reached_min_size(self) -> bool:
        return self.limiter.inserts >= self.limiter.min_size

    def _may_sample(self, n: int) -> bool:
        # Released: the rate no longer binds, but the minimum size still does; a run stopped
        # before its replay filled up ends without training on a handful of transitions.
        return self.limiter.can_sample(n) or (self._released and self._reached_min_size())

    def release(self) -> None:
        """The writers have stopped for good (the run reached its budget): sampling no longer
        waits for inserts, and a shard still below its minimum size answers at once without a
        batch (`SampleReply.released`). Without this the learner's last call would wait for
        transitions that never come, and the final checkpoint behind it until
        `replay.hang_timeout_s`."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    # ---- service -----------------------------------------------------------------------------

    def ping(self) -> int:
        return self.index

    def size(self) -> int:
        """Transitions stored."""
        with self._cond:
            return self.storage.num_transitions

    def status(self) -> tuple[int, bool, bool]:
        """Transitions stored, whether the learner may stop waiting for this shard's minimum size
        (reached, or the shard was released: no more will come), and whether its rate limiter
        lets the learner sample now."""
        with self._cond:
            return (
                self.storage.num_transitions,
                self._released or self._reached_min_size(),
                self.limiter.can_sample(1),
            )

    def stats(self) -> dict:
        """Size, rates since the previous call, memory and both sides' waiting time."""
        with self._cond:
            now, inserts, samples = time.monotonic(), self.limiter.inserts, self.limiter.samples
            then, inserts0, samples0 = self._rate_mark
            self._rate_mark = (now, inserts, samples)
            elapsed = max(now - then, 1e-9)
            s = self.storage
            return {
                "index": self.index,
                "size": s.num_transitions,
                "entries": s.num_entries,
                "capacity": s.capacity,
                "inserts": inserts,
                "samples": samples,
                "inserts_per_s": (inserts - inserts0) / elapsed,
                "samples_per_s": (samples - samples0) / elapsed,
                "bytes_used": s.bytes_used,
                "bytes_allocated": s.bytes_allocated,
                "bytes_per_transition": s.bytes_per_transition,
                "insert_wait_s": self._insert_wait_s,
                "sample_wait_s": self._sample_wait_s,
                "inserts_held": self._inserts_held,
                "samples_held": self._samples_held,
                "limiter_inserts": self.limiter.inserts,
                "limiter_samples": self.limiter.samples,
                "rate_diff": self.limiter.diff,
                "ready": self._reached_min_size(),
                "snapshots_saved": self._snapshots_saved,
                "restored_from": self.restored_from,
                "restored_state": self.restored_state,
            }

    def save_snapshot(self) -> str:
        """Write a snapshot to this shard's snapshot folder; returns the file's path."""
        if self.snapshot_dir is None:
            raise ValueError(
                f"replay shard {self.index} has no snapshot folder; set replay.snapshot_dir "
                "(or run.snapshot_replay) to save snapshots"
            )
        with self._snapshot_lock:
            path = save_snapshot(
                self.storage, self.snapshot_dir, lock=lambda: self._cond, extra=self._snapshot_state
            )
            self._snapshots_saved += 1
        return str(path)

    def close(self) -> None:
        """Stop the periodic snapshots (the shard keeps serving)."""
        self._stop.set()

    def _snapshot_loop(self) -> None:
        while not self._stop.wait(self.cfg.snapshot_every_s):
            try:
                self.save_snapshot()
            except (
                OSError
            ) as err:  # a full disk must not take the shard down; the next try may work
                log.error("replay shard %d: snapshot failed: %s", self.index, err)


class RemoteReplayShard(ReplayShard):
    """ReplayShard as a Ray actor: only the sample thread differs (see SAMPLE_GROUP)."""

    @ray.method(concurrency_group=SAMPLE_GROUP)
    def sample(self, n: int, timeout_s: float) -> SampleReply:
        return super().sample(n, timeout_s)


def create_shards(
    cfg: ReplayConfig,
    frame_shape: tuple[int, int, int],
    action_dim: int,
    frame_stack: int,
    samples_per_insert: float,
    seed: int = 0,
    snapshot_dir: str = "",
    strategies: list | None = None,
    n_step: int = 1,
    gamma: float | None = None,
) -> list:
    """Start `cfg.num_shards` ReplayShard Ray actors; returns their handles.

    `strategies[i]` places shard i (the launcher pins each shard to the node it planned for it);
    without them Ray's default placement applies. `max_restarts=-1`: Ray restarts a crashed
    shard, which restores its newest snapshot.
    """
    remote_cls = ray.remote(concurrency_groups={SAMPLE_GROUP: 1})(RemoteReplayShard)
    strategies = strategies or ["DEFAULT"] * cfg.num_shards
    if len(strategies) != cfg.num_shards:
        raise ValueError(f"{len(strategies)} placement strategies for {cfg.num_shards} shards")
    return [
        remote_cls.options(
            num_cpus=1,
            max_restarts=-1,
            max_concurrency=MAX_CONCURRENCY,
            scheduling_strategy=strategies[i],
        ).remote(
            i,
            cfg,
            tuple(frame_shape),
            action_dim,
            frame_stack,
            samples_per_insert,
            seed,
            snapshot_dir,
            n_step,
            gamma,
        )
        for i in range(cfg.num_shards)
    ]
