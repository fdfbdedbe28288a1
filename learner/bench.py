"""`sacae bench learner`: SAC-AE updates per second per precision variant, against the straightforward
update (learner/reference.py: fp32, NCHW, per-parameter Adam) in the same run.

One table row and one JSON line per variant: fp32/bf16 x channels-last off/on, plus torch.compile
and whole-update CUDA graphs (learner/graphs.py) of the variant `auto` picks where they are
included (by default on CUDA only: on the CPU compile's warm-up takes minutes, and graphs need
CUDA). A row that fails (a compile or a capture this torch cannot do) prints its error instead of
a rate, and the other rows still print. `--profile` prints where an update's time goes instead (learner/profile.py).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import tyro

from common.validation import require
from learner.config import LearnerConfig
from learner.learning import SacAeLearner, pick_device
from learner.precision import resolve_numerics
from learner.reference import StraightforwardLearner
from replay.types import SampledBatch


def random_batch(
    batch_size: int,
    obs_shape: tuple[int, int, int],
    frame_stack: int = 3,
    seed: int = 0,
    n_step: int = 1,
) -> SampledBatch:
    """Random pixels and rewards laid out as the replay samples them (S + n_step frames)."""
    rng = np.random.default_rng(seed)
    c, h, w = obs_shape
    return SampledBatch(
        frames=rng.integers(
            0, 256, (batch_size, frame_stack + n_step, c // frame_stack, h, w), dtype=np.uint8
        ),
        actions=rng.uniform(-1, 1, (batch_size, 3)).astype(np.float32),
        rewards=rng.normal(size=batch_size).astype(np.float32),
        terminated=np.zeros(batch_size, np.float32),
        weights_version=np.zeros(batch_size, np.int64),
    )


def measure_updates_per_s(
    learner: SacAeLearner, batch: SampledBatch, seconds: float, warmup: int = 2
) -> float:
    """Updates/s including the host-to-device copy of every batch, as in training."""
    for _ in range(warmup):
        learner.update(batch)
    sync = torch.cuda.synchronize if learner.device.type == "cuda" else (lambda: None)
    sync()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds or count < 2:
        metrics = learner.update(batch)
        count += 1
    float(metrics["learner/critic_loss"])  # one sync at the end
    sync()
    return count / (time.perf_counter() - start)


RECIPE: Mapping[str, LearnerConfig] = {"carracing": LearnerConfig()}
"""The presets this package knows by itself: the recipe's learner (`sacae train`'s default)."""
BASELINE = "baseline fp32 cl-off"
"""The straightforward update's row: every other row at the same image size is compared with it."""


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str  # fp32 or bf16
    channels_last: str  # on or off
    compile: bool = False
    cuda_graphs: bool = False
    baseline: bool = False  # the straightforward update

    @property
    def optional(self) -> bool:
        """A row whose failure is reported, not raised: compile and capture depend on the torch."""
        return self.compile or self.cuda_graphs

    def learner(self, obs_shape, cfg: LearnerConfig) -> SacAeLearner:
        cfg = dataclasses.replace(
            cfg,
            precision=self.precision,
            channels_last=self.channels_last,
            compile=self.compile,
            cuda_graphs=self.cuda_graphs,
        )
        return (StraightforwardLearner if self.baseline else SacAeLearner)(obs_shape, 3, cfg)


@dataclass(frozen=True)
class LearnerBenchArgs:
    """Learner throughput on random pixel batches, one row per precision variant."""

    preset: str = "carracing"
    """Whose learner to measure (`sacae train --preset`, e.g. carracing-cpu): its networks, batch size and augmentation. carracing: the SAC-AE recipe."""
    batch_size: int = 0
    """Transitions per update; 0 = the preset's (carracing: 128)."""
    image_size: tuple[int, ...] = (84,)
    """Height and width of the (square) observation; several sizes are measured in one run, each with its own baseline row (e.g. `--image-size 84 64` for `env.image_size`)."""
    seconds: float = 20.0
    """Measuring time for each variant in each round."""
    rounds: int = 1
    """Measure all variants this many times, interleaved, and keep each one's best (for a busy machine)."""
    threads: int = 0
    """CPU threads for torch; 0 keeps torch's default (all cores)."""
    baseline: bool = True
    """Also measure the straightforward update (fp32, channels-last off) in the same run."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the learner runs."""
    variants: Literal["all", "auto"] = "all"
    """all: fp32/bf16 x channels-last off/on; auto: only the variant `auto` picks on this machine."""
    compile: Literal["auto", "on", "off"] = "auto"
    """Add a torch.compile row (of the auto variant); auto: on CUDA only."""
    cuda_graphs: Literal["auto", "on", "off"] = "auto"
    """Add a whole-update CUDA graphs row (of the auto variant, and of auto + compile when that row
    is in); auto: on CUDA. Needs CUDA."""
    profile: bool = False
    """Print the time split of an update (torch.profiler) instead of the table."""
    profile_updates: int = 6
    """Updates profiled with --profile (after warm-up)."""
    profile_precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Precision of the profiled learner."""
    profile_channels_last: Literal["auto", "on", "off"] = "auto"
    """Channels-last setting of the profiled learner."""


def bench_variants(args: LearnerBenchArgs, device: torch.device) -> tuple[list[Variant], str]:
    """The variants to measure and the name of the one `auto` picks."""
    auto = resolve_numerics(device, "auto", "auto")
    auto_name = f"{'bf16' if auto.bf16 else 'fp32'} cl-{'on' if auto.channels_last else 'off'}"
    variants = []
    if args.baseline:
        variants.append(Variant(BASELINE, "fp32", "off", baseline=True))
    for precision in ("fp32", "bf16"):
        for cl in ("off", "on"):
            name = f"{precision} cl-{cl}"
            if args.variants == "all" or name == auto_name:
                variants.append(Variant(name, precision, cl))
    with_compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    precision, cl = auto_name.split(" cl-")
    if with_compile:
        variants.append(Variant(auto_name + " compile", precision, cl, compile=True))
    with_graphs = args.cuda_graphs == "on" or (args.cuda_graphs == "auto" and device.type == "cuda")
    if with_graphs:
        variants.append(Variant(auto_name + " graphs", precision, cl, cuda_graphs=True))
        if with_compile:
            variants.append(
                Variant(
                    auto_name + " compile graphs", precision, cl, compile=True, cuda_graphs=True
                )
            )
    return variants, auto_name


def learner_bench(
    args: LearnerBenchArgs,
    on_row: Callable[[dict], None] = lambda row: None,
    presets: Mapping[str, LearnerConfig] = RECIPE,
) -> list[dict]:
    """Measure every variant; returns one row (a dict) per variant.

    `on_row` gets each row as soon as its last round is measured, so a run stopped part-way (a
    compile that outlasts the device's time) keeps the rows it finished.
    """
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cfg = bench_learner_config(args, device, presets)
    variants, auto_name = bench_variants(args, device)
    machine = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu x{torch.get_num_threads()} ({torch.backends.cpu.get_cpu_capability()})"
    )
    # Keyed by (image size, variant name): each size is compared with its own baseline.
    best: dict[tuple[int, str], float] = {}
    errors: dict[tuple[int, str], str] = {}

    def row(size: int, variant: Variant) -> dict:
        rate, reference = best.get((size, variant.name)), best.get((size, BASELINE))
        return {
            "bench": "learner",
            "variant": variant.name,
            "auto": variant.name == auto_name,
            "updates_per_s": round(rate, 3) if rate is not None else None,
            "vs_baseline": round(rate / reference, 3) if rate and reference else None,
            "error": errors.get((size, variant.name)),
            "device": machine,
            "preset": args.preset,
            "batch_size": cfg.batch_size,
            "obs_shape": [9, size, size],
            "seconds": args.seconds,
            "rounds": args.rounds,
            "torch": torch.__version__,
        }

    rows: list[dict] = []
    for round_index in range(args.rounds):
        for size in args.image_size:
            obs_shape = (9, size, size)
            batch = random_batch(cfg.batch_size, obs_shape, n_step=cfg.n_step)
            for variant in variants:
                key = (size, variant.name)
                if key not in errors:
                    rate, error = measure_variant(variant, obs_shape, cfg, batch, args.seconds)
                    if error is None:
                        best[key] = max(best.get(key, 0.0), rate)
                    else:
                        errors[key] = error
                if round_index == args.rounds - 1:  # its final figure: the baseline's is in too
                    rows.append(row(size, variant))
                    on_row(rows[-1])
    return rows


def bench_learner_config(
    args: LearnerBenchArgs, device: torch.device, presets: Mapping[str, LearnerConfig] = RECIPE
) -> LearnerConfig:
    """The preset's learner on `device`, at `--batch-size` when given.

    `presets` maps preset names to their learner configs; `sacae bench learner` hands in every
    preset of `launch.config` (this package may not import launch).
    """
    require(args.preset in presets, "preset", args.preset, f"one of {', '.join(sorted(presets))}")
    cfg = dataclasses.replace(presets[args.preset], device=device.type)
    return dataclasses.replace(cfg, batch_size=args.batch_size) if args.batch_size else cfg


def measure_variant(
    variant: Variant,
    obs_shape: tuple[int, int, int],
    cfg: LearnerConfig,
    batch: SampledBatch,
    seconds: float,
) -> tuple[float | None, str | None]:
    """(updates/s, None) of one variant, or (None, its error) if an optional row fails."""
    try:
        learner = variant.learner(obs_shape, cfg)
        # Past the graphs' eager warm-up and the capture of both phases.
        warmup = 12 if variant.cuda_graphs else 5 if variant.compile else 2
        return measure_updates_per_s(learner, batch, seconds, warmup=warmup), None
    except (RuntimeError, ValueError) as error:
        if not variant.optional:
            raise
        message = f"{type(error).__name__}: {str(error)[:300]}"
        print(f"bench learner: {variant.name} failed: {message}", flush=True)
        return None, message
    finally:
        learner = None
        gc.collect()


def print_table(rows: list[dict]) -> None:
    print(f"{'variant':<26} {'image':>6} {'updates/s':>10} {'vs baseline':>12}")
    for row in rows:
        size = f"{row['obs_shape'][-1]}"
        mark = "  <- auto" if row["auto"] else ""
        if row["updates_per_s"] is None:
            print(f"{row['variant']:<26} {size:>6} {'failed':>10} {'-':>12}  {row['error']}")
            continue
        ratio = f"{row['vs_baseline']:.2f}x" if row["vs_baseline"] else "-"
        print(f"{row['variant']:<26} {size:>6} {row['updates_per_s']:>10.3f} {ratio:>12}{mark}")
    first = rows[0]
    print(f"device: {first['device']}, preset {first['preset']}, batch {first['batch_size']}")


def main(
    argv: list[str] | None = None, presets: Mapping[str, LearnerConfig] = RECIPE
) -> list[dict]:
    args = tyro.cli(LearnerBenchArgs, args=argv)
    if args.profile:
        from learner.profile import profile_update

        return [profile_update(args, presets)]
    rows = learner_bench(args, lambda row: print(json.dumps(row), flush=True), presets)
    print_table(rows)
    return rows
