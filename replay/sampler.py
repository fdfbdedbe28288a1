"""The learner's side of the replay service: batches drawn uniformly over all shards, prefetched.

Each batch request splits its `batch_size` over the shards multinomially by their sizes (each shard
then draws uniformly from its own transitions), so every stored transition is equally likely
whatever the shards hold. `prefetch` requests stay in flight: while the learner updates, the shards
already gather the next batches, and `next_batch` waits only when the shards have nothing to give
(below min_size, or the rate limiter holding the learner back).

Sizes come from the shards' sample replies, so they lag by at most `prefetch` batches.

A starved shard does not hold the others back. Each reply says whether the shard's rate limiter
lets the learner sample more (`sampleable`); batches are split over the sampleable shards only, and
a part that a shard cannot give within STARVED_WAIT_S, while another shard can, is drawn from
those instead. Without this, a shard whose only writer died stops the learner, the learner stops
sampling every other shard, and their rate limiters then stop every other actor: one dead process
stalls the whole run until its replacement writes again. Each shard's samples per insert still
holds (its limiter decides), so the run's ratio holds too; only while a shard is starved is the
draw no longer exactly uniform over all stored transitions.

When the run ends, the driver releases the shards: a shard that then cannot give its part (still
below its minimum size, or nothing sampleable) says so, and `next_batch` returns None, which ends
the learner's last call instead of waiting for transitions that will never come.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError

from replay.storage import empty_batch
from replay.types import SampledBatch

_REPLY_GRACE_S = 30.0  # beyond the shard's own sample timeout: serialisation, transfer, a busy node
_PING_TIMEOUT_S = 5.0
_EMPTY_SHARD_GRACE_S = 10.0
STARVED_WAIT_S = 0.5
"""Wait for a rate-limited shard before drawing its part from shards that can give it now."""
log = logging.getLogger(__name__)


@dataclass
class _Part:
    """One shard's share of one batch request."""

    shard: int
    n: int
    ref: ray.ObjectRef


def split_batch(rng: np.random.Generator, batch_size: int, sizes: np.ndarray) -> np.ndarray:
    """Transitions to ask of each shard: multinomial by size (equal while no size is known).

    With each shard drawing uniformly from its own transitions, each transition of any shard is
    then drawn with probability 1 / sum(sizes): uniform over the whole replay.
    """
    sizes = np.asarray(sizes, np.float64)
    total = sizes.sum()
    p = sizes / total if total > 0 else np.full(len(sizes), 1.0 / len(sizes))
    return rng.multinomial(batch_size, p)


class _Released(Exception):
    """A released shard answered without a batch: no batch will come (see the module doc)."""


def _raise_if_fatal(shard: int, err: Exception) -> None:
    """A shard whose __init__ failed (e.g. a mismatched snapshot) will not come back: say why now."""
    if isinstance(err, RayActorError) and err.actor_init_failed:
        raise RuntimeError(f"replay shard {shard} could not start: {err}") from err


class ReplaySampler:
    """Draws batches from replay shard actors, keeping `prefetch` requests in flight."""

    def __init__(
        self,
        shards: list,
        batch_size: int,
        prefetch: int = 4,
        sample_timeout_s: float = 60.0,
        seed: int = 0,
        hang_timeout_s: float = 300.0,
    ) -> None:
        if not shards or batch_size < 1 or prefetch < 1:
            raise ValueError(
                f"ReplaySampler needs shards, batch_size >= 1 and prefetch >= 1; got "
                f"{len(shards)} shards, {batch_size}, {prefetch}"
            )
        self.shards = list(shards)
        self.batch_size = batch_size
        self.prefetch = prefetch
        self.sample_timeout_s = sample_timeout_s
        self.hang_timeout_s = hang_timeout_s
        self._rng = np.random.default_rng(seed)
        self._sizes = np.zeros(len(self.shards), np.float64)
        self._sampleable = np.ones(len(self.shards), bool)
        self._pending: deque[list[_Part]] = deque()
        self._batches = 0
        self._wait_s = 0.0
        self._shard_timeouts = 0
        self._shard_failures = 0
        self._redraws = 0
        self._mark = (time.monotonic(), 0, 0.0)  # (time, batches, wait_s) at the previous stats()

    # ---- requests ----------------------------------------------------------------------------

    def _others_sampleable(self, shard: int) -> np.ndarray:
        others = self._sampleable & (self._sizes > 0)
        others[shard] = False
        return others

    def _ask(self, shard: int, n: int) -> ray.ObjectRef:
        # Wait long only when no other shard could give the part instead.
        timeout_s = self.sample_timeout_s
        if self._others_sampleable(shard).any():
            timeout_s = min(timeout_s, STARVED_WAIT_S)
        return self.shards[shard].sample.remote(n, timeout_s)

    def _submit(self) -> None:
        usable = self._sampleable & (self._sizes > 0)
        weights = self._sizes * usable if usable.any() else self._sizes
        counts = split_batch(self._rng, self.batch_size, weights)
        # A shard asked for nothing this time reports its status, so a growing or refilled
        # shard is seen.
        self._pending.append(
            [
                _Part(k, int(n), self._ask(k, int(n)) if n else self.shards[k].status.remote())
                for k, n in enumerate(counts)
            ]
        )

    def _wait_for_data(self) -> None:
        """Wait until every shard reached its minimum size, so the first requests follow real sizes.

        A shard that stays empty (no actor writes to it) is left out after `_EMPTY_SHARD_GRACE_S`
        once another shard is ready; it joins as soon as a size probe sees data in it.
        """
        start = time.monotonic()
        ready_since = None
        while True:
            refs = [shard.status.remote() for shard in self.shards]
            ready = np.zeros(len(self.shards), bool)
            for k, ref in enumerate(refs):
                # A shard still starting or restarting is polled again on the next round.
                try:
                    self._sizes[k], ready[k], self._sampleable[k] = ray.get(
                        ref, timeout=_PING_TIMEOUT_S
                    )
                except (GetTimeoutError, RayActorError) as err:
                    _raise_if_fatal(k, err)
            now = time.monotonic()
            if ready.any() and ready_since is None:
                ready_since = now
            if ready.all():
                return
            grace_over = ready_since is not None and now - ready_since > _EMPTY_SHARD_GRACE_S
            if grace_over and np.all(ready | (self._sizes == 0)):
                empty = np.flatnonzero(~ready).tolist()
                log.warning("replay shards %s are empty; sampling from the others", empty)
                return
            if now - start > self.hang_timeout_s:
                raise TimeoutError(
                    f"the replay shards did not reach their minimum size in {self.hang_timeout_s:.0f} s "
                    f"(sizes {self._sizes.astype(int).tolist()}); are the rollout actors running?"
                )
            time.sleep(0.05)

    # ---- replies -----------------------------------------------------------------------------

    def _probe(self, part: _Part) -> None:
        """Take a status probe's answer; a slow or failed probe keeps the last known state."""
        with contextlib.suppress(GetTimeoutError, RayActorError):
            size, _, sampleable = ray.get(part.ref, timeout=_PING_TIMEOUT_S)
            self._sizes[part.shard], self._sampleable[part.shard] = size, sampleable

    def _collect(self, part: _Part) -> list[SampledBatch]:
        """The part's transitions: from its shard, or, when that shard is starved while others
        are not, from those; re-asks after a shard timeout or a shard restart."""
        deadline = time.monotonic() + self.hang_timeout_s
        while True:
            try:
                batch, size, sampleable, released = ray.get(
                    part.ref, timeout=self.sample_timeout_s + _REPLY_GRACE_S
                )
            except GetTimeoutError:
                pass  # the shard is busy beyond its own timeout: keep waiting for the same reply
            except ObjectLostError as err:
                # The reply lived on a node that died before we fetched it: ask again.
                self._shard_failures += 1
                log.warning(
                    "a sample reply of replay shard %d was lost (%s); asking again",
                    part.shard,
                    type(err).__name__,
                )
                self._await_shard(part.shard, deadline)
                part.ref = self._ask(part.shard, part.n)
            except RayActorError as err:
                _raise_if_fatal(part.shard, err)
                self._shard_failures += 1
                log.warning("replay shard %d failed (%s); waiting for its restart", part.shard, err)
                self._await_shard(part.shard, deadline)
                part.ref = self._ask(part.shard, part.n)
            else:
                self._sizes[part.shard], self._sampleable[part.shard] = size, sampleable
                if batch is not None:
                    return [batch]
                if released:
                    raise _Released
                self._sampleable[part.shard] = False
                others = self._others_sampleable(part.shard)
                if others.any():
                    return self._redraw(part.n, others)
                self._shard_timeouts += 1  # below min_size or rate-limited for sample_timeout_s
                part.ref = self._ask(part.shard, part.n)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"replay shard {part.shard} gave no batch for {self.hang_timeout_s:.0f} s "
                    f"(sizes {self._sizes.astype(int).tolist()}); are the rollout actors running?"
                )

    def _redraw(self, n: int, shards: np.ndarray) -> list[SampledBatch]:
        """Draw `n` transitions from the `shards` mask instead, by their sizes."""
        self._redraws += 1
        counts = split_batch(self._rng, n, self._sizes * shards)
        parts = [_Part(k, int(m), self._ask(k, int(m))) for k, m in enumerate(counts) if m]
        return [batch for p in parts for batch in self._collect(p)]

    def _await_shard(self, shard: int, deadline: float) -> None:
        while True:
            try:
                ray.get(self.shards[shard].ping.remote(), timeout=_PING_TIMEOUT_S)
                return
            except (GetTimeoutError, RayActorError) as err:
                _raise_if_fatal(shard, err)
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"replay shard {shard} did not come back within {self.hang_timeout_s:.0f} s: {err}"
                    ) from err
                time.sleep(0.2)

    # ---- the learner's calls -----------------------------------------------------------------

    def next_batch(self, out: SampledBatch | None = None) -> SampledBatch | None:
        """The next batch, one contiguous uint8 frames array [B, S + 1, C, H, W]; None once the
        shards were released and cannot give one (the run is over).

        Parts are copied once, from the object store into `out` (e.g. pinned host buffers the
        learner reuses) or into freshly allocated arrays.
        """
        if not self._pending:
            self._wait_for_data()
            for _ in range(self.prefetch):
                self._submit()
        request = self._pending.popleft()
        self._submit()  # keep `prefetch` requests in flight while this one is collected
        start = time.monotonic()
        try:
            parts = [batch for part in request if part.n for batch in self._collect(part)]
        except _Released:
            self._wait_s += time.monotonic() - start
            return None
        for part in request:
            if not part.n:
                self._probe(part)
        self._wait_s += time.monotonic() - start
        self._batches += 1
        return self._assemble(parts, out)

    def _assemble(self, parts: list[SampledBatch], out: SampledBatch | None) -> SampledBatch:
        if out is None:
            frames = parts[0].frames
            out = empty_batch(
                self.batch_size, frames.shape[1], frames.shape[2:], parts[0].actions.shape[1]
            )
        offset = 0
        for part in parts:
            end = offset + len(part)
            out.frames[offset:end] = part.frames
            out.actions[offset:end] = part.actions
            out.rewards[offset:end] = part.rewards
            out.terminated[offset:end] = part.terminated
            out.weights_version[offset:end] = part.weights_version
            offset = end
        assert offset == self.batch_size, (offset, self.batch_size)
        return out

    def stats(self) -> dict[str, float]:
        """Waiting time and shard trouble since the start, the wait per batch since the last call."""
        now = time.monotonic()
        then, batches0, wait0 = self._mark
        self._mark = (now, self._batches, self._wait_s)
        new_batches = self._batches - batches0
        return {
            "sampler/batches": self._batches,
            "sampler/wait_s": self._wait_s,
            "sampler/wait_s_per_batch": (self._wait_s - wait0) / max(new_batches, 1),
            "sampler/wait_fraction": (self._wait_s - wait0) / max(now - then, 1e-9),
            "sampler/batches_per_s": new_batches / max(now - then, 1e-9),
            "sampler/shard_timeouts": self._shard_timeouts,
            "sampler/shard_failures": self._shard_failures,
            "sampler/redraws": self._redraws,
            "sampler/replay_size": float(self._sizes.sum()),
        }

    def close(self) -> None:
        """Drop the requests in flight (their replies are discarded)."""
        self._pending.clear()


def shard_metrics(shard_stats: list[dict]) -> dict[str, float]:
    """Shards' `stats()` as metrics: totals `replay/<name>`, per shard `replay/shard<i>/<name>`."""
    keys = (
        "size",
        "inserts_per_s",
        "samples_per_s",
        "bytes_used",
        "insert_wait_s",
        "sample_wait_s",
    )
    metrics: dict[str, float] = {f"replay/{k}": float(sum(s[k] for s in shard_stats)) for k in keys}
    for s in shard_stats:
        for k in keys:
            metrics[f"replay/shard{s['index']}/{k}"] = float(s[k])
    return metrics
