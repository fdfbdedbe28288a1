"""Metrics out of the process: TensorBoard events and a JSONL file with the same rows, plus a console bar.

Keys are `<component>/<name>` and every one is listed in docs/metrics.md.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


def to_float(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu())
    return float(value)


def read_curve(run_dir: Path) -> list[tuple[int, float, float]]:
    """(env frames, eval mean, eval std) of a run's periodic evaluations, from its metrics.jsonl.

    A run resumed from a checkpoint writes a `counters/incarnation` row at the checkpoint's frames
    (`launch.runner.Runner`); points an earlier incarnation logged past those frames were lost
    with it (the resumed run evaluates there again), so they are left out."""
    path = Path(run_dir) / "metrics.jsonl"
    points: list[tuple[int, float, float]] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        row = json.loads(line)
        if "counters/incarnation" in row:
            points = [point for point in points if point[0] <= row["env_frames"]]
        if "eval/return_mean" in row:
            points.append((int(row["env_frames"]), row["eval/return_mean"], row["eval/return_std"]))
    return points


class MetricsLogger:
    """Writes one row of scalars per call to TensorBoard and metrics.jsonl, x-axis = env frames."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in close()

    def write(self, env_frames: int, scalars: dict) -> dict[str, float]:
        row = {k: to_float(v) for k, v in scalars.items()}
        row = {k: v for k, v in row.items() if math.isfinite(v)}
        for key, value in row.items():
            self.tb.add_scalar(key, value, global_step=env_frames)
        self.jsonl.write(json.dumps({"env_frames": env_frames, "time": time.time(), **row}) + "\n")
        return row

    def close(self) -> None:
        self.tb.flush()
        self.tb.close()
        self.jsonl.close()


class ProgressBar:
    """A tqdm bar over env frames showing updates, the latest return and both rates."""

    def __init__(self, total_frames: int, initial: int = 0, enabled: bool = True):
        self.bar = tqdm(
            total=total_frames,
            initial=initial,
            unit="frame",
            unit_scale=True,
            disable=not enabled,
            dynamic_ncols=True,
        )
        self.frames = initial

    def update(
        self,
        env_frames: int,
        updates: int,
        last_return: float | None,
        frames_per_s: float,
        updates_per_s: float,
    ) -> None:
        self.bar.update(max(0, env_frames - self.frames))
        self.frames = env_frames
        ret = "n/a" if last_return is None else f"{last_return:.1f}"
        self.bar.set_postfix_str(
            f"updates={updates} return={ret} fps={frames_per_s:.0f} ups={updates_per_s:.1f}"
        )

    def close(self) -> None:
        self.bar.close()


def plot_learning_curve(points: list[tuple[int, float, float]], path: Path) -> None:
    """PNG of eval mean return (with std band) against env frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [p[0] for p in points]
    means = [p[1] for p in points]
    stds = [p[2] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(frames, means, marker="o")
    ax.fill_between(
        frames,
        [m - s for m, s in zip(means, stds, strict=True)],
        [m + s for m, s in zip(means, stds, strict=True)],
        alpha=0.2,
    )
    ax.axhline(900, color="grey", linestyle="--", linewidth=1, label="solved (900)")
    ax.set_xlabel("env frames")
    ax.set_ylabel("eval return")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
