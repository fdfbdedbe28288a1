"""What `--learner.policy-ema-decay` costs the learner: one average step against one update.

    python benchmarks/policy_average_cost.py

For each CarRacing preset's learner (on this machine's device and numerics), on one random batch
of 84x84 pixels: the best over three rounds of the mean time of an update (10 in a row), and of a
`PolicyAverage.step()` (200 in a row), measured in the same process. Prints one JSON line.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from launch.config import PRESETS
from learner.learning import SacAeLearner
from learner.weights import PolicyAverage
from replay.types import SampledBatch

ROUNDS = 3


def random_batch(batch_size: int, n_step: int, frame_stack: int = 3) -> SampledBatch:
    rng = np.random.default_rng(0)
    return SampledBatch(
        frames=rng.integers(0, 256, (batch_size, frame_stack + n_step, 3, 84, 84), dtype=np.uint8),
        actions=rng.uniform(-1, 1, (batch_size, 3)).astype(np.float32),
        rewards=rng.normal(size=batch_size).astype(np.float32),
        terminated=np.zeros(batch_size, np.float32),
        weights_version=np.zeros(batch_size, np.int64),
    )


def mean_s(work, repeats: int, sync) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    sync()
    return (time.perf_counter() - start) / repeats


def measure(preset: str) -> dict:
    cfg = PRESETS[preset]().learner
    learner = SacAeLearner((9, 84, 84), 3, cfg, seed=0)
    batch = random_batch(cfg.batch_size, cfg.n_step)
    average = PolicyAverage(learner.nets.policy, 0.999)
    sync = torch.cuda.synchronize if learner.device.type == "cuda" else lambda: None
    for _ in range(3):  # warm-up: allocations, kernel choice
        learner.update(batch)
        average.step()
    update_s = min(mean_s(lambda: learner.update(batch), 10, sync) for _ in range(ROUNDS))
    step_s = min(mean_s(average.step, 200, sync) for _ in range(ROUNDS))
    return {
        "preset": preset,
        "device": learner.device.type,
        "numerics": learner.numerics.describe(),
        "policy_params": sum(p.numel() for p in learner.nets.policy.parameters()),
        "update_s": update_s,
        "average_step_s": step_s,
        "average_step_per_update": step_s / update_s,
    }


def main() -> None:
    rows = [measure(preset) for preset in ("carracing-cpu", "carracing")]
    print(json.dumps({"bench": "policy_average_cost", "rows": rows}), flush=True)


if __name__ == "__main__":
    main()
