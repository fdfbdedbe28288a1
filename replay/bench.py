"""`sacae bench replay`: replay memory and throughput at 84x84 RGB, against memcpy in the same run.

    sacae bench replay --seconds 2 --shards 1 2

prints one JSON line. `sample_*` figures are the storage alone (one shard, in process): a batch is
128 transitions with their obs and next_obs stacks, gathered as frames [B, S + 1, C, H, W].
`memcpy_bytes_per_s` copies the same number of bytes per batch with numpy, from the same ring into
a preallocated array. `sample_batches_per_s_by_shards` runs shard actors on local Ray with the
learner's sampler (prefetching, parts copied into one batch); it adds Ray's object store copies and
depends on free cores. Not a test: the figures depend on the machine and its load.

The Ray part takes a started Ray, or a `start_ray(num_cpus)` callable to start one: `replay` sits
below `launch`, so `sacae bench replay` (launch/cli.py) passes launch.ray_setup's loopback-only start.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tyro

from replay.config import ReplayConfig
from replay.storage import FrameReplay
from replay.types import TransitionChunk

FRAME_SHAPE = (3, 84, 84)
ACTION_DIM = 3
STREAMS = 8  # an actor's chunk: 8 env streams x 25 agent steps
CHUNK_STEPS = 25


@dataclass(frozen=True)
class ReplayBenchArgs:
    """Replay benchmark settings."""

    seconds: float = 2.0
    """Seconds per timed measurement."""
    shards: tuple[int, ...] = (1, 2)
    """Shard counts to run on local Ray with the sampler (empty: skip Ray)."""
    batch_size: int = 128
    """Transitions per sampled batch."""
    frame_stack: int = 3
    """Frames per observation stack."""
    capacity: int = 20_000
    """Transitions held by the in-process storage (about 21 KB each)."""
    shard_capacity: int = 5_000
    """Transitions held by each Ray shard."""


def synthetic_chunk(rng: np.random.Generator, pool: np.ndarray, step: int) -> TransitionChunk:
    """STREAMS x CHUNK_STEPS entries as an actor ships them; an episode starts every 1000 steps."""
    n = STREAMS * CHUNK_STEPS
    t = step + np.repeat(np.arange(CHUNK_STEPS), STREAMS)
    return TransitionChunk(
        stream_ids=np.tile(np.arange(STREAMS, dtype=np.int64), CHUNK_STEPS),
        frames=pool[rng.integers(0, len(pool), n)],
        first=t % 1000 == 0,
        actions=rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminated=np.zeros(n, bool),
        truncated=t % 1000 == 999,
        weights_version=np.full(n, step // 100, np.int64),
    )


def _timed(fn, seconds: float) -> tuple[int, float]:
    """Calls of `fn` in about `seconds` (after one warm-up call), and the time they took."""
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        calls += 1
    return calls, elapsed


def storage_bench(args: ReplayBenchArgs) -> dict:
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (256, *FRAME_SHAPE), dtype=np.uint8)
    chunks = [synthetic_chunk(rng, pool, CHUNK_STEPS * i) for i in range(40)]
    replay = FrameReplay(args.capacity, FRAME_SHAPE, ACTION_DIM, args.frame_stack, seed=0)
    while replay.num_entries < replay.capacity:  # fill the ring (touches every page once)
        replay.add(chunks[replay.total_written // len(chunks[0]) % len(chunks)])

    state = {"i": 0}

    def insert() -> None:
        state["i"] += 1
        replay.add(chunks[state["i"] % len(chunks)])

    calls, elapsed = _timed(insert, args.seconds)
    inserted = sum(chunks[i % len(chunks)].num_transitions for i in range(1, calls + 1))

    batches, sample_s = _timed(lambda: replay.sample(args.batch_size), args.seconds)
    batch_bytes = args.batch_size * (args.frame_stack + 1) * int(np.prod(FRAME_SHAPE))

    # memcpy bound: the same bytes per batch, from the ring into a preallocated array.
    src = replay.frames.reshape(-1)
    dst = np.empty(batch_bytes, np.uint8)
    offsets = rng.integers(0, src.size - batch_bytes, 64)
    state["i"] = 0

    def copy() -> None:
        state["i"] += 1
        start = offsets[state["i"] % len(offsets)]
        np.copyto(dst, src[start : start + batch_bytes])

    copies, copy_s = _timed(copy, args.seconds)
    sample_bytes_per_s = batches * batch_bytes / sample_s
    memcpy_bytes_per_s = copies * batch_bytes / copy_s
    return {
        "bytes_per_transition": replay.bytes_per_transition,
        "insert_transitions_per_s": inserted / elapsed,
        "sample_batches_per_s": batches / sample_s,
        "sample_bytes_per_s": sample_bytes_per_s,
        "memcpy_bytes_per_s": memcpy_bytes_per_s,
        "sample_vs_memcpy": sample_bytes_per_s / memcpy_bytes_per_s,
    }


def ray_bench(args: ReplayBenchArgs, num_shards: int) -> float:
    """Batches per second through the sampler from `num_shards` full shard actors."""
    import ray

    from replay.sampler import ReplaySampler
    from replay.shard import create_shards

    cfg = ReplayConfig(
        capacity=args.shard_capacity * num_shards,
        num_shards=num_shards,
        min_size=args.batch_size,
        rate_tolerance=1e12,  # no rate limit: sampling as fast as the shards serve
        prefetch=4,
    )
    shards = create_shards(cfg, FRAME_SHAPE, ACTION_DIM, args.frame_stack, 1.0, seed=0)
    try:
        rng = np.random.default_rng(1)
        pool = rng.integers(0, 256, (64, *FRAME_SHAPE), dtype=np.uint8)
        chunk_refs = [ray.put(synthetic_chunk(rng, pool, CHUNK_STEPS * i)) for i in range(8)]
        per_shard = args.shard_capacity // (STREAMS * CHUNK_STEPS) + 1
        for shard in shards:
            ray.get([shard.insert.remote(chunk_refs[i % 8]) for i in range(per_shard)], timeout=300)
        sampler = ReplaySampler(shards, args.batch_size, cfg.prefetch, seed=0)
        batches, elapsed = _timed(sampler.next_batch, args.seconds)
        sampler.close()
        return batches / elapsed
    finally:
        for shard in shards:
            ray.kill(shard)


def replay_bench(
    seconds: float = 2.0,
    shards: tuple[int, ...] = (1, 2),
    start_ray: Callable[[int], object] | None = None,
    **overrides,
) -> dict:
    """All figures of one run; `overrides` are further ReplayBenchArgs fields.

    The shard figures need Ray: a started one, or `start_ray(num_cpus)` to start one (and shut it
    down after).
    """
    args = ReplayBenchArgs(seconds=seconds, shards=tuple(shards), **overrides)
    result: dict = {
        "batch_size": args.batch_size,
        "frame_shape": list(FRAME_SHAPE),
        "frame_stack": args.frame_stack,
        "cpu_count": os.cpu_count(),
    }
    result.update(storage_bench(args))
    if args.shards:
        import ray

        started = not ray.is_initialized()
        if started:
            if start_ray is None:
                raise RuntimeError(
                    f"the replay bench with --shards {' '.join(map(str, args.shards))} needs Ray: "
                    "run it as `sacae bench replay`, start Ray first, or pass --shards with no value"
                )
            start_ray(max(4, max(args.shards) + 1))
        try:
            by_shards = {str(n): ray_bench(args, n) for n in args.shards}
        finally:
            if started:
                ray.shutdown()
        result["sample_batches_per_s_by_shards"] = by_shards
    return result


def main(argv: list[str] | None = None, start_ray: Callable[[int], object] | None = None) -> dict:
    args = tyro.cli(ReplayBenchArgs, args=argv)
    result = replay_bench(start_ray=start_ray, **vars(args))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
