"""Where a learning report's final evaluation lost its return: each seed's final policy driven again
over the report's own tracks, with the wrong-way diagnostic that reports written before it lack.

    python benchmarks/wrong_way_census.py benchmarks/learning/<report>.json --seeds 0 1 --root .

`--root` is the folder the report's run directories are relative to (where `sacae bench learning`
ran). The final evaluation is deterministic (tanh of the mean, on FINAL_EVAL_SEED's tracks, in one
process), so a seed whose run directory still holds the evaluated checkpoint drives the same tracks
again. The census checks that first: a seed whose returns differ from the report's, track by track,
is reported as not reproduced and gets no figures. Run it with the torch threads the evaluation had
(the default, on the machine that trained): the float sums change with the thread count, and so do
the greedy actions (with OMP_NUM_THREADS=1, none of 3 tracks of the 2-thread 2026-12-06 seed 4
reproduced).

Prints one JSON line per seed: the return and wrong-way figures of the 100 tracks, the mean return
of the wrong-way tracks (at least WRONG_WAY_TRACK of their steps driven against the lap) and of the
others, `lost_to_wrong_way` (what the mean would gain if the wrong-way tracks scored the others'
mean), and the others' mean tiles visited, time-limit share and speed of the car (what is left:
driving too slowly; a lap inside the time limit needs more than 52 units/s, docs/metrics.md).
Of the others that ran into the time limit it also gives the share of the track's tiles skipped
behind the car (before the farthest tile it touched) and never reached (beyond it). Stock v3 ends
a lap only when every tile is visited (its 95% rule needs tile 0 to be new, and the car touches
tile 0 on its first step), so one skipped tile is enough to drive on to the time limit: tiles
skipped with none left unreached mean the car went round and the clock was not the limit.

With `--wrong-way-steps K` it drives the same tracks once more with the training aid of that name
on (and no other) and says which tracks it would have ended: how many of the wrong-way tracks, and
how many others (a car that turned round for K steps and turned back). A check of K before a run
that trains with it; the deterministic policy drives the same until the stop.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from actors.config import EnvConfig
from actors.env import make_env
from actors.evaluate import WRONG_WAY_TRACK, evaluate_policy
from actors.spec import TIME_LIMIT, WRONG_WAY, EnvPipeline
from launch.bench_learning import FINAL_EVAL_SEED
from launch.config import TrainConfig
from launch.evaluate_cli import load_policy
from launch.run_dir import load_checkpoint
from learner.networks import Policy


def census(recorded: dict, root: Path, tracks: int | None = None, wrong_way_steps: int = 0) -> dict:
    """One seed's final evaluation driven again (its first `tracks` tracks, all by default),
    checked against `recorded` (the seed's report entry); with `wrong_way_steps`, which of those
    tracks that stop would end."""
    checkpoint = load_checkpoint(root / recorded["checkpoint"])
    policy, cfg = load_policy(checkpoint)
    episodes = tracks or len(recorded["returns"])
    tracks: list[np.ndarray] = []  # each episode's visited tiles, noted by _Noting

    def noting(env_cfg: EnvConfig) -> _Noting:
        return _Noting(make_env(env_cfg), tracks)

    summary = evaluate_policy(
        policy, cfg.env.for_evaluation(), episodes, seed=FINAL_EVAL_SEED, env_factory=noting
    ).summary()
    expected = recorded["returns"][:episodes]
    if summary["returns"] != expected:
        differ = sum(a != b for a, b in zip(summary["returns"], expected, strict=True))
        return {"reproduced": False, "tracks_differing": differ}
    returns = np.asarray(summary["returns"])
    wrong = np.asarray(summary["wrong_way"]) >= WRONG_WAY_TRACK
    clean = returns[~wrong]
    clean_mean = float(clean.mean()) if clean.size else float("nan")
    lost = float(np.sum(clean_mean - returns[wrong]) / episodes) if wrong.any() else 0.0
    clean_ends = [end for end, w in zip(summary["end_reasons"], wrong, strict=True) if not w]
    return {
        "reproduced": True,
        "tracks": episodes,
        "mean": summary["mean"],
        "wrong_way_mean": summary["wrong_way_mean"],
        "wrong_way_tracks": int(wrong.sum()),
        "wrong_way_tracks_return_mean": float(returns[wrong].mean()) if wrong.any() else None,
        "other_tracks_return_mean": clean_mean,
        "lost_to_wrong_way": lost,
        "other_tracks_tiles_mean": float(np.mean(np.asarray(summary["tiles_visited"])[~wrong])),
        "other_tracks_time_limit_fraction": clean_ends.count("time_limit")
        / max(len(clean_ends), 1),
        "speed_mean": summary["speed_mean"],
        "other_tracks_speed_mean": float(np.mean(np.asarray(summary["speed"])[~wrong])),
        **_unvisited(tracks, summary["end_reasons"], wrong),
        **(_stops(policy, cfg, episodes, wrong, wrong_way_steps) if wrong_way_steps else {}),
    }


class _Noting:
    """A pipeline that appends its episode's visited tiles (in lap order) to `tracks` before the
    next reset or the close wipes them; it is otherwise untouched."""

    def __init__(self, pipeline: EnvPipeline, tracks: list[np.ndarray]) -> None:
        self._pipeline, self._tracks = pipeline, tracks

    def __getattr__(self, name: str):
        return getattr(self._pipeline, name)

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._note()
        return self._pipeline.reset(seed=seed)

    def close(self) -> None:
        self._note()
        self._pipeline.close()

    def _note(self) -> None:
        visited = self._pipeline.visited_tiles()
        if visited.size:  # none before the first reset
            self._tracks.append(visited)


def _unvisited(tracks: list[np.ndarray], ends: list[str], wrong: np.ndarray) -> dict:
    """On the tracks that kept to the lap and ended at the time limit: the share of the track's
    tiles skipped behind the car (before the farthest tile it touched) and never reached (beyond
    it). Skipped tiles are cut corners or a missed stretch; tiles not reached are the clock."""
    skipped, not_reached = [], []
    for visited, end, w in zip(tracks, ends, wrong, strict=True):
        if w or end != TIME_LIMIT:
            continue
        farthest = int(np.flatnonzero(visited).max())
        skipped.append(float(np.sum(~visited[: farthest + 1]) / visited.size))
        not_reached.append(float((visited.size - 1 - farthest) / visited.size))
    if not skipped:
        return {}
    return {
        "time_limit_tracks": len(skipped),
        "time_limit_tiles_skipped_mean": float(np.mean(skipped)),
        "time_limit_tiles_not_reached_mean": float(np.mean(not_reached)),
    }


def _stops(
    policy: Policy, cfg: TrainConfig, episodes: int, wrong: np.ndarray, wrong_way_steps: int
) -> dict:
    """The same tracks with `env.wrong_way_steps` on: which of them it ends, split by `wrong`."""
    evaluation = cfg.env.for_evaluation()

    def with_the_stop(env_cfg: EnvConfig) -> EnvPipeline:
        return make_env(dataclasses.replace(env_cfg, wrong_way_steps=wrong_way_steps))

    ends = evaluate_policy(
        policy, evaluation, episodes, seed=FINAL_EVAL_SEED, env_factory=with_the_stop
    ).end_reasons
    stopped = np.array([end == WRONG_WAY for end in ends])
    return {
        "wrong_way_steps": wrong_way_steps,
        "stopped_wrong_way_tracks": int((stopped & wrong).sum()),
        "stopped_other_tracks": int((stopped & ~wrong).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--seeds", nargs="+", help="the report's seeds to drive (default: all)")
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--tracks", type=int, help="drive only the first N tracks (a quick check)")
    parser.add_argument(
        "--wrong-way-steps",
        type=int,
        default=0,
        help="also count the tracks that env.wrong_way_steps=K would end (0 = skip)",
    )
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    for seed in args.seeds or sorted(report["seeds"]):
        recorded = report["seeds"][seed]["eval"]
        line = {
            "report": args.report.name,
            "seed": seed,
            **census(recorded, args.root, args.tracks, args.wrong_way_steps),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
