"""How much a run's policy moves late in training, and what averaging its last checkpoints gives.

    python benchmarks/checkpoint_average.py runs/learning/<run> [<run> ...] --episodes 20 --seed 777001

For each run directory it drives, on the same fresh stock tracks, the deterministic policy of each
checkpoint the run kept (its last three: `launch/run_dir.py:KEEP_CHECKPOINTS`), then one policy
whose weights are the element-wise mean of theirs: a uniform average over the updates between the
oldest and the newest, in the spirit of stochastic weight averaging (Izmailov et al. 2018). The
average is taken in float64 and cast back. A checkpoint that carries the learner's moving average
of the policy's weights (`--learner.policy-ema-decay`) has that average driven too, on the same
tracks (`ema` beside the checkpoint's figures). Keep `--seed` apart from FINAL_EVAL_SEED (90,000), so
that no final evaluation's tracks are used to judge.

Prints one JSON line per run: each checkpoint's env frames and figures, and the average's. The
evaluation is the one `sacae eval` runs (one torch thread, stock CarRacing-v3, no training aid).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from actors.evaluate import evaluate_policy
from launch.evaluate_cli import has_average, load_policy
from launch.run_dir import load_checkpoint

FIGURES = ("mean", "std", "min", "max", "tiles_visited_mean", "wrong_way_tracks", "speed_mean")


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of same-shaped state dicts; integer buffers come from the last one."""
    last = states[-1]
    return {
        key: (sum(s[key].double() for s in states) / len(states)).to(value.dtype)
        if value.is_floating_point()
        else value
        for key, value in last.items()
    }


def drive_run(run: Path, episodes: int, seed: int) -> dict:
    """Each kept checkpoint of `run`, then their average, on the same `episodes` tracks."""
    paths = sorted((run / "checkpoints").glob("ckpt_*.pt"))
    if not paths:
        raise SystemExit(f"error: {run} has no checkpoints/ckpt_*.pt: pass a run directory")
    line: dict = {"run": run.name, "checkpoints": []}
    policies = []
    for path in paths:
        checkpoint = load_checkpoint(path)
        policy, cfg = load_policy(checkpoint)
        policies.append(policy)
        summary = evaluate_policy(policy, cfg.env, episodes, seed=seed).summary()
        entry = {
            "checkpoint": path.name,
            "env_frames": checkpoint["counters"].get("env_frames"),
            **{k: summary[k] for k in FIGURES},
        }
        if has_average(checkpoint):
            ema, _ = load_policy(checkpoint, "average")
            summary = evaluate_policy(ema, cfg.env, episodes, seed=seed).summary()
            entry["ema"] = {k: summary[k] for k in FIGURES}
        line["checkpoints"].append(entry)
    policy.load_state_dict(average_state([p.state_dict() for p in policies]))
    summary = evaluate_policy(policy, cfg.env, episodes, seed=seed).summary()
    line["average"] = {k: summary[k] for k in FIGURES}
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run directories")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=777001, help="the evaluation tracks' seed")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as `sacae eval`
    for run in args.runs:
        print(
            json.dumps(
                {
                    "episodes": args.episodes,
                    "seed": args.seed,
                    **drive_run(run, args.episodes, args.seed),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
