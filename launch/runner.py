"""The run core both modes share: counters, resume, schedules, evaluation records and metric rows.

`launch/serial.py` (one process) and `launch/train.py` (Ray) differ only in how they step and
where processes live; everything a run records goes through one `Runner`, so both modes write the
same files and the same metric keys (tests/test_train_modes.py checks it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import imageio.v3 as iio
import numpy as np

from actors.collector import CollectStats
from actors.evaluate import EvalResult
from actors.metrics import diagnostic_metrics
from actors.spec import EnvSpec
from launch.config import RunConfig, TrainConfig
from launch.metrics import MetricsLogger, ProgressBar, plot_learning_curve, read_curve
from launch.run_dir import RunDir
from replay.sampler import shard_metrics


@dataclass
class Counters:
    env_frames: int = 0
    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    incarnation: int = 0
    train_s: float = 0.0
    """Seconds trained over all incarnations: the clock `run.max_seconds` stops, so a resumed run
    gets what is left of its time budget, not a new one."""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def budget_left(run: RunConfig, env_frames: int, trained_s: float) -> bool:
    """A run's stop condition: frames left in the budget, and time left when `run.max_seconds`
    is set. `sacae bench learning` reads a finished run's counters with it too."""
    over_time = run.max_seconds and trained_s > run.max_seconds
    return env_frames < run.total_env_frames and not over_time


def spent_budget(run: RunConfig, counters: dict) -> str | None:
    """Why a checkpoint's run has nothing left to train under `run`'s budget, or None when it has.
    Resuming a finished run stops before anything starts: a distributed start would run one
    learner call of updates past the budget, and the final policy would no longer be the one
    that was evaluated."""
    frames, trained_s = counters["env_frames"], counters.get("train_s", 0.0)
    if budget_left(run, frames, trained_s):
        return None
    minutes = f" of {run.max_seconds / 60:g}" if run.max_seconds else ""
    return (
        f"its budget is spent ({frames:,} of {run.total_env_frames:,} env frames, "
        f"{trained_s / 60:.0f}{minutes} minutes trained)"
    )


class Every:
    """Fires when a counter crosses the next multiple of `period` above `start` (DrQ-v2's `Every`,
    on thresholds): episodes of varying length never make an evaluation skip or repeat. The marks
    are multiples of `period` whatever `start` is, so a run resumed at 79k frames with evaluations
    every 20k evaluates at 80k, as the run that never stopped did (`start + period` would move
    every later mark to 99k, 119k, ... and drop the 80k and 100k points). A period of 0 never
    fires."""

    def __init__(self, period: float, start: float = 0.0):
        self.period = period
        self.next = (start // period + 1) * period if period else math.inf

    def __call__(self, value: float) -> bool:
        if not self.period or value < self.next:
            return False
        self.next += self.period * (1 + (value - self.next) // self.period)
        return True

    def postpone(self) -> None:
        """The event could not run now (e.g. no weights to evaluate yet): fire again next time."""
        self.next -= self.period


@dataclass
class Window:
    """What the actors did since the last metrics row."""

    start: float = field(default_factory=time.monotonic)
    returns: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    collected: CollectStats = field(default_factory=CollectStats)
    """Everything the collectors reported, for the diagnostics (tiles, end reasons, actions)."""


class Runner:
    """Counters, resume, schedules, evaluation records and metric rows of one run."""

    def __init__(
        self,
        cfg: TrainConfig,
        run: RunDir,
        checkpoint: dict | None,
        spec: EnvSpec,
    ):
        self.cfg, self.run, self.spec = cfg, run, spec
        self.counters = Counters()
        self.learner_state = None
        if checkpoint is not None:
            self.learner_state = checkpoint["learner"]
            saved = checkpoint["counters"]
            self.counters = Counters(
                **{k: v for k, v in saved.items() if k in Counters.__dataclass_fields__}
            )
            self.counters.incarnation += 1  # a resumed run drives new tracks and new streams
        # The replay of a resumed run may be empty, but its policy is trained: no random steps.
        self.seed_steps = 0 if checkpoint is not None else cfg.actor.seed_steps
        c = self.counters
        self.eval_due = Every(cfg.run.eval_every_frames, c.env_frames)
        self.checkpoint_due = Every(cfg.run.checkpoint_every_updates, c.updates)
        self.log_due = Every(cfg.run.log_every_s, time.monotonic())
        # The training clock's zero, set back by what earlier incarnations trained.
        self.clock_zero = time.monotonic() - self.counters.train_s
        self.window = Window()
        self.last_learner_row: dict[str, float] = {}
        self.last_return: float | None = None
        self.actor_restarts = 0
        self.logger = MetricsLogger(run.path)
        self.curve: list[tuple[int, float, float]] = []
        if checkpoint is not None:
            # The resume row marks what an earlier incarnation logged past its checkpoint as lost.
            # The run keeps its earlier curve points (for the plot, and so that its evaluations go
            # on to new eval tracks), but not those past the checkpoint: it evaluates there again.
            self.logger.write(c.env_frames, {"counters/incarnation": c.incarnation})
            self.curve = read_curve(run.path)
        self.bar = ProgressBar(cfg.run.total_env_frames, c.env_frames, cfg.run.progress_bar)

    # -- progress ---------------------------------------------------------------------------------

    def trained_s(self) -> float:
        """Seconds trained so far, earlier incarnations included."""
        return time.monotonic() - self.clock_zero

    def running(self) -> bool:
        return budget_left(self.cfg.run, self.counters.env_frames, self.trained_s())

    def on_collect(self, stats: CollectStats) -> None:
        """Count what a collector did."""
        c, w = self.counters, self.window
        c.env_frames += stats.env_frames
        c.env_steps += stats.agent_steps
        c.episodes += stats.episodes
        w.returns.extend(stats.episode_returns)
        w.lengths.extend(stats.episode_lengths)
        w.collected = w.collected.merged(stats)
        if stats.episode_returns:
            self.last_return = stats.episode_returns[-1]

    def on_learner_row(self, row: dict[str, float]) -> None:
        self.last_learner_row = row
        self.counters.updates = int(row["learner/updates"])

    # -- evaluation -------------------------------------------------------------------------------

    def eval_seed(self) -> int:
        """Fresh tracks at every evaluation: eval seeds come from their own seed domain."""
        return self.cfg.run.seed + len(self.curve)

    def record_eval(
        self,
        frames: int,
        result: EvalResult,
        video: tuple[bytes, str] | None = None,
        reconstruction: np.ndarray | None = None,
        value_metrics: dict[str, float] | None = None,
    ) -> None:
        """One curve point: the metric row, the curve plot, the video and the reconstruction;
        `value_metrics`: the critic against the observed returns (`ValueProbes.metrics`)."""
        if video is not None:
            data, suffix = video
            (self.run.eval_dir / f"eval_{frames:010d}{suffix}").write_bytes(data)
        self.curve.append((frames, result.mean_return, result.std_return))
        summary = result.summary()
        track_metrics = {
            key: summary[f"{name}_mean"]
            for name, key in (
                ("tiles_visited", "eval/tiles_visited_fraction"),
                ("wrong_way", "eval/wrong_way_fraction"),
                ("speed", "eval/speed_mean"),
            )
            if summary[f"{name}_mean"] is not None  # an env with a track
        }
        self.logger.write(
            frames,
            {
                "eval/return_mean": result.mean_return,
                "eval/return_std": result.std_return,
                "eval/episode_length_mean": float(np.mean(result.lengths)),
                **track_metrics,
                **(value_metrics or {}),
            },
        )
        plot_learning_curve(self.curve, self.run.eval_dir / "learning_curve.png")
        if reconstruction is not None:
            iio.imwrite(self.run.eval_dir / f"reconstruction_{frames:010d}.png", reconstruction)

    # -- outputs ----------------------------------------------------------------------------------

    def save_checkpoint(self, learner_state: dict) -> None:
        self.counters.updates = int(learner_state["updates"])
        self.counters.train_s = self.trained_s()
        self.run.save_checkpoint(learner_state, self.counters.as_dict(), self.cfg)

    def write_row(self, extra: dict[str, float] | None = None) -> None:
        """One metrics row: the learner's last report, the actors' window, and `extra` (replay)."""
        w, c = self.window, self.counters
        elapsed = max(time.monotonic() - w.start, 1e-9)
        row: dict[str, float] = dict(self.last_learner_row)
        row.update(
            {
                "counters/env_frames": c.env_frames,
                "counters/env_steps": c.env_steps,
                "counters/episodes": c.episodes,
                "counters/train_s": self.trained_s(),
                "actors/env_frames_per_s": w.collected.env_frames / elapsed,
                "actors/restarts": self.actor_restarts,
            }
        )
        if w.collected.wall_s > 0:
            # Over the reports' own collect time, not the window's: a report can cover a collect
            # round that began before the window (an actor held by the rate limiter for longer
            # than a window), so waits over the window's length read above 1.
            row["actors/send_wait_fraction"] = w.collected.send_wait_s / w.collected.wall_s
        if w.returns:
            row["actors/episode_return"] = float(np.mean(w.returns))
            row["actors/episode_length"] = float(np.mean(w.lengths))
        row.update(diagnostic_metrics(w.collected, self.spec))
        row.update(extra or {})
        self.logger.write(c.env_frames, row)
        self.bar.update(
            c.env_frames,
            c.updates,
            self.last_return,
            row["actors/env_frames_per_s"],
            row.get("learner/updates_per_s", 0.0),
        )
        self.window = Window()

    def close(self) -> None:
        self.logger.close()
        self.bar.close()


def replay_metrics(shard_stats: list[dict], action_repeat: int) -> dict[str, float]:
    """The replay's part of a metrics row, from the shards' `stats()` (one shard in serial mode)."""
    row = shard_metrics(shard_stats)
    inserts = sum(s["inserts_per_s"] for s in shard_stats)
    samples = sum(s["samples_per_s"] for s in shard_stats)
    if inserts > 0:  # a window can fall between two chunks of one actor: no ratio then, not 0
        row["replay/samples_per_insert"] = samples / inserts
    row["learner/env_frames_consumed_per_s"] = samples * action_repeat
    return row


def end_summary(cfg: TrainConfig, env_frames: int, env_steps: int, updates: int) -> str:
    """The line `sacae train` ends with; it says why when no update ran (a run stopped by its time
    or frame budget before the replay reached `replay.min_size`), which a user would otherwise
    only see as a checkpoint of an untrained learner."""
    line = f"sacae: run ended at {env_frames:,} env frames, {updates:,} learner updates"
    if updates == 0:
        line += (
            f"; no update ran: the learner starts once the replay holds replay.min_size = "
            f"{cfg.replay.min_size:,} transitions and {env_steps:,} were collected; "
            "lower replay.min_size or raise run.max_seconds / run.total_env_frames"
        )
    return line
