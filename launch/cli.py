"""The `sacae` command: train, eval, bench and export.

sacae train [--preset carracing|carracing-cpu|sac-ae|smoke] [--resume RUN_DIR] [--learner.batch-size 64 ...]
sacae eval --checkpoint PATH [--episodes 100] [--video PATH]
sacae bench {learner,env,replay,scaling,feed,faults,learning,ablation} [...]
sacae export --run-dir RUN out.parquet
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import tyro

from launch.config import PRESETS, TrainConfig, load_config
from learner.config import ConfigError

USAGE = "usage: sacae {train,eval,bench,export} [--help]"


def parse_train_args(argv: list[str]) -> tuple[TrainConfig, Path | None]:
    """A preset (or a resumed run's saved config) as the defaults, then tyro's field overrides."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="carracing")
    pre.add_argument("--resume", type=Path, default=None)
    known, rest = pre.parse_known_args(argv)
    if known.resume is not None:
        config_path = known.resume / "config.json"
        if not config_path.is_file():
            raise SystemExit(
                f"error: --resume {known.resume}: no config.json there; pass the run directory that a "
                "previous `sacae train` created (it holds config.json and checkpoints/)"
            )
        default = load_config(config_path)
    else:
        default = PRESETS[known.preset]()
    description = (
        "Train SAC-AE on CarRacing-v3. --preset {carracing,smoke} picks the defaults (carracing); "
        "--resume RUN_DIR continues a run with its saved config."
    )
    cfg = tyro.cli(TrainConfig, default=default, args=rest, description=description)
    return cfg, known.resume


def cmd_train(argv: list[str]) -> int:
    cfg, resume = parse_train_args(argv)
    from launch.run_dir import load_checkpoint
    from launch.runner import end_summary, spent_budget

    spent = spent_budget(cfg.run, load_checkpoint(resume)["counters"]) if resume else None
    if spent:
        print(
            f"sacae: {resume}: nothing to train, {spent}; raise --run.total-env-frames or "
            "--run.max-seconds to train it further",
            flush=True,
        )
        return 0
    if cfg.run.serial:
        from launch.serial import train_serial

        counters = train_serial(cfg, resume=resume)
    else:
        from launch.train import train

        counters = train(cfg, resume=resume)
    print(end_summary(cfg, counters.env_frames, counters.env_steps, counters.updates), flush=True)
    return 0


def cmd_eval(argv: list[str]) -> int:
    from launch.evaluate_cli import main as eval_main

    eval_main(argv)
    return 0


def cmd_bench(argv: list[str]) -> int:
    benches = {
        "learner": "learner.bench",
        "env": "actors.bench",
        "replay": "replay.bench",
        "scaling": "launch.bench_scaling",
        "learning": "launch.bench_learning",
        "ablation": "launch.bench_ablation",
        "faults": "launch.bench_faults",
        "feed": "launch.bench_feed",
    }
    if not argv or argv[0] not in benches:
        print(f"usage: sacae bench {{{','.join(benches)}}} [--help]", file=sys.stderr)
        return 2
    import importlib

    bench = importlib.import_module(benches[argv[0]])
    if argv[0] == "replay":
        # Lower packages take a started Ray (they do not import launch): hand it ours.
        from launch.ray_setup import LOCAL, init_ray

        bench.main(argv[1:], start_ray=lambda num_cpus: init_ray(LOCAL, num_cpus=num_cpus))
    elif argv[0] == "learner":
        # The learner's bench measures any preset's learner; the presets live here in launch.
        from launch.config import learner_presets

        bench.main(argv[1:], presets=learner_presets())
    else:
        bench.main(argv[1:])
    return 0


def cmd_export(argv: list[str]) -> int:
    from launch.export import ExportError, export_run
    from replay.snapshot import SnapshotError

    parser = argparse.ArgumentParser(
        prog="sacae export",
        description="Write a run's replay snapshots (each shard's newest) to one Parquet file.",
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="the run directory")
    parser.add_argument("out", type=Path, help="the Parquet file to write, e.g. replay.parquet")
    args = parser.parse_args(argv)
    try:
        rows = export_run(args.run_dir, args.out)
    except (ExportError, SnapshotError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    per_shard = ", ".join(f"shard {i}: {n}" for i, n in rows.items())
    print(f"wrote {sum(rows.values())} rows ({per_shard}) to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": cmd_train, "eval": cmd_eval, "bench": cmd_bench, "export": cmd_export}
    if not argv or argv[0] not in commands:
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return commands[argv[0]](argv[1:])
    except Exception as err:  # noqa: BLE001 - every failure ends in one line, see below
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        print(error_line(err), file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1


DEBUG_ENV = "SACAE_DEBUG"
"""Set to 1 to get the Python traceback of a failure instead of its one-line summary."""


def error_line(err: BaseException) -> str:
    """One line for the user: what went wrong and the fix (our errors name both), no traceback.

    Our own error types carry a message written for the user; anything else is unexpected, and
    the line says how to see the traceback.
    """
    from launch.ray_setup import ClusterAddressError
    from launch.run_dir import CheckpointError
    from launch.train import LearnerDiedError
    from replay.snapshot import SnapshotError

    if isinstance(
        err, (ConfigError, ClusterAddressError, CheckpointError, LearnerDiedError, SnapshotError)
    ):
        return "error: " + " ".join(str(err).split())
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0][:300] if lines else type(err).__name__
    return (
        f"error: {type(err).__name__}: {text} (unexpected; run again with {DEBUG_ENV}=1 for the "
        "traceback, and report it)"
    )


if __name__ == "__main__":
    sys.exit(main())
