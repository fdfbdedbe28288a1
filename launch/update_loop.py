"""Updates, metric averaging, policy lag and weight publishing: shared by the serial and distributed loops."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from learner.learning import SacAeLearner
from learner.weights import PolicyWeights
from replay.types import SampledBatch


class UpdateLoop:
    """Feeds batches to the learner, publishes weights every `publish_every` updates, averages metrics.

    Metrics stay device tensors until `report()`, which syncs once per report, not per update.
    """

    def __init__(
        self, learner: SacAeLearner, publish: Callable[[PolicyWeights], None], publish_every: int
    ):
        self.learner = learner
        self.publish = publish
        self.publish_every = publish_every
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._lag_sum = 0.0
        self._since = time.perf_counter()
        self.publish_now()

    def publish_now(self) -> None:
        self.latest = self.learner.policy_weights()
        self.publish(self.latest)

    def step(self, batch: SampledBatch) -> None:
        # Policy lag: versions the learner moved on since the sampled actions were chosen.
        self._lag_sum += self.learner.weights_version - float(np.mean(batch.weights_version))
        metrics = self.learner.update(batch)
        for key, value in metrics.items():
            # fp32 sums: a bf16 sum of 300 ones stops at 256 (8 significant bits).
            value = value.detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value.clone()
        self._count += 1
        if self.learner.updates % self.publish_every == 0:
            self.publish_now()

    def report(self) -> dict[str, float]:
        """Mean of every metric since the last report, plus rates; resets the window."""
        now = time.perf_counter()
        row: dict[str, float] = {"learner/updates": float(self.learner.updates)}
        if self._count:
            stacked = torch.stack([v / self._count for v in self._sums.values()]).cpu().tolist()
            row.update(zip(self._sums.keys(), stacked, strict=True))
            row["learner/policy_lag"] = self._lag_sum / self._count
        row["learner/updates_per_s"] = self._count / max(now - self._since, 1e-9)
        row["learner/weights_version"] = float(self.learner.weights_version)
        self._sums, self._count, self._lag_sum, self._since = {}, 0, 0.0, now
        return row
