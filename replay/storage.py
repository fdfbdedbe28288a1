"""Pixel replay storage: each frame kept once, frame stacks rebuilt when sampling.

The reference code stores stacked obs and next_obs (127 KB per 84x84 RGB transition with 3 frames);
here each frame is one ring entry (21.2 KB with its metadata) and a transition's two stacks are
rebuilt from a chain of `prev` pointers at sample time.

An entry is one frame of one stream (an env slot of an actor). Entries carry absolute indices (the
count of entries written before them); entry `a` lives in slot `a % capacity` while
`slot_abs[a % capacity] == a`, so an overwritten, never written or not restored entry is detected by
one comparison. `prev[a]` is the absolute index of the stream's previous entry, -1 when unknown (the
stream's first chunk after a restart arrived mid-episode).

Sampling the transition that ends at entry j gathers the chain
    c0 = j, c1 = prev(c0), c(k+1) = c(k) if first(c(k)) else prev(c(k)),
frames [c_S, ..., c1, c0]: obs = the first S, next_obs = the last S. At an episode start this
repeats the reset frame exactly as the actors' frame stack pads: obs [f0, f0, f0], next [f0, f0, f1].

With `n_step` N > 1 a sample is the N-step transition ending at j (DrQ-v2's n-step returns): the
chain is S + N frames long, obs = the first S (the stack at c_N), next_obs = the last S (at c0), the
action is the one taken at obs (entry c_(N-1)), the reward is sum_k gamma^k r(c_(N-1-k)), and the
flags are j's. c0 .. c_(N-1) must all be transitions of one episode, so a sample never spans an
episode boundary; like DrQ-v2's buffer, the last N - 1 states of an episode are never an obs.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from replay.types import SampledBatch, TransitionChunk

_REDRAW_ROUNDS = 8  # rejection rounds before falling back to enumerating every valid entry


class NoSampleableError(RuntimeError):
    """The storage holds no complete transition yet (nothing, or only episode starts)."""


class FrameReplay:
    """A ring of frames with per-entry metadata; samples uniformly over complete transitions."""

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, int, int],
        action_dim: int,
        frame_stack: int = 3,
        seed: int = 0,
        n_step: int = 1,
        gamma: float | None = None,
    ) -> None:
        if capacity < 1 or action_dim < 1 or frame_stack < 1 or len(frame_shape) != 3:
            raise ValueError(
                f"FrameReplay needs capacity >= 1, action_dim >= 1, frame_stack >= 1 and a (C, H, W) "
                f"frame shape; got {capacity}, {action_dim}, {frame_stack}, {frame_shape}"
            )
        if n_step < 1 or (n_step > 1 and gamma is None):
            raise ValueError(
                f"FrameReplay needs n_step >= 1, and the discount gamma of its reward sums when "
                f"n_step > 1; got n_step {n_step}, gamma {gamma}"
            )
        self.capacity = int(capacity)
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.action_dim = int(action_dim)
        self.frame_stack = int(frame_stack)
        self.n_step = int(n_step)
        # Weights of the N rewards of a sample, oldest first: gamma^0 .. gamma^(N-1).
        self.reward_discounts = (
            np.float32(gamma) ** np.arange(self.n_step, dtype=np.float32)
            if self.n_step > 1
            else None
        )
        self.rng = np.random.default_rng(seed)
        # np.zeros maps pages lazily: memory becomes resident as entries are written.
        self.frames = np.zeros((self.capacity, *self.frame_shape), np.uint8)
        self.stream_ids = np.zeros(self.capacity, np.int64)
        self.first = np.zeros(self.capacity, bool)
        self.actions = np.zeros((self.capacity, self.action_dim), np.float32)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.terminated = np.zeros(self.capacity, bool)
        self.truncated = np.zeros(self.capacity, bool)
        self.weights_version = np.zeros(self.capacity, np.int64)
        self.prev = np.full(self.capacity, -1, np.int64)
        self.slot_abs = np.full(self.capacity, -1, np.int64)
        self.total_written = 0  # absolute index of the next entry
        self.lowest = 0  # lowest absolute index that may still be stored
        self.num_stored = 0  # entries stored (slots holding a live entry)
        self.num_first = 0  # stored entries that start an episode (they hold no transition)
        self._stream_last: dict[int, int] = {}  # stream id -> absolute index of its newest entry

    # ---- sizes -------------------------------------------------------------------------------

    @property
    def frames_per_sample(self) -> int:
        """Frames of one sampled transition: obs is the first `frame_stack`, next_obs the last."""
        return self.frame_stack + self.n_step

    @property
    def num_entries(self) -> int:
        """Entries (frames) stored."""
        return self.num_stored

    @property
    def num_transitions(self) -> int:
        """Stored entries that end a transition (all but episode starts)."""
        return self.num_entries - self.num_first

    @property
    def bytes_allocated(self) -> int:
        """Bytes of every array of the ring, whether written yet or not."""
        return sum(a.nbytes for a in self._arrays().values()) + self.slot_abs.nbytes

    @property
    def bytes_per_transition(self) -> float:
        """Allocated bytes per entry: one frame plus its metadata."""
        return self.bytes_allocated / self.capacity

    @property
    def bytes_used(self) -> int:
        """Bytes of the entries written so far (the resident part of the lazily mapped ring)."""
        return int(round(self.num_entries * self.bytes_per_transition))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "frames": self.frames,
            "stream_ids": self.stream_ids,
            "first": self.first,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "weights_version": self.weights_version,
            "prev": self.prev,
        }

    # ---- writing -----------------------------------------------------------------------------

    def add(self, chunk: TransitionChunk) -> int:
        """Store the chunk's entries; returns the number of transitions it added."""
        n = len(chunk)
        if n == 0:
            return 0
        frames, actions = chunk.frames, chunk.actions
        if (
            frames.dtype != np.uint8
            or frames.shape[1:] != self.frame_shape
            or actions.shape[1:] != (self.action_dim,)
        ):
            raise ValueError(
                f"chunk frames {frames.dtype}{list(frames.shape[1:])} / actions {list(actions.shape[1:])} do not "
                f"match the replay's uint8{list(self.frame_shape)} frames / action dim {self.action_dim}"
            )
        start = self.total_written
        prev = self._link(chunk.stream_ids, chunk.first, start)
        self.total_written = start + n
        # A chunk longer than the ring keeps only its newest `capacity` entries.
        skip = max(0, n - self.capacity)
        abs_idx = np.arange(start + skip, start + n, dtype=np.int64)
        slots = abs_idx % self.capacity
        overwritten = self.slot_abs[slots] >= self.lowest
        self.num_first -= int((self.first[slots] & overwritten).sum())
        self.num_stored += len(slots) - int(overwritten.sum())
        values = {
            "frames": chunk.frames,
            "stream_ids": chunk.stream_ids,
            "first": chunk.first,
            "actions": chunk.actions,
            "rewards": chunk.rewards,
            "terminated": chunk.terminated,
            "truncated": chunk.truncated,
            "weights_version": chunk.weights_version,
            "prev": prev,
        }
        for name, array in self._arrays().items():
            array[slots] = values[name][skip:]
        self.slot_abs[slots] = abs_idx
        self.num_first += int(np.count_nonzero(chunk.first[skip:]))
        self.lowest = max(self.lowest, self.total_written - self.capacity)
        return int(np.count_nonzero(~chunk.first))

    def _link(self, stream_ids: np.ndarray, first: np.ndarray, start: int) -> np.ndarray:
        """Absolute index of each entry's stream predecessor (-1 for episode starts and unknowns)."""
        prev = np.empty(len(stream_ids), np.int64)
        last = self._stream_last
        for i, (sid, is_first) in enumerate(zip(stream_ids.tolist(), first.tolist(), strict=True)):
            prev[i] = -1 if is_first else last.get(sid, -1)
            last[sid] = start + i
        return prev

    # ---- sampling ----------------------------------------------------------------------------

    def _is_stored(self, abs_idx: np.ndarray) -> np.ndarray:
        return (abs_idx >= self.lowest) & (self.slot_abs[abs_idx % self.capacity] == abs_idx)

    def chains(self, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame chains [c_(S+N-1), ..., c0] (absolute indices) of transitions ending at `ends`,
        and validity.

        A transition is valid when its end is stored, it and the N - 1 entries before it are not
        episode starts (its N steps lie in one episode), and every step of the chain follows a
        known, still stored predecessor. Only the obs stack pads at an episode start.
        """
        length = self.frames_per_sample
        chain = np.empty((len(ends), length), np.int64)
        c = ends.astype(np.int64)
        chain[:, -1] = c
        ok = self._is_stored(c)
        for k in range(length - 2, -1, -1):
            slot = c % self.capacity
            if k >= self.frame_stack - 1:  # one of the N steps: c must be a transition
                ok &= ~self.first[slot]
                c = self.prev[slot]
            else:  # inside the obs stack: pad with the reset frame
                c = np.where(self.first[slot], c, self.prev[slot])
            ok &= self._is_stored(c)
            chain[:, k] = c
        return chain, ok

    def sample_indices(self, n: int) -> np.ndarray:
        """Absolute end indices of `n` transitions drawn uniformly (with replacement) over valid ones."""
        if self.num_transitions <= 0:
            raise NoSampleableError("the replay holds no transition yet")
        picked: list[np.ndarray] = []
        missing = n
        for _ in range(_REDRAW_ROUNDS):
            draw = self.rng.integers(self.lowest, self.total_written, size=missing)
            _, ok = self.chains(draw)
            picked.append(draw[ok])
            missing -= int(ok.sum())
            if missing == 0:
                return np.concatenate(picked)
        # Mostly invalid entries (tiny or freshly restored ring): enumerate the valid ones once.
        every = np.arange(self.lowest, self.total_written, dtype=np.int64)
        valid = every[self.chains(every)[1]]
        if len(valid) == 0:
            raise NoSampleableError(
                f"none of the {self.num_entries} stored entries ends a complete transition yet"
            )
        picked.append(self.rng.choice(valid, size=missing))
        return np.concatenate(picked)

    def gather(self, ends: np.ndarray, out: SampledBatch | None = None) -> SampledBatch:
        """The batch of the transitions ending at `ends` (valid ones), written into `out` if given."""
        n = len(ends)
        chain, ok = self.chains(ends)
        assert ok.all(), "gather() was given an invalid transition"
        if out is None:
            out = empty_batch(n, self.frames_per_sample, self.frame_shape, self.action_dim)
        flat = out.frames.reshape(n * self.frames_per_sample, *self.frame_shape)
        # mode="clip" lets np.take write straight into `out` (mode="raise" buffers a copy).
        np.take(self.frames, (chain % self.capacity).ravel(), axis=0, out=flat, mode="clip")
        slots = ends % self.capacity
        # The action taken at obs, and the version of the policy that chose it: chain[:, S].
        acted = chain[:, self.frame_stack] % self.capacity
        np.take(self.actions, acted, axis=0, out=out.actions, mode="clip")
        if self.reward_discounts is None:
            np.take(self.rewards, slots, out=out.rewards, mode="clip")
        else:
            steps = chain[:, self.frame_stack :] % self.capacity  # [n, N], oldest first
            np.matmul(self.rewards[steps], self.reward_discounts, out=out.rewards)
        out.terminated[:] = self.terminated[slots]
        np.take(self.weights_version, acted, out=out.weights_version, mode="clip")
        return out

    def sample(self, n: int, out: SampledBatch | None = None) -> SampledBatch:
        """`n` transitions drawn uniformly over the valid ones, uint8 frames [n, S + 1, C, H, W]."""
        return self.gather(self.sample_indices(n), out)

    # ---- snapshot support --------------------------------------------------------------------

    def read_entries(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Copies of the still stored entries with absolute index in [lo, hi), plus `abs_index`."""
        abs_idx = np.arange(max(lo, self.lowest), min(hi, self.total_written), dtype=np.int64)
        abs_idx = abs_idx[self._is_stored(abs_idx)]
        slots = abs_idx % self.capacity
        rows = {name: array[slots] for name, array in self._arrays().items()}
        rows["abs_index"] = abs_idx
        return rows

    def load_entries(self, batches: Iterable[dict[str, np.ndarray]], total_written: int) -> None:
        """Replace the contents by row batches (from `read_entries`, ascending `abs_index`).

        Stream links are not restored: a stream's next chunk may continue an episode whose newest
        entries were lost, so its entries stay unsampleable until their chain is rebuilt.
        """
        self.slot_abs[:] = -1
        self.prev[:] = -1
        self.first[:] = False
        self.total_written = int(total_written)
        self.lowest = self.total_written
        self.num_stored = self.num_first = 0
        self._stream_last = {}
        for rows in batches:
            # A ring smaller than the snapshot's keeps the newest entries.
            keep = rows["abs_index"] >= self.total_written - self.capacity
            abs_idx = rows["abs_index"][keep]
            if len(abs_idx) == 0:
                continue
            slots = abs_idx % self.capacity
            for name, array in self._arrays().items():
                array[slots] = rows[name][keep]
            self.slot_abs[slots] = abs_idx
            self.lowest = min(self.lowest, int(abs_idx[0]))
            self.num_stored += len(abs_idx)
            self.num_first += int(np.count_nonzero(self.first[slots]))


def empty_batch(
    n: int, frames_per_sample: int, frame_shape: tuple[int, ...], action_dim: int
) -> SampledBatch:
    """An uninitialised batch of `n` transitions (one contiguous array per field)."""
    return SampledBatch(
        frames=np.empty((n, frames_per_sample, *frame_shape), np.uint8),
        actions=np.empty((n, action_dim), np.float32),
        rewards=np.empty(n, np.float32),
        terminated=np.empty(n, np.float32),
        weights_version=np.empty(n, np.int64),
    )
