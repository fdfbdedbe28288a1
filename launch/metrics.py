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


TRACE_KEYS = ("learner/updates", "learner/alpha", "learner/entropy", "learner/updates_per_s")
"""The learner scalars a run's trace keeps beside each evaluation: where alpha and the entropy
went (docs/metrics.md), and how fast the learner ran to get there."""


def read_trace(run_dir: Path, keys: tuple[str, ...] = TRACE_KEYS) -> list[dict[str, float]]:
    """A run's course, from its metrics.jsonl: one row per periodic evaluation (its env frames,
    every `eval/` scalar and the latest value of each of `keys`), then one last row of `keys` as
    they stood when the run's log ends. A learning report keeps it, so the run's diagnostics
    outlive its run directory.

    A run resumed from a checkpoint writes a `counters/incarnation` row at the checkpoint's frames
    (`launch.runner.Runner`); evaluations an earlier incarnation logged past those frames were lost
    with it (the resumed run evaluates there again), so they are left out, and so are the values
    of `keys` it logged there: a row after the resume carries what stood at the checkpoint."""
    path = Path(run_dir) / "metrics.jsonl"
    rows: list[dict[str, float]] = []
    seen: dict[str, list[tuple[float, float]]] = {key: [] for key in keys}  # (env frames, value)
    for line in path.read_text().splitlines() if path.exists() else []:
        row = json.loads(line)
        if "counters/incarnation" in row:  # one rule for both: keep what was logged up to it
            rows = [kept for kept in rows if kept["env_frames"] <= row["env_frames"]]
            for values in seen.values():
                values[:] = [kept for kept in values if kept[0] <= row["env_frames"]]
        for key in keys:
            if key in row:
                seen[key].append((row["env_frames"], row[key]))
        if "eval/return_mean" in row:
            scalars = {key: value for key, value in row.items() if key.startswith("eval/")}
            rows.append({"env_frames": row["env_frames"], **scalars, **_latest(seen)})
    if any(seen.values()):
        rows.append({"env_frames": row["env_frames"], **_latest(seen)})
    return rows


def _latest(seen: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    return {key: values[-1][1] for key, values in seen.items() if values}


def curve_points(trace: list[dict[str, float]]) -> list[tuple[int, float, float]]:
    """(env frames, eval mean, eval std) of the evaluations in a `read_trace` trace."""
    return [
        (int(row["env_frames"]), row["eval/return_mean"], row["eval/return_std"])
        for row in trace
        if "eval/return_mean" in row
    ]


def read_curve(run_dir: Path) -> list[tuple[int, float, float]]:
    """(env frames, eval mean, eval std) of a run's periodic evaluations (`read_trace`)."""
    return curve_points(read_trace(run_dir, keys=()))


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
