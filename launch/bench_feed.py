"""`sacae bench feed --shards 1,2,4`: batches/s the replay shards and the sampler deliver to a learner.

The consumer does what the learner worker does before each update and nothing else: it takes a
reusable host buffer from the learner's host-to-device step (learner/transfer.py; pinned on CUDA),
has the sampler assemble the batch into it, and copies it to the device without blocking. A buffer
is reused only after its copy's CUDA event, so the copies are paced as in training and the clock
stops after a final synchronize. On the CPU the device batch is a view of the buffer: the figure
is then the feed alone.

The shards are filled with synthetic 84x84 RGB chunks first (replay/bench.py), and their rate
limiters are relaxed so that the bench measures delivery, not the samples-per-insert target.

One JSON line per point: first the in-process baseline (one `ReplayShard` sampled through
`LocalBatchSource`, as serial mode does: no Ray, no object store), then each shard count through
`ReplaySampler` on local Ray. `vs_in_process` shows what Ray costs; `vs_learner` compares with
`--learner-updates-per-s` (take the best row of `sacae bench learner` on the same machine). The
goal on a GPU node is `vs_learner >= 1.5`. Not a test: the figures depend on the machine and its
load, and several shards only add up where there are cores to run them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import ray
import torch
import tyro

from launch.ray_setup import LOCAL, init_ray
from learner.learning import pick_device
from learner.transfer import HostToDevice
from replay.bench import ACTION_DIM, CHUNK_STEPS, FRAME_SHAPE, STREAMS, synthetic_chunk
from replay.config import ReplayConfig
from replay.sampler import ReplaySampler
from replay.shard import ReplayShard, create_shards
from replay.source import LocalBatchSource
from replay.types import SampledBatch, TransitionChunk

GOAL_VS_LEARNER = 1.5
"""The feed must deliver this many batches per learner update (issue 9): headroom for GC, eval, bursts."""
WARMUP_BATCHES = 8
"""Batches consumed before the clock starts: fills the prefetch pipeline and the buffer ring."""
NUM_CHUNKS = 8
_FILL_TIMEOUT_S = 300.0
# At one sample per insert, a tolerance no run of this length exhausts: never rate-limited.
_RELAXED_TOLERANCE = 1e12
_SAMPLES_PER_INSERT = 1.0


@dataclass(frozen=True)
class FeedArgs:
    """Replay delivery to a consumer that only copies each batch to the learner's device."""

    shards: str = "1,2,4"
    """Comma-separated shard counts, each measured through the sampler on local Ray."""
    seconds: float = 10.0
    """Measuring time per point."""
    batch_size: int = 128
    """Transitions per batch."""
    frame_stack: int = 3
    """Frames per observation stack (84x84 RGB frames)."""
    shard_capacity: int = 10_000
    """Transitions each shard holds (about 21 KB each), filled before measuring."""
    prefetch: int = 4
    """Sample requests the sampler keeps in flight (replay.prefetch)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the consumer copies batches: the learner's device choice."""
    learner_updates_per_s: float = 0.0
    """The learner's updates/s on this machine (0: not given); adds `vs_learner` and `goal_met`."""
    num_cpus: int = 0
    """CPUs given to local Ray; 0: all cores (at least one per shard plus one)."""
    baseline: bool = True
    """Also measure one in-process shard without Ray, in the same run."""


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SystemExit(f"error: --shards {text!r} must list positive shard counts, e.g. 1,2,4")
    return counts


def make_chunks(seed: int = 0) -> list[TransitionChunk]:
    """NUM_CHUNKS consecutive chunks of STREAMS streams (episodes restart when they wrap)."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (64, *FRAME_SHAPE), dtype=np.uint8)
    return [synthetic_chunk(rng, pool, CHUNK_STEPS * i) for i in range(NUM_CHUNKS)]


def inserts_to_fill(capacity: int) -> int:
    """Chunk inserts that fill a shard of `capacity` transitions (its ring then wraps)."""
    return capacity // (STREAMS * CHUNK_STEPS) + 1


def replay_config(args: FeedArgs, num_shards: int) -> ReplayConfig:
    return ReplayConfig(
        capacity=args.shard_capacity * num_shards,
        num_shards=num_shards,
        min_size=args.batch_size,
        prefetch=args.prefetch,
        rate_tolerance=_RELAXED_TOLERANCE,
    )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.backends.cpu.get_cpu_capability()})"


def consume(
    next_batch: Callable[..., SampledBatch | None],
    to_device: HostToDevice,
    frame_stack: int,
    seconds: float,
) -> tuple[int, float, int]:
    """Batches consumed in about `seconds` (after WARMUP_BATCHES), the time taken, bytes per batch.

    Each batch: a free host buffer, the sampler assembles into it, one host-to-device copy.
    """

    def step() -> SampledBatch:
        batch = next_batch(out=to_device.host_batch_buffer(frame_stack, FRAME_SHAPE))
        # A relaxed limiter never holds the consumer back; None would mean the bench is wrong.
        assert batch is not None, "the relaxed rate limiter held a sample back"
        to_device(batch)
        return batch

    sync = torch.cuda.synchronize if to_device.device.type == "cuda" else (lambda: None)
    for _ in range(WARMUP_BATCHES):
        batch = step()
    sync()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    sync()  # the last copies are part of the work
    elapsed = time.perf_counter() - start
    copied = (batch.frames, batch.actions, batch.rewards, batch.terminated)
    return count, elapsed, sum(a.nbytes for a in copied)


def in_process_point(args: FeedArgs, device: torch.device) -> dict:
    """One ReplayShard in this process, sampled the way serial mode does (LocalBatchSource)."""
    cfg = replay_config(args, 1)
    shard = ReplayShard(
        0, cfg, FRAME_SHAPE, ACTION_DIM, args.frame_stack, _SAMPLES_PER_INSERT, seed=0
    )
    chunks = make_chunks()
    for i in range(inserts_to_fill(args.shard_capacity)):
        shard.insert(chunks[i % len(chunks)])
    source = LocalBatchSource(shard, args.batch_size)
    to_device = HostToDevice(device, args.batch_size, ACTION_DIM)
    count, elapsed, nbytes = consume(source.next_batch, to_device, args.frame_stack, args.seconds)
    return point("in_process", 1, count, elapsed, nbytes, wait_fraction=0.0)


def ray_point(args: FeedArgs, device: torch.device, num_shards: int) -> dict:
    """`num_shards` full shard actors on local Ray, sampled by the learner's ReplaySampler."""
    cfg = replay_config(args, num_shards)
    shards = create_shards(
        cfg, FRAME_SHAPE, ACTION_DIM, args.frame_stack, _SAMPLES_PER_INSERT, seed=0
    )
    try:
        refs = [ray.put(chunk) for chunk in make_chunks()]
        fills = [
            shard.insert.remote(refs[i % len(refs)])
            for shard in shards
            for i in range(inserts_to_fill(args.shard_capacity))
        ]
        ray.get(fills, timeout=_FILL_TIMEOUT_S)
        sampler = ReplaySampler(
            shards, args.batch_size, args.prefetch, cfg.sample_timeout_s, seed=0
        )
        to_device = HostToDevice(device, args.batch_size, ACTION_DIM)
        sampler.stats()  # start its window at the measurement
        count, elapsed, nbytes = consume(
            sampler.next_batch, to_device, args.frame_stack, args.seconds
        )
        wait_fraction = sampler.stats()["sampler/wait_fraction"]
        sampler.close()
    finally:
        for shard in shards:
            ray.kill(shard)
    return point("ray", num_shards, count, elapsed, nbytes, wait_fraction)


def point(
    source: str, shards: int, count: int, elapsed: float, nbytes: int, wait_fraction: float
) -> dict:
    rate = count / elapsed
    return {
        "bench": "feed",
        "source": source,
        "shards": shards,
        "batches_per_s": round(rate, 2),
        "bytes_per_batch": nbytes,
        "bytes_per_s": round(rate * nbytes),
        # Of the measured time, the share spent waiting for shard replies (Ray points only).
        "wait_fraction": round(wait_fraction, 3),
        "batches": count,
    }


def annotate(row: dict, args: FeedArgs, device: torch.device, reference: float | None) -> dict:
    """The run's settings and the ratios to the in-process baseline and to the learner."""
    row.update(
        device=device_name(device),
        batch_size=args.batch_size,
        frame_stack=args.frame_stack,
        prefetch=args.prefetch,
        shard_capacity=args.shard_capacity,
        cpus=os.cpu_count(),
        seconds=args.seconds,
    )
    if reference:
        row["vs_in_process"] = round(row["batches_per_s"] / reference, 3)
    if args.learner_updates_per_s > 0:
        ratio = row["batches_per_s"] / args.learner_updates_per_s
        row.update(
            learner_updates_per_s=args.learner_updates_per_s,
            vs_learner=round(ratio, 3),
            goal_met=ratio >= GOAL_VS_LEARNER,
        )
    return row


def feed_bench(args: FeedArgs) -> list[dict]:
    """Every point of one run, each printed as a JSON line as soon as it is measured."""
    counts = parse_counts(args.shards)
    if args.learner_updates_per_s < 0:
        raise SystemExit(
            f"error: --learner-updates-per-s {args.learner_updates_per_s} must be >= 0 (0: not given)"
        )
    device = pick_device(args.device)
    rows, reference = [], None

    def emit(row: dict) -> None:
        rows.append(annotate(row, args, device, reference))
        print(json.dumps(row), flush=True)

    if args.baseline:
        emit(in_process_point(args, device))
        reference = rows[0]["batches_per_s"]
    started = not ray.is_initialized()
    if started:
        init_ray(LOCAL, num_cpus=max(args.num_cpus or os.cpu_count() or 1, max(counts) + 1))
    try:
        for k in counts:
            emit(ray_point(args, device, k))
    finally:
        if started:
            ray.shutdown()
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    return feed_bench(tyro.cli(FeedArgs, args=argv))


if __name__ == "__main__":
    main()
