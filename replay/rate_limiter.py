"""Samples-per-insert rate limiter (Reverb's SampleToInsertRatio semantics, plain Python).

Counts are transitions: an insert adds one transition (an agent step of one env), a sample takes
one transition out of a batch. With samples_per_insert = batch_size * updates_per_step the learner
makes `updates_per_step` updates per agent step whatever the number of actors: whichever side runs
ahead of the target by more than the error buffer waits for the other.

    diff = inserts * samples_per_insert - samples
    centre = min_size * samples_per_insert   (the balanced point once learning starts)
    sampling allowed while inserts >= min_size and diff - n >= centre - error_buffer
    inserting allowed while inserts + n <= min_size  or  diff + n * spi <= centre + error_buffer

Reference: dm-reverb `rate_limiter.cc` and `SampleToInsertRatio` (reverb/rate_limiters.py).
"""

from __future__ import annotations

import math

from common.validation import ConfigError


class RateLimiter:
    """Holds samples per insert at a target within an error buffer, after a minimum size."""

    def __init__(self, samples_per_insert: float, min_size: int, error_buffer: float) -> None:
        if samples_per_insert <= 0:
            raise ConfigError(
                f"samples_per_insert = {samples_per_insert!r} is invalid: allowed > 0"
            )
        if min_size < 1:
            raise ConfigError(f"rate limiter min_size = {min_size!r} is invalid: allowed >= 1")
        # Reverb's rule: a buffer narrower than one insert's worth of samples can block both sides.
        if error_buffer < max(1.0, samples_per_insert):
            raise ConfigError(
                f"rate limiter error buffer = {error_buffer!r} samples is invalid: allowed >= "
                f"max(1, samples_per_insert = {samples_per_insert}); raise replay.rate_tolerance"
            )
        self.samples_per_insert = float(samples_per_insert)
        self.min_size = int(min_size)
        self.error_buffer = float(error_buffer)
        centre = self.min_size * self.samples_per_insert
        self.min_diff = centre - self.error_buffer
        self.max_diff = centre + self.error_buffer
        self.inserts = 0
        self.samples = 0

    @property
    def diff(self) -> float:
        """Samples the learner may still take before matching the target (shifted by the centre)."""
        return self.inserts * self.samples_per_insert - self.samples

    @property
    def max_sample_request(self) -> int:
        """The largest single sample request that can never block both sides at once."""
        return int(math.floor(2 * self.error_buffer - self.samples_per_insert))

    def can_insert(self, n: int = 1) -> bool:
        """Whether `n` more inserts keep the learner within the buffer."""
        if self.inserts + n <= self.min_size:
            return True
        return (self.inserts + n) * self.samples_per_insert - self.samples <= self.max_diff

    def can_sample(self, n: int) -> bool:
        """Whether `n` more samples keep the actors within the buffer (and min_size is reached)."""
        if self.inserts < self.min_size:
            return False
        return self.diff - n >= self.min_diff

    def record_insert(self, n: int) -> None:
        self.inserts += int(n)

    def record_sample(self, n: int) -> None:
        self.samples += int(n)

    def reset_balanced(self, inserts: int) -> None:
        """Restart from `inserts` stored transitions at the balanced point: neither side blocked.

        Used after a snapshot restore, where the sample count of the lost process is meaningless.
        """
        self.inserts = int(inserts)
        excess = max(0, self.inserts - self.min_size)
        self.samples = int(round(excess * self.samples_per_insert))

    def state(self) -> dict:
        return {"inserts": self.inserts, "samples": self.samples, "diff": self.diff}

    def load_state(self, state: dict) -> None:
        """Continue from counts saved by `state()` (with a replay snapshot that matches them)."""
        self.inserts, self.samples = int(state["inserts"]), int(state["samples"])
