"""What `--learner.policy-ema-decay` costs the learner: one average step against one update.

    python benchmarks/policy_average_cost.py

For each CarRacing preset's learner (on this machine's device and numerics), on one random batch
of 84x84 pixels (`learner/bench.py`'s, as `sacae bench learner` uses): the best over three rounds
of the time of an update (`measure_updates_per_s`, 3 s a round) and of a `PolicyAverage.step()`
(200 in a row), measured in the same process. Prints one JSON line.
"""

from __future__ import annotations

import json
import time

import torch

from launch.config import PRESETS
from learner.bench import measure_updates_per_s, random_batch
from learner.learning import SacAeLearner
from learner.weights import PolicyAverage

ROUNDS = 3
UPDATE_SECONDS = 3.0


def step_s(average: PolicyAverage, repeats: int, sync) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        average.step()
    sync()
    return (time.perf_counter() - start) / repeats


def measure(preset: str) -> dict:
    cfg = PRESETS[preset]().learner
    learner = SacAeLearner((9, 84, 84), 3, cfg, seed=0)
    batch = random_batch(cfg.batch_size, (9, 84, 84), n_step=cfg.n_step)
    average = PolicyAverage(learner.nets.policy, 0.999)
    sync = torch.cuda.synchronize if learner.device.type == "cuda" else lambda: None
    update_s = 1 / max(measure_updates_per_s(learner, batch, UPDATE_SECONDS) for _ in range(ROUNDS))
    average_s = min(step_s(average, 200, sync) for _ in range(ROUNDS))
    return {
        "preset": preset,
        "device": learner.device.type,
        "numerics": learner.numerics.describe(),
        "policy_params": sum(p.numel() for p in learner.nets.policy.parameters()),
        "update_s": update_s,
        "average_step_s": average_s,
        "average_step_per_update": average_s / update_s,
    }


def main() -> None:
    rows = [measure(preset) for preset in ("carracing-cpu", "carracing")]
    print(json.dumps({"bench": "policy_average_cost", "rows": rows}), flush=True)


if __name__ == "__main__":
    main()
