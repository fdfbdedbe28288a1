"""Where the learner gets batches: the `BatchSource` seam, and its in-process implementation.

The learner consumes `next_batch(out=None)` and `stats()` and knows nothing of where batches come
from: `ReplaySampler` (replay/sampler.py) draws them from shard actors over Ray; `LocalBatchSource`
draws them from one `ReplayShard` in this process, for serial mode. Prioritized replay or a
learner-side frame cache would be one more implementation (see replay/README.md).
"""

from __future__ import annotations

import time
from typing import Protocol

from replay.shard import ReplayShard
from replay.types import SampledBatch


class BatchSource(Protocol):
    def next_batch(self, out: SampledBatch | None = None) -> SampledBatch | None:
        """The next batch (assembled into `out` when given). A blocking source waits for one; a
        non-blocking source returns None when its rate limiter says the actors must go first."""
        ...

    def stats(self) -> dict[str, float]:
        """`sampler/<name>` metrics since the last call."""
        ...


class LocalBatchSource:
    """A non-blocking BatchSource over one in-process ReplayShard (the same class the distributed
    run uses), the way Acme's local runner relaxes its rate limiter: instead of waiting for
    inserts, `next_batch` returns None and the serial loop goes back to collecting."""

    def __init__(self, shard: ReplayShard, batch_size: int):
        self.shard, self.batch_size = shard, batch_size
        self._batches = 0
        self._mark = (time.monotonic(), 0)

    def next_batch(self, out: SampledBatch | None = None) -> SampledBatch | None:
        reply = self.shard.sample(self.batch_size, timeout_s=0.0)
        if reply.batch is None:
            return None
        self._batches += 1
        if out is None:
            return reply.batch
        for name in ("frames", "actions", "rewards", "terminated", "weights_version"):
            getattr(out, name)[...] = getattr(reply.batch, name)
        return out

    def stats(self) -> dict[str, float]:
        """The sampler's keys; nothing here waits, times out or fails over."""
        now, (then, batches0) = time.monotonic(), self._mark
        self._mark = (now, self._batches)
        return {
            "sampler/batches": self._batches,
            "sampler/wait_s": 0.0,
            "sampler/wait_s_per_batch": 0.0,
            "sampler/wait_fraction": 0.0,
            "sampler/batches_per_s": (self._batches - batches0) / max(now - then, 1e-9),
            "sampler/shard_timeouts": 0,
            "sampler/shard_failures": 0,
            "sampler/redraws": 0,
            "sampler/replay_size": self.shard.size(),
        }
