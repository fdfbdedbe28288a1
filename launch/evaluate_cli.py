"""`sacae eval`: run a trained policy from a checkpoint on fresh tracks; mean and std return, optional video."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from actors.evaluate import evaluate_policy
from launch.config import TrainConfig, config_from_dict
from launch.run_dir import load_checkpoint
from learner.networks import Policy, build_policy


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


def load_policy(checkpoint: dict) -> tuple[Policy, TrainConfig]:
    """The CPU policy of a checkpoint and the config it was trained with."""
    cfg = config_from_dict(json.loads(checkpoint["config"]))
    state = checkpoint["learner"]
    obs_shape, action_dim = tuple(state["obs_shape"]), int(state["action_dim"])
    policy = build_policy(obs_shape, action_dim, cfg.learner)
    prefix = "policy."
    policy_state = {k[len(prefix) :]: v for k, v in state["nets"].items() if k.startswith(prefix)}
    policy.load_state_dict(policy_state)
    return policy.eval().requires_grad_(False), cfg


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(EvalArgs, args=argv)
    if args.episodes < 1:
        raise SystemExit(f"error: --episodes {args.episodes} is invalid: allowed >= 1")
    checkpoint = load_checkpoint(args.checkpoint)  # a CheckpointError ends as one `error:` line
    torch.set_num_threads(1)
    policy, cfg = load_policy(checkpoint)
    result = evaluate_policy(policy, cfg.env, args.episodes, seed=args.seed, video_path=args.video)
    report = {
        "checkpoint": checkpoint["path"],
        "env_frames": checkpoint["counters"].get("env_frames"),
        "episodes": args.episodes,
        **result.summary(),
        "video": result.video_path,
    }
    print(json.dumps(report), flush=True)
    return report
