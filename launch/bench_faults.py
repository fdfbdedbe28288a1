"""`sacae bench faults`: env frames/s before and after real crashes (SIGKILL), on a busy machine.

Runs the smoke preset on local Ray with a CPU-bound process beside it, then kills, in turn, the OS
process of a rollout actor and of a replay shard. For each kill it prints the env frames/s over
`--window-s` seconds before the kill and over the same time after the run recovered (the
replacement actor answered a call, or the shard answered `ping` again), and their ratio. The goal
(issue 8) is a ratio of at least 0.7. Tests assert the events (tests/test_faults_ray.py); this
measures the rate, which no test may assert.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import ray
import tyro

from launch.config import smoke
from launch.ray_setup import init_ray
from launch.run_dir import RunDir
from launch.train import Driver, plan_topology


@dataclass(frozen=True)
class FaultArgs:
    """Throughput before and after SIGKILLed processes."""

    window_s: float = 30.0
    """Seconds of env frames/s measured before each kill and after each recovery."""
    warmup_s: float = 60.0
    """Seconds the run goes before the first window: the replay's rate limiter lets the actors run
    ahead of the learner by its tolerance at the start, which would inflate the first window."""
    load: int = 1
    """CPU-bound processes running beside the run."""
    run_dir: str = "runs/bench-faults"


def _pid(handle) -> int:
    return int(ray._private.state.actors(handle._actor_id.hex())["Pid"])


def _answers(handle) -> bool:
    try:
        ray.get(handle.ping.remote(), timeout=5)
        return True
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False  # restarting


class Meter:
    """(time, env frames, updates) samples of the driver's counters, once per 0.5 s."""

    def __init__(self, driver: Driver):
        self.driver, self.samples, self.stop = driver, [], threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            counters = self.driver.counters
            self.samples.append((time.monotonic(), counters.env_frames, counters.updates))

    def rate(self, start: float, end: float, column: int = 1) -> float:
        """Least-squares slope of a counter over [start, end]. The counters move in steps (an
        actor reports every 50 agent steps or 5 s), so the slope between the two end samples
        would be off by up to a step at each end: over 30 s that is up to 20% of the rate."""
        inside = [(s[0], s[column]) for s in self.samples if start <= s[0] <= end]
        n = len(inside)
        mean_t = sum(t for t, _ in inside) / n
        mean_v = sum(v for _, v in inside) / n
        var_t = sum((t - mean_t) ** 2 for t, _ in inside)
        return sum((t - mean_t) * (v - mean_v) for t, v in inside) / max(var_t, 1e-9)


def scenario(driver: Driver, meter: Meter, args: FaultArgs, out: dict) -> None:
    window_s = args.window_s

    def wait(condition) -> None:
        while not condition():
            time.sleep(0.2)

    wait(lambda: driver.counters.updates >= 20)
    time.sleep(max(args.warmup_s - window_s, 0.0))
    for name in ("actor", "shard"):
        time.sleep(window_s)
        kill_t = time.monotonic()
        before = meter.rate(kill_t - window_s, kill_t)
        updates_before = meter.rate(kill_t - window_s, kill_t, column=2)
        if name == "actor":
            restarts = driver.actor_restarts
            os.kill(_pid(driver.actors[0]), signal.SIGKILL)
            wait(lambda r=restarts: driver.actor_restarts > r)
            replaced = (0, driver.actor_incarnations[0])
            wait(lambda key=replaced: driver.reported_steps.get(key, 0) > 0)
        else:
            os.kill(_pid(driver.shards[0]), signal.SIGKILL)
            time.sleep(1.0)
            wait(lambda: _answers(driver.shards[0]))
        recovered_t = time.monotonic()
        time.sleep(window_s)
        after = meter.rate(recovered_t, recovered_t + window_s)
        updates_after = meter.rate(recovered_t, recovered_t + window_s, column=2)
        out[name] = {
            "frames_per_s_before": round(before, 1),
            "frames_per_s_after": round(after, 1),
            "updates_per_s_before": round(updates_before, 2),
            "updates_per_s_after": round(updates_after, 2),
            "ratio": round(after / before, 3) if before else None,
            "recovery_s": round(recovered_t - kill_t, 1),
        }


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(FaultArgs, args=argv)
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    base = smoke()
    cfg = dataclasses.replace(
        base,
        replay=dataclasses.replace(base.replay, snapshot_every_s=2.0),
        run=dataclasses.replace(
            base.run,
            total_env_frames=10**9,
            eval_every_frames=0,
            progress_bar=False,
            run_dir=args.run_dir,
        ),
    )
    try:
        topology = plan_topology(cfg, cpus=4, gpus=0)
        init_ray("local", num_cpus=topology.ray_cpus)
        driver = Driver(cfg, RunDir.create(cfg), topology, None)
        meter = Meter(driver)
        result = {"load_processes": args.load, "window_s": args.window_s, "warmup_s": args.warmup_s}
        worker = threading.Thread(target=driver.train, daemon=True)
        worker.start()
        scenario(driver, meter, args, result)
        meter.stop.set()
        print(json.dumps({"bench": "faults", **result}), flush=True)
        return result
    finally:
        for proc in load:
            proc.kill()
        ray.shutdown()
