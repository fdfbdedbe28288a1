"""`sacae bench scaling --actors 1,2,4`: total env frames/s with the learner running, per actor count.

Each actor count gets a fresh local Ray instance running the real topology (learner, one replay
shard, N rollout actors with the CarRacing preset). The rate limiter is relaxed so the actors are
not held back by the learner: the figure is collection throughput while the learner trains.
Efficiency is frames/s per actor relative to the single-actor rate measured in the same run; the
learner's updates/s are printed beside it (on a small machine the two share the cores).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import ray
import tyro

from launch.config import carracing
from launch.ray_setup import init_ray
from launch.run_dir import RunDir
from launch.train import Driver, plan_topology


@dataclass(frozen=True)
class ScalingArgs:
    """Env frames/s of the whole system as rollout actors are added."""

    actors: str = "1,2,4"
    """Comma-separated actor counts."""
    seconds: float = 40.0
    """Run time per actor count (the first quarter is warm-up and not counted)."""
    envs_per_actor: int = 2
    """Envs per actor."""


def measure(
    num_actors: int, seconds: float, envs_per_actor: int, workdir: str
) -> tuple[float, float]:
    """(env frames/s, learner updates/s), each averaged over the run after its first quarter."""
    base = carracing()
    cfg = dataclasses.replace(
        base,
        actor=dataclasses.replace(base.actor, num_actors=num_actors, envs_per_actor=envs_per_actor),
        # A tolerance far above what a run of this length inserts: the limiter never holds actors back.
        replay=dataclasses.replace(base.replay, capacity=50_000, num_shards=1, rate_tolerance=1e9),
        run=dataclasses.replace(
            base.run,
            run_dir=os.path.join(workdir, f"actors{num_actors}"),
            max_seconds=seconds,
            eval_every_frames=0,
            log_every_s=seconds / 8,
            progress_bar=False,
            checkpoint_every_updates=10**9,
        ),
    )
    topology = plan_topology(cfg, cpus=os.cpu_count() or 1, gpus=0)
    init_ray("local", num_cpus=topology.ray_cpus)
    try:
        run = RunDir.create(cfg)
        Driver(cfg, run, topology, resume=None).train()
    finally:
        ray.shutdown()
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    start = rows[0]["time"] + seconds / 4

    def mean_after_warmup(key: str) -> float:
        rates = [r[key] for r in rows if key in r and r["time"] >= start]
        return float(np.mean(rates)) if rates else 0.0

    # Updates/s beside the frames: on a small machine the learner and the actors share the cores,
    # so a learner taking more CPU shows up as fewer frames; this tells that from a slower actor.
    return mean_after_warmup("actors/env_frames_per_s"), mean_after_warmup("learner/updates_per_s")


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(ScalingArgs, args=argv)
    counts = [int(x) for x in args.actors.split(",") if x.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit(
            f"error: --actors {args.actors!r} must list positive actor counts, e.g. 1,2,4"
        )
    with tempfile.TemporaryDirectory() as workdir:
        measured = {n: measure(n, args.seconds, args.envs_per_actor, workdir) for n in counts}
    fps = {n: frames for n, (frames, _) in measured.items()}
    single = fps[min(counts)] / min(counts)
    result = {
        "cpus": os.cpu_count(),
        "actors": counts,
        "env_frames_per_s": {str(n): round(v, 1) for n, v in fps.items()},
        "learner_updates_per_s": {str(n): round(u, 2) for n, (_, u) in measured.items()},
        "scaling_efficiency": {
            str(n): round(v / (n * single), 3) if single > 0 else 0.0 for n, v in fps.items()
        },
    }
    print(json.dumps(result), flush=True)
    return result
