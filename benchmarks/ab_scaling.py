"""A/B of collection throughput between two checkouts, on this machine, in alternating runs.

    git worktree add /tmp/wt_base <commit>
    python benchmarks/ab_scaling.py /tmp/wt_base . --rounds 2 --seconds 45

Each run is `launch.bench_scaling.measure` (1 actor, 2 envs, the learner training, the CarRacing
preset) in a fresh process whose imports (and whose Ray workers' imports, via PYTHONPATH) come from
that checkout. `--no-learning` raises `replay.min_size` out of reach so the learner never updates:
the actors' path alone, without a learner sharing the cores. A run is killed after `seconds + 40`
(checkouts before fbe0fba hang at the end of a run that never reached its minimum size) and its
figures are read from its metrics file. Prints one JSON line per run: env frames/s and learner
updates/s, averaged after the first quarter as the scaling bench does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RUN = """
import dataclasses, sys
from launch import bench_scaling
if {no_learning}:
    replace = dataclasses.replace
    def patched(obj, **kw):
        out = replace(obj, **kw)
        return replace(out, min_size=out.capacity - 1) if type(out).__name__ == "ReplayConfig" else out
    bench_scaling.dataclasses = type("D", (), {{"replace": staticmethod(patched)}})
bench_scaling.measure(1, {seconds}, 2, {workdir!r})
"""


def run_once(tree: Path, seconds: float, no_learning: bool) -> dict:
    workdir = tempfile.mkdtemp(prefix="ab_scaling_")
    env = dict(os.environ, PYTHONPATH=str(tree), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    code = RUN.format(no_learning=no_learning, seconds=seconds, workdir=workdir)
    try:
        subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, timeout=seconds + 40,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        pass  # the figures are in the metrics file already
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True, check=False)
    rows = [json.loads(line) for line in (Path(workdir) / "actors1/metrics.jsonl").open()]
    shutil.rmtree(workdir, ignore_errors=True)
    start, end = rows[0]["time"] + seconds / 4, rows[0]["time"] + seconds

    def mean(key: str) -> float:
        values = [r[key] for r in rows if key in r and start <= r["time"] <= end]
        return round(float(np.mean(values)), 3) if values else 0.0

    return {"env_frames_per_s": mean("actors/env_frames_per_s"),
            "learner_updates_per_s": mean("learner/updates_per_s")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs=2, type=Path, help="the two checkouts (A B)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--no-learning", action="store_true")
    args = parser.parse_args()
    for round_ in range(args.rounds):
        for tree in args.trees:
            figures = run_once(tree.resolve(), args.seconds, args.no_learning)
            print(json.dumps({"tree": str(tree), "round": round_,
                              "no_learning": args.no_learning, **figures}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
