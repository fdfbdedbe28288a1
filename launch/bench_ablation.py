"""`sacae bench ablation`: the preset as is (the base arm) and the preset with one change per arm,
each trained over the same seeds and budget by `sacae bench learning`, then one table of every arm
against the base.

Each arm is an ordinary learning report, `<name>-<arm>.json` in `benchmarks/learning/`, so it is
listed in the index with its own command. The comparison goes to
`benchmarks/learning/ablations/<name>.{json,md,png}`. Seeds run in the outer loop (seed 0 of every
arm, then seed 1 of every arm), so a stopped ablation already shows each arm once. Running the same
command again (same `--name`) keeps every seed the arms' reports hold, after checking each report
against its arm's config, and trains only the missing ones (resuming a seed's run directory, with
what is left of its time budget, where there is one). With `--max-seeds 1` each invocation trains
the next missing seed and compares what is done: an ablation of 2-hour runs spans sittings, even
fresh clones with the reports committed in between, by running the same command in each.

How far apart two arms are is judged over seeds, not tracks: the final policy of one seed is one
draw of the training's outcome, and the 100 tracks only pin down that draw's mean. With 2 seeds per
arm the exact permutation test cannot go below p = 1/3 (two-sided), and the table says so. It also
gives the seed-to-seed spread pooled over the arms, and from it how large a difference the seeds in
hand can tell from that spread and how many seeds per arm each observed difference would need:
the figures to plan the next seeds with.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import tyro

from launch import bench_learning

BASE = "base"
DEFAULT_ARMS = (
    "no-early-stop: --env.no-progress-steps 0",
    "no-shift: --learner.augment-shift 0",
    "no-skip-zoom: --env.no-skip-zoom",
)
"""The CarRacing aids of `carracing-cpu` (deviation 14), each turned off in its own arm."""
ARM_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
ALPHA, POWER = 0.05, 0.8
"""Two-sided test level and power of the seed planning figures."""


@dataclass(frozen=True)
class AblationArgs:
    """Train a preset and one variant per arm over the same seeds and budget; compare them."""

    preset: str = "carracing-cpu"
    """Preset of the base arm; every arm is this preset plus its own overrides."""
    arms: tuple[str, ...] = DEFAULT_ARMS
    """`name: train overrides`, e.g. 'ar8: --env.action-repeat 8'; the base arm always runs first."""
    seeds: tuple[int, ...] = (0, 1)
    """Seeds of every arm (at least 2 to compare arms at all)."""
    minutes: float = 0.0
    """Wall-clock minutes of training per seed (0 = the preset's run.max_seconds)."""
    frames: int = 0
    """Env frames per seed (0 = the preset's run.total_env_frames)."""
    eval_episodes: int = 100
    """Final evaluation episodes per seed, each on a fresh stock track."""
    serial: bool = False
    """Train in one process instead of the distributed default."""
    name: str = ""
    """Stem of the reports' names; empty means `<date>-<preset>-ablation`. Give the same name to
    resume an ablation on a later day."""
    max_seeds: int = 0
    """Train at most this many (arm, seed) runs in this invocation, then compare what is done
    (0 = every missing one): `--max-seeds 1` fits one 2-hour seed into each sitting."""
    compare_only: bool = False
    """Train nothing: compare the seeds the arms' reports hold (after a seed trained on its own
    with `sacae bench learning --name <name>-<arm>`), and list the missing ones."""
    runs_dir: Path = Path("runs/learning")
    """Where the seeds' run directories go."""
    out_dir: Path = Path("benchmarks/learning")
    """Where the arms' reports go; the comparison goes to its `ablations/` folder."""


def parse_arm(text: str) -> tuple[str, list[str]]:
    """`'name: --a 1 --b'` -> ('name', ['--a', '1', '--b'])."""
    name, sep, rest = text.partition(":")
    name, overrides = name.strip(), shlex.split(rest)
    if not sep or not ARM_NAME.fullmatch(name) or name == BASE:
        raise SystemExit(
            f"error: --arms {text!r} is invalid: write 'name: --section.field value ...' with a "
            f"name of lower-case letters, digits and dashes, other than {BASE!r}"
        )
    if not overrides:
        raise SystemExit(f"error: --arms {text!r} changes nothing: give its train overrides")
    return name, overrides


def permutation_p(base: list[float], arm: list[float]) -> float:
    """Exact two-sided permutation p-value of the difference of means: the fraction of all ways to
    split the pooled seed means into groups of these sizes whose difference is at least as large
    in magnitude as the observed one."""
    pooled = np.asarray(base + arm)
    observed = abs(np.mean(arm) - np.mean(base))
    splits = list(itertools.combinations(range(len(pooled)), len(arm)))
    extreme = 0
    for chosen in splits:
        mask = np.zeros(len(pooled), dtype=bool)
        mask[list(chosen)] = True
        extreme += abs(pooled[mask].mean() - pooled[~mask].mean()) >= observed - 1e-9
    return extreme / len(splits)


def pooled_seed_sd(seed_means: list[list[float]]) -> tuple[float, int] | None:
    """Standard deviation of one configuration's seed means, pooled over the arms (each arm's
    seeds about their own mean), with its degrees of freedom; None without an arm of 2 seeds."""
    squares = sum(float(np.sum((np.asarray(m) - np.mean(m)) ** 2)) for m in seed_means if m)
    dof = sum(len(m) - 1 for m in seed_means if m)
    return (math.sqrt(squares / dof), dof) if dof else None


def _z_sum() -> float:
    normal = NormalDist()
    return normal.inv_cdf(1 - ALPHA / 2) + normal.inv_cdf(POWER)


def detectable_difference(sd: float, n: int, m: int) -> float:
    """The smallest true difference of arm means that n and m seeds find at level ALPHA with
    probability POWER (two-sample normal approximation: with a handful of seeds the t test needs
    more, so this is a lower bound)."""
    return _z_sum() * sd * math.sqrt(1 / n + 1 / m)


def seeds_needed(sd: float, difference: float) -> int | None:
    """Seeds per arm (both arms alike) at which `difference` becomes detectable as above; None
    for no difference, which no number of seeds detects."""
    if difference == 0:
        return None
    return max(2, math.ceil(2 * (_z_sum() * sd / difference) ** 2))


def machine_label(seed: dict, report: dict) -> str:
    """The seed's CPU, and the precision its updates ran in where the report recorded it."""
    cpu = seed.get("machine", report.get("machine", {})).get("cpu", "?")
    # "cpu: bf16, channels-last on" -> "bf16"; a resumed seed may list several.
    precisions = sorted({key.split(": ")[-1].split(",")[0] for key in seed.get("numerics", {})})
    return f"{cpu} ({'+'.join(precisions)})" if precisions else cpu


def compare(
    reports: dict[str, dict], overrides: dict[str, list[str]]
) -> tuple[list[dict], dict | None]:
    """One row per arm: its seeds' eval means, their mean, and the difference to the base arm,
    with its p and, from the seed spread pooled over the arms, the difference these seeds can
    detect and the seeds per arm this difference would need; and that spread, once for all arms
    (`seed_sd`, `dof`), or None while no arm has 2 seeds."""
    seed_means = {
        arm: [s["eval"]["mean"] for s in report["seeds"].values()]
        for arm, report in reports.items()
    }
    base = seed_means.get(BASE, [])
    spread = pooled_seed_sd(list(seed_means.values()))
    rows = []
    for arm, report in reports.items():
        means = seed_means[arm]
        row = {
            "arm": arm,
            "overrides": overrides[arm],
            "seed_means": means,
            "mean": float(np.mean(means)),
            "trained_min": [bench_learning.trained_s(s) / 60 for s in report["seeds"].values()],
            "frames": [s["eval"]["counters"].get("env_frames") for s in report["seeds"].values()],
            "machines": [machine_label(s, report) for s in report["seeds"].values()],
        }
        if arm != BASE and base:
            row["delta"] = row["mean"] - float(np.mean(base))
            if len(means) >= 2 and len(base) >= 2:
                row["p"] = permutation_p(base, means)
            if spread:
                row["detectable"] = detectable_difference(spread[0], len(base), len(means))
                row["seeds_needed"] = seeds_needed(spread[0], row["delta"])
        rows.append(row)
    return rows, ({"seed_sd": spread[0], "dof": spread[1]} if spread else None)


def markdown(
    name: str,
    rows: list[dict],
    spread: dict | None,
    command: str,
    missing: dict[str, list[int]],
) -> str:
    lines = [
        f"# Ablation {name}",
        "",
        f"`{command}`",
        "",
        "Final eval per seed: deterministic policy, mean over fresh stock tracks. p: exact two-sided",
        "permutation test over seed means (with n and m seeds it cannot go below 2 / C(n+m, n):",
        "1/3 for 2 seeds per arm, so 2 seeds can only show a direction, not settle it).",
        "",
        "| arm | overrides | minutes/seed | k frames/seed | machine/seed | eval mean per seed | "
        "mean over seeds | vs base | p | detectable | seeds/arm needed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | `{' '.join(r['overrides'])}` | "
            f"{', '.join(f'{m:.0f}' for m in r['trained_min'])} | "
            f"{', '.join('?' if f is None else f'{f / 1000:.1f}' for f in r['frames'])} | "
            f"{', '.join(r['machines'])} | "
            f"{', '.join(f'{m:.0f}' for m in r['seed_means'])} | {r['mean']:.0f} | "
            + (f"{r['delta']:+.0f}" if "delta" in r else "") + " | "
            + (f"{r['p']:.2f}" if "p" in r else "") + " | "
            + (f"{r['detectable']:.0f}" if "detectable" in r else "") + " | "
            + (str(r["seeds_needed"] or "-") if "seeds_needed" in r else "") + " |"
        )  # fmt: skip
    if spread:
        lines += [
            "",
            f"Seed spread: the standard deviation of one configuration's seed means, pooled over "
            f"the arms, is {spread['seed_sd']:.0f} ({spread['dof']} degrees of freedom). "
            f"detectable: the smallest true difference to the base that these seeds find at "
            f"{POWER:.0%} power (two-sided, {ALPHA}); seeds/arm needed: how many seeds in each "
            f"arm would find this arm's difference so. Both use the normal approximation, which "
            f"with few seeds is optimistic: take them as lower bounds.",
        ]
    todo = [
        f"{arm} (seeds {', '.join(map(str, seeds))})" for arm, seeds in missing.items() if seeds
    ]
    if todo:
        lines += ["", "Still to train (run the same command again): " + "; ".join(todo) + "."]
    return "\n".join(lines) + "\n"


def plot(reports: dict[str, dict], path: Path) -> None:
    """Every seed's curve, one colour per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (arm, report) in enumerate(reports.items()):
        for j, run in enumerate(report["seeds"].values()):
            if run["curve"]:
                frames, means, _ = zip(*run["curve"], strict=True)
                ax.plot(frames, means, color=f"C{i}", marker="o", label=None if j else arm)
    ax.axhline(bench_learning.RANDOM_POLICY_RETURN, color="red", linestyle=":", label="random")
    ax.set_xlabel("env frames")
    ax.set_ylabel("eval return")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def held_seeds(args: AblationArgs, stem: str, arm: str) -> list[int]:
    """The seeds of this ablation that the arm's report already holds (none without a report)."""
    report = bench_learning.read_report(args.out_dir / f"{stem}-{arm}.json")
    return [seed for seed in args.seeds if report and str(seed) in report["seeds"]]


def learn(args: AblationArgs, stem: str, arm: str, overrides: list[str], seeds: list[int]) -> dict:
    """`sacae bench learning` for the arm's report: it keeps the seeds the report holds for the
    same config (and refuses a report of another), and trains or resumes the others."""
    argv = ["--preset", args.preset, "--seeds", *map(str, seeds)]
    argv += ["--minutes", str(args.minutes)] if args.minutes else []
    argv += ["--frames", str(args.frames)] if args.frames else []
    argv += ["--serial"] if args.serial else []
    argv += ["--eval-episodes", str(args.eval_episodes), "--name", f"{stem}-{arm}"]
    argv += ["--runs-dir", str(args.runs_dir), "--out-dir", str(args.out_dir)]
    return bench_learning.main([*argv, "--", *overrides])


def check_arms(preset: str, common: list[str], arms: dict[str, list[str]]) -> None:
    """Parse every arm's config before any trains: a typo in the last arm fails now, not after
    hours of training the others."""
    from launch.cli import parse_train_args

    for overrides in arms.values():
        parse_train_args(["--preset", preset, *common, *overrides])


def main(argv: list[str] | None = None) -> list[dict]:
    """`sacae bench ablation [options] [-- overrides for every arm]`."""
    argv = list(argv or [])
    own, common = bench_learning.split_overrides(argv)
    args = tyro.cli(AblationArgs, args=own)
    arms = dict([(BASE, [])] + [parse_arm(text) for text in args.arms])
    if len(arms) != len(args.arms) + 1:
        raise SystemExit(f"error: --arms {list(args.arms)} repeats an arm name")
    check_arms(args.preset, common, arms)
    stem = args.name or f"{time.strftime('%Y-%m-%d')}-{args.preset}-ablation"
    if args.max_seeds < 0:
        raise SystemExit(f"error: --max-seeds {args.max_seeds} is negative: give 0 (all) or more")
    overrides = {arm: [*common, *o] for arm, o in arms.items()}
    held = {arm: held_seeds(args, stem, arm) for arm in arms}
    # Every report read back is checked against its arm's config before anything trains.
    reports = {arm: learn(args, stem, arm, overrides[arm], held[arm]) for arm in arms if held[arm]}
    todo = [(seed, arm) for seed in args.seeds for arm in arms if seed not in held[arm]]
    for seed, arm in [] if args.compare_only else todo[: args.max_seeds or None]:
        reports[arm] = learn(args, stem, arm, overrides[arm], [seed])
        held[arm].append(seed)
    reports = {arm: reports[arm] for arm in arms if arm in reports}
    missing = {arm: [s for s in args.seeds if s not in held[arm]] for arm in arms}
    rows, spread = compare(reports, arms)
    folder = args.out_dir / "ablations"
    folder.mkdir(parents=True, exist_ok=True)
    # The command that trains what is missing: the same one without --compare-only.
    command = "sacae bench ablation " + shlex.join(a for a in argv if a != "--compare-only")
    summary = {"command": command, "seed_spread": spread, "arms": rows, "missing": missing}
    (folder / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    (folder / f"{stem}.md").write_text(markdown(stem, rows, spread, command, missing))
    plot(reports, folder / f"{stem}.png")
    print(json.dumps({"ablation": stem, **summary}), flush=True)
    return rows
