"""`sacae eval`: run a trained policy from a checkpoint on fresh tracks; mean and std return, optional video."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from actors.evaluate import evaluate_policy
from launch.config import TrainConfig, config_from_dict
from launch.run_dir import load_checkpoint
from learner.networks import Policy, build_policy

Weights = Literal["final", "average"]
"""Which of a checkpoint's policy weights to drive."""


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate the deterministic policy (tanh of the mean) of a checkpoint on fresh CarRacing tracks."""

    checkpoint: Path
    """A ckpt_*.pt file, or a run directory (its newest checkpoint is used)."""
    episodes: int = 10
    """Episodes, each on a fresh track (100 for the 'solved' criterion)."""
    seed: int = 12345
    """Seed of the evaluation tracks (disjoint from training seeds)."""
    video: Path | None = None
    """Write an MP4 of the first episode here."""
    weights: Weights = "final"
    """final: the policy's weights at the checkpoint; average: their moving average, kept by a run trained with --learner.policy-ema-decay."""


def has_average(checkpoint: dict) -> bool:
    """Whether a checkpoint carries the moving average of its policy's weights."""
    return checkpoint["learner"].get("policy_average") is not None


def load_policy(checkpoint: dict, weights: Weights = "final") -> tuple[Policy, TrainConfig]:
    """The CPU policy of a checkpoint (its final weights or their moving average) and the config
    it was trained with."""
    cfg = config_from_dict(json.loads(checkpoint["config"]))
    state = checkpoint["learner"]
    obs_shape, action_dim = tuple(state["obs_shape"]), int(state["action_dim"])
    policy = build_policy(obs_shape, action_dim, cfg.learner)
    if weights == "average":
        if not has_average(checkpoint):
            raise SystemExit(
                f"error: {checkpoint['path']} has no average of the policy's weights (its run had "
                "--learner.policy-ema-decay 0); use --weights final"
            )
        policy_state = state["policy_average"]
    else:
        prefix = "policy."
        nets = state["nets"]
        policy_state = {k[len(prefix) :]: v for k, v in nets.items() if k.startswith(prefix)}
    policy.load_state_dict(policy_state)
    return policy.eval().requires_grad_(False), cfg


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(EvalArgs, args=argv)
    if args.episodes < 1:
        raise SystemExit(f"error: --episodes {args.episodes} is invalid: allowed >= 1")
    checkpoint = load_checkpoint(args.checkpoint)  # a CheckpointError ends as one `error:` line
    torch.set_num_threads(1)
    policy, cfg = load_policy(checkpoint, args.weights)
    result = evaluate_policy(policy, cfg.env, args.episodes, seed=args.seed, video_path=args.video)
    report = {
        "checkpoint": checkpoint["path"],
        "env_frames": checkpoint["counters"].get("env_frames"),
        "episodes": args.episodes,
        "weights": args.weights,
        **result.summary(),
        "video": result.video_path,
    }
    print(json.dumps(report), flush=True)
    return report
