"""`sacae bench learning`: train a preset over seeds, evaluate the final policies on 100 fresh tracks,
record a JSON report and one learning-curve plot in benchmarks/learning/.

Each seed trains in its own run directory (resumable: a directory with checkpoints continues).
The report is written as each seed ends; run again under the same name, it keeps the seeds it
holds for the same setup and trains only the others.
The final evaluation is the deterministic policy, tanh(mu), on tracks from the evaluation seed
domain (never driven in training), in CarRacing-v3 with no training aid. Its pixels come from the
fast renderer, which tests/test_env.py checks byte for byte against stock CarRacing-v3.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from actors.carracing import SOLVED_RETURN
from actors.evaluate import WRONG_WAY_TRACK, evaluate_policy
from actors.spec import LAP_DONE, LEFT_PLAYFIELD, TIME_LIMIT
from common.validation import ConfigError
from launch.config import PRESETS, TrainConfig, config_from_dict
from launch.evaluate_cli import Weights, has_average, load_policy
from launch.metrics import curve_points, read_trace
from launch.run_dir import RunDir, load_checkpoint
from launch.runner import budget_left, spent_budget
from replay.snapshot import atomic_write_text

RANDOM_POLICY_RETURN = -55.0
"""Mean return of uniform random actions on CarRacing-v3, as measured in issue 11 (about -55)."""
FINAL_EVAL_SEED = 90_000
"""Root seed of the final evaluation's tracks (the evaluation seed domain, apart from training)."""
FINAL_EVAL_FILE = "final_eval.json"
"""A run directory's final evaluation, beside the checkpoint it evaluated."""
AVERAGE_EVAL_FILE = "final_eval_average.json"
"""The final evaluation of the moving average of the policy's weights, when the run kept one."""


@dataclass(frozen=True)
class LearningArgs:
    """Train a preset over seeds and record a learning report."""

    preset: str = "carracing-cpu"
    """Preset to train (see `sacae train --preset`)."""
    seeds: tuple[int, ...] = (0,)
    """Run seeds; each trains its own run."""
    frames: int = 0
    """Env frames per seed (0 = the preset's run.total_env_frames)."""
    minutes: float = 0.0
    """Wall-clock minutes per seed (0 = the preset's run.max_seconds)."""
    serial: bool = False
    """Train in one process instead of the distributed default."""
    eval_episodes: int = 100
    """Final evaluation episodes per seed, each on a fresh track."""
    runs_dir: Path = Path("runs/learning")
    """Where the seeds' run directories go (an existing one is resumed)."""
    out_dir: Path = Path("benchmarks/learning")
    """Where the report JSON and plot go."""
    tag: str = ""
    """Extra words for the report's file name (e.g. an ablation: 'no-aids')."""
    name: str = ""
    """The report's file name (no suffix) instead of `<date>-<preset>-<tag>-cpu<cores>`; running the
    same name again keeps the seeds its report holds and resumes or trains the others, on any day
    (`sacae bench ablation` names its arms)."""


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__}


def seed_config(args: LearningArgs, overrides: list[str], seed: int, run_dir: Path) -> TrainConfig:
    from launch.cli import parse_train_args

    cfg, _ = parse_train_args(["--preset", args.preset, *overrides])
    run = dataclasses.replace(cfg.run, seed=seed, run_dir=str(run_dir), serial=args.serial)
    if args.frames:
        run = dataclasses.replace(run, total_env_frames=args.frames)
    if args.minutes:
        run = dataclasses.replace(run, max_seconds=args.minutes * 60)
    return dataclasses.replace(cfg, run=run)


def train_seed(cfg: TrainConfig, resume: Path | None) -> float:
    """Train one seed; returns the wall time in seconds."""
    start = time.monotonic()
    if cfg.run.serial:
        from launch.serial import train_serial

        train_serial(cfg, resume=resume)
    else:
        from launch.train import train

        train(cfg, resume=resume)
    return time.monotonic() - start


def final_eval(checkpoint: dict, episodes: int, run_dir: Path, weights: Weights = "final") -> dict:
    """The deterministic policy of a run's checkpoint on `episodes` fresh stock tracks, kept in the
    run directory (`final_eval.json`): a report lost or rewritten gets the same figure back without
    driving the tracks again (8 minutes on 2 cores), and one checkpoint has one figure.
    `weights="average"` drives the moving average of its weights on the same tracks instead."""
    kept = run_dir / (AVERAGE_EVAL_FILE if weights == "average" else FINAL_EVAL_FILE)
    try:
        saved = json.loads(kept.read_text())
        if (
            Path(saved["checkpoint"]).name == Path(checkpoint["path"]).name
            and saved["counters"] == checkpoint["counters"]  # not a later run's equal name
            and saved["episodes"] == episodes
        ):
            print(f"sacae: final evaluation read from {kept} (delete it to evaluate again)")
            return saved
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as err:  # evaluated again, then replaced
        print(f"sacae: {kept} is unreadable ({err!r}): evaluating again", flush=True)
    policy, cfg = load_policy(checkpoint, weights)
    result = evaluate_policy(policy, cfg.env.for_evaluation(), episodes, seed=FINAL_EVAL_SEED)
    summary = {
        "checkpoint": checkpoint["path"],
        "counters": checkpoint["counters"],
        "episodes": episodes,
        **result.summary(),
    }
    atomic_write_text(kept, json.dumps(summary) + "\n")
    return summary


def mean_ci95(returns: list[float]) -> float | None:
    """Half-width of the normal-approximation 95% confidence interval of the mean return:
    1.96 * sample std / sqrt(n). None below 2 episodes. Whether a mean clears a goal (600 over 100
    tracks) is read against it: the tracks differ a lot, and so do single episodes."""
    if len(returns) < 2:
        return None
    return 1.96 * float(np.std(returns, ddof=1)) / len(returns) ** 0.5


def eval_cell(result: dict) -> str:
    """`mean ± std (n=tracks; mean ±CI at 95%)` for the index."""
    cell = f"{result['mean']:.0f} ± {result['std']:.0f} (n={result['episodes']}"
    ci = mean_ci95(result.get("returns", []))
    return cell + (f"; mean ±{ci:.0f} at 95%)" if ci is not None else ")")


def plot(report: dict, path: Path) -> None:
    """All seeds' curves on one plot, with the random-policy and the solved lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for seed, run in report["seeds"].items():
        if run["curve"]:
            frames, means, _ = zip(*run["curve"], strict=True)
            ax.plot(frames, means, marker="o", label=f"seed {seed}")
    ax.axhline(SOLVED_RETURN, color="grey", linestyle="--", label=f"solved ({SOLVED_RETURN:.0f})")
    ax.axhline(RANDOM_POLICY_RETURN, color="red", linestyle=":", label="random policy")
    ax.set_xlabel("env frames")
    ax.set_ylabel("eval return")
    ax.set_title(f"{report['preset']} on {report['machine']['cpu']}", fontsize=8)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ends_cell(result: dict) -> str:
    """How the final eval's tracks ended, how much of them was driven, how much the wrong way
    and how fast, e.g. `lap 31, off 4, time 65; tiles 0.88; wrong way 0.04 (6 tracks); speed 52`;
    `-` for reports written before these were kept (and no wrong-way or speed part for those
    written before it was)."""
    counts = result.get("end_reason_counts")
    if counts is None:
        return "-"
    short = {LAP_DONE: "lap", LEFT_PLAYFIELD: "off", TIME_LIMIT: "time"}
    cell = ", ".join(f"{short.get(reason, reason)} {n}" for reason, n in sorted(counts.items()))
    tiles = result.get("tiles_visited_mean")
    cell += f"; tiles {tiles:.2f}" if tiles is not None else ""
    wrong_way = result.get("wrong_way_mean")
    if wrong_way is not None:
        cell += f"; wrong way {wrong_way:.2f} ({result['wrong_way_tracks']} tracks)"
    speed = result.get("speed_mean")
    cell += f"; speed {speed:.0f}" if speed is not None else ""
    return cell


def write_index(out_dir: Path) -> Path:
    """benchmarks/learning/README.md: one table row per recorded report, good or bad."""
    rows = [
        "# Learning reports",
        "",
        "Written by `sacae bench learning`; every run is listed, including those that miss.",
        "Final eval: deterministic policy on fresh tracks of CarRacing-v3 with no training aid.",
        "",
        "| report | preset | machine | seeds | frames/seed | minutes/seed | final eval per seed: mean ± std (n = tracks; 95% confidence interval of the mean) | final eval tracks per end (lap done, left the playfield, time limit), mean fraction of tiles visited, and mean fraction of agent steps driven against the lap direction (tracks with at least "
        f"{WRONG_WAY_TRACK:.0%} of them) | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(out_dir.glob("*.json")):
        r = json.loads(path.read_text())
        seeds = r["seeds"].values()
        evals = ", ".join(
            eval_cell(s["eval"])
            + (f" [average weights: {eval_cell(s['eval_average'])}]" if "eval_average" in s else "")
            for s in seeds
        )
        frames = ", ".join(str(s["eval"]["counters"]["env_frames"]) for s in seeds)
        minutes = ", ".join(f"{trained_s(s) / 60:.0f}" for s in seeds)
        ends = " / ".join(ends_cell(s["eval"]) for s in seeds)
        rows.append(
            f"| [{path.stem}]({path.name}) | {r['preset']} | {r['machine']['cpu']} | "
            f"{len(r['seeds'])} | {frames} | {minutes} | {evals} | {ends} | `{r['command']}` |"
        )
    index = out_dir / "README.md"
    index.write_text("\n".join(rows) + "\n")
    return index


def trained_s(seed_report: dict) -> float:
    """Seconds the seed trained, over all its resumes (the checkpoint's `train_s`); reports written
    before that counter existed have only this invocation's `wall_s`."""
    return seed_report["eval"]["counters"].get("train_s", seed_report["wall_s"])


def seed_run_dir(runs_dir: Path, name: str, seed: int) -> Path:
    """The run directory of one seed of the report `name`: where it trains, resumes and is found
    again to continue to a larger budget."""
    return runs_dir / f"{name}-seed{seed}"


def report_name(base: str, out_dir: Path, runs_dir: Path, seeds: tuple[int, ...]) -> str:
    """`base`, or `base-2`, `base-3`, ... : a name whose report already exists is taken unless this
    invocation resumes that report's runs (every seed's run directory exists), so a second run on
    the same day never overwrites the first one's report."""
    name, n = base, 1
    while (out_dir / f"{name}.json").exists() and not all(
        seed_run_dir(runs_dir, name, seed).is_dir() for seed in seeds
    ):
        n += 1
        name = f"{base}-{n}"
    return name


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """`[bench options] -- [train overrides]` -> (bench options, train overrides)."""
    split = argv.index("--") if "--" in argv else len(argv)
    return argv[:split], argv[split + 1 :]


def main(argv: list[str] | None = None) -> dict:
    """`sacae bench learning [options] [-- train overrides]`, e.g. `-- --env.skip-zoom`."""
    argv = list(argv or [])
    own, overrides = split_overrides(argv)
    args = tyro.cli(LearningArgs, args=own)
    if args.preset not in PRESETS:
        raise SystemExit(f"error: --preset {args.preset!r} is unknown: allowed {sorted(PRESETS)}")
    date = time.strftime("%Y-%m-%d")
    base = "-".join(filter(None, [date, args.preset, args.tag, f"cpu{os.cpu_count()}"]))
    if args.name and Path(args.name).name != args.name:
        raise SystemExit(f"error: --name {args.name!r} is not a plain file name: drop the folders")
    name = args.name or report_name(base, args.out_dir, args.runs_dir, args.seeds)
    path = args.out_dir / f"{name}.json"
    command = "sacae bench learning " + " ".join(argv)
    report = read_report(path) or {
        "preset": args.preset,
        "machine": machine(),
        "command": command,
        "mode": "serial" if args.serial else "distributed",
        "seeds": {},
    }
    keep = done_seeds(report, path, args, seed_config(args, overrides, 0, args.runs_dir), name)
    for seed in args.seeds:
        if seed in keep:
            print(f"sacae: seed {seed} is done in {path}: kept, not trained again", flush=True)
            continue
        run_dir = seed_run_dir(args.runs_dir, name, seed)
        cfg, entry = train_and_evaluate(args, overrides, seed, run_dir, path, command)
        report["config"] = json.loads(cfg.to_json())
        report["command"] = command
        report["seeds"][str(seed)] = entry
        print(json.dumps({"seed": seed, **entry["eval"]}), flush=True)
        # Written after every seed: a 2-hour seed's result survives a stop before the next seed
        # ends, and the same command (or --name) on another day trains only the missing seeds.
        write_report(report, path)
    print(f"sacae: report {path}", flush=True)
    return report


def train_and_evaluate(
    args: LearningArgs, overrides: list[str], seed: int, run_dir: Path, path: Path, command: str
) -> tuple[TrainConfig, dict]:
    """Train one seed to its budget (resuming its run directory when it has a checkpoint), then
    evaluate its final policy: the seed's config and its entry for the report at `path`."""
    resume = run_dir if RunDir(run_dir).latest_checkpoint() else None
    cfg = seed_config(args, overrides, seed, run_dir)
    spent = resume and spent_budget(cfg.run, load_checkpoint(resume)["counters"])
    if spent:  # trained to the end before, its report lost: evaluate it, train no further
        print(f"sacae: seed {seed} in {run_dir}: {spent}, evaluated as it is", flush=True)
    wall_s = 0.0 if spent else train_seed(cfg, resume)
    checkpoint = load_checkpoint(run_dir)
    done = checkpoint["counters"]
    # A distributed run that Ctrl-C or SIGTERM ended returns normally, short of its budget.
    if budget_left(cfg.run, done["env_frames"], done.get("train_s", 0.0)):
        raise SystemExit(
            f"sacae: seed {seed} stopped at {done['env_frames']:,} env frames and "
            f"{done.get('train_s', 0) / 60:.0f} minutes, short of its budget: it is neither "
            f"evaluated nor recorded in {path}; the same command resumes it from {run_dir}"
        )
    trace = read_trace(run_dir)
    return cfg, {
        "run_dir": str(run_dir),
        "command": command,  # the report's own "command" is the last invocation's
        "machine": machine(),  # seeds of one report may be trained on different days
        # Which numerics the updates ran in: precision=auto picks bf16 only on a machine with it
        # native, so one preset's seeds may differ here by machine.
        "numerics": checkpoint["learner"].get("numerics_updates", {}),
        "wall_s": wall_s,  # this invocation, from start-up to the end of training
        "eval": final_eval(checkpoint, args.eval_episodes, run_dir),
        # The moving average of the policy's weights (--learner.policy-ema-decay) on the same
        # tracks; `eval` stays the final weights', so that reports compare with and without it.
        **(
            {"eval_average": final_eval(checkpoint, args.eval_episodes, run_dir, "average")}
            if has_average(checkpoint)
            else {}
        ),
        "curve": [list(point) for point in curve_points(trace)],
        # Alpha, entropy, Q bias and the learner's rate at each evaluation and at the end: what
        # the run did on the way, kept after its run directory is gone.
        "trace": trace,
    }


def read_report(path: Path) -> dict | None:
    """The report at `path` with the seeds done so far, or None when there is none yet."""
    if not path.exists():
        return None
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        report = err
    if not isinstance(report, dict) or not isinstance(report.get("seeds"), dict):
        raise SystemExit(
            f"error: {path} is not a learning report ({report!r:.80}); it is left as it is: move "
            "it away or give another --name"
        )
    return report


BUDGET = ("total_env_frames", "max_seconds")
"""The `run` fields of a seed's budget: a report's seeds can be continued to a larger one."""


BOOKKEEPING = (
    "run.seed",
    "run.run_dir",
    "run.address",
    "run.checkpoint_every_updates",
    "run.snapshot_replay",
    "run.log_every_s",
    "run.progress_bar",
    "run.eval_video",
    "run.max_actor_restarts",
    "run.remote_timeout_s",
    "replay.snapshot_dir",
    "replay.snapshot_every_s",
)
"""Config fields that change where a seed runs, what it writes and shows, or how it survives a
fault, never what it learns: seeds that differ only in these are the same setup. A seed trained
with replay snapshots (`--run.snapshot-replay`, so that a stop costs no replay on resume) joins a
report of seeds trained without them."""


def differing(ours: dict, theirs: dict, skip: tuple[str, ...]) -> list[str]:
    """`section.field` of every config value that differs, but `BOOKKEEPING` and the `run` fields
    in `skip`."""
    skip = (*BOOKKEEPING, *(f"run.{field}" for field in skip))
    return [
        f"{section}.{key}"
        for section in sorted(set(ours) | set(theirs))
        for key in sorted(set(ours.get(section, {})) | set(theirs.get(section, {})))
        if f"{section}.{key}" not in skip
        and ours.get(section, {}).get(key) != theirs.get(section, {}).get(key)
    ]


def as_flags(config: dict, fields: list[str], ours: dict) -> str:
    """The train flags that set `fields` to their values in `config` (a report's), for the fields
    this code still has (`ours`): what a command adds to train the report's setup again after a
    preset's default has changed (the report's own command gives the preset of its day)."""
    flags = []
    for field in fields:
        section, key = field.split(".", 1)
        if key not in ours.get(section, {}) or key not in config.get(section, {}):
            continue
        value, name = config[section][key], key.replace("_", "-")
        flag = f"--{section}.{name}"
        if isinstance(value, bool):
            flags.append(flag if value else f"--{section}.no-{name}")
        elif isinstance(value, list):
            flags.append(" ".join([flag, *map(str, value)]))
        else:
            flags.append(f"{flag} {value}")
    return " ".join(flags)


def same_stop(seed_report: dict, theirs: dict, ours: dict) -> bool:
    """Whether a finished seed, trained to the `run` budget `theirs`, is also what `ours` trains:
    the budget that ended it is the same in both and the other one was not reached there. A seed
    that ran out of its 120 minutes at 114k frames is the same run under a 115k-frame cap with the
    same 120 minutes, so an ablation can add a frame cap (the same data on a faster machine)
    without training its finished seeds again."""
    counters = seed_report.get("eval", {}).get("counters", {})
    if "env_frames" not in counters or "train_s" not in counters:
        return False  # a report from before these counters: nothing to tell the stop by
    frames, seconds = counters["env_frames"], counters["train_s"]
    their_frames, their_s = theirs["total_env_frames"], theirs["max_seconds"]
    our_frames, our_s = ours["total_env_frames"], ours["max_seconds"]
    by_time = their_s > 0 and seconds >= their_s and frames < their_frames
    by_frames = frames >= their_frames
    if by_time:
        return our_s == their_s and frames < our_frames
    return by_frames and our_frames == their_frames and (our_s <= 0 or seconds < our_s)


def as_read_now(config: dict) -> dict:
    """A report's config as this code reads it: a field added since the report was written takes
    its default, which is what the code that trained it did (a field is added with the old
    behaviour as its default: every aid starts off). A field this code no longer has is kept as
    it is, for `differing` to name."""
    fields = json.loads(TrainConfig().to_json())
    known = {s: {k: v for k, v in c.items() if k in fields.get(s, {})} for s, c in config.items()}
    try:
        read = json.loads(config_from_dict(known).to_json())
    except ConfigError:  # a value this code refuses: compare as written
        return config
    for section, values in config.items():
        for key, value in values.items():
            if key not in fields.get(section, {}):
                read.setdefault(section, {})[key] = value
    return read


def done_seeds(report: dict, path: Path, args: LearningArgs, cfg: TrainConfig, name: str) -> set:
    """The seeds the report already holds for this very setup: kept, not trained again. A report
    compares like with like, so seeds of another preset, mode or config are refused before
    anything trains; seeds of another budget are kept where that budget would have ended them at
    the same point (`same_stop`), and otherwise continued to this one from their run directories
    (all of them, or the report would mix budgets)."""
    if not report["seeds"]:
        return set()
    mode = "serial" if args.serial else "distributed"
    ours, theirs = json.loads(cfg.to_json()), as_read_now(report["config"])
    setup = differing(ours, theirs, skip=BUDGET)
    if report["preset"] != args.preset or report["mode"] != mode or setup:
        flags = as_flags(theirs, setup, ours) if report["preset"] == args.preset else ""
        raise SystemExit(
            f"error: {path} holds seeds {sorted(report['seeds'])} of {report['preset']} "
            f"({report['mode']}) trained with another setup than this command's {args.preset} "
            f"({mode}); differing: {', '.join(setup) or 'preset or mode'}. Give another --name, "
            + (f"or add the report's values as overrides: {flags} (after `--`), " if flags else "")
            + "or the same options as that report's command: "
            + report["command"]
        )
    done = {int(seed) for seed in report["seeds"]}
    if not differing(ours, theirs, skip=()) or all(
        same_stop(seed, theirs["run"], ours["run"]) for seed in report["seeds"].values()
    ):
        return done
    lost = [
        s for s in done if s not in args.seeds or not seed_run_dir(args.runs_dir, name, s).is_dir()
    ]
    if lost:
        raise SystemExit(
            f"error: {path} holds seeds {sorted(done)} trained to another budget (run."
            f"{' / run.'.join(BUDGET)}), and seeds {sorted(lost)} cannot be continued to this one "
            f"(not in --seeds, or no run directory in {args.runs_dir}). Give another --name, or "
            f"that report's budget: {report['command']}"
        )
    return set()


def write_report(report: dict, path: Path) -> None:
    """The report JSON (replaced whole, never half written), its plot and the index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=1) + "\n")
    plot(report, path.with_suffix(".png"))
    write_index(path.parent)
