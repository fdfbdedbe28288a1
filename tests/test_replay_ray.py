"""The replay service on local Ray: 2 shards, 2 writers, the sampler, and a shard restart."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import test_replay
from ray import cloudpickle
from test_replay import ACTION_DIM, FRAME_SHAPE, STACK, Streams, check_batch

from replay.config import ReplayConfig
from replay.sampler import ReplaySampler, shard_metrics
from replay.shard import assign_shard, create_shards

pytestmark = pytest.mark.ray
# Ray workers cannot import test modules: ship the writer and its helpers by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(test_replay)

SPI = 8  # samples per insert: batch 16, one update every second agent step
BATCH = 16
CFG = ReplayConfig(
    capacity=2 * 400,
    num_shards=2,
    min_size=40,
    rate_tolerance=10,
    prefetch=2,
    placement="spread",
    sample_timeout_s=2.0,
    insert_timeout_s=2.0,
)


def write(shard, streams: list[int], entries: int, seed: int) -> int:
    """A rollout actor stand-in: stops when the learner leaves it waiting (still not ready after
    a `wait_insert`).

    An insert that fails because the shard died ran on the dead process or not at all, so it is
    sent again once the shard is back (the restarted shard has lost the stream's links anyway).
    """
    import time

    import ray
    from ray.exceptions import RayActorError

    source = Streams(streams, seed=seed)
    for _ in range(entries // 5):
        chunk = source.chunk(5)
        while True:
            try:
                info = ray.get(shard.insert.remote(chunk), timeout=30)
                if not info["ready"]:
                    info = ray.get(shard.wait_insert.remote(2.0), timeout=30)
                break
            except RayActorError:
                time.sleep(0.2)
        if not info["ready"]:
            break
    return source.written


@pytest.fixture(scope="module")
def service(ray_local, tmp_path_factory):
    ray = ray_local
    snapshots = tmp_path_factory.mktemp("replay")
    shards = create_shards(
        CFG, FRAME_SHAPE, ACTION_DIM, STACK, SPI, seed=0, snapshot_dir=str(snapshots)
    )
    ray.get([s.ping.remote() for s in shards], timeout=60)
    sampler = ReplaySampler(
        shards, BATCH, CFG.prefetch, CFG.sample_timeout_s, seed=0, hang_timeout_s=30
    )
    yield ray, shards, sampler
    sampler.close()
    for shard in shards:
        ray.kill(shard)


def start_writers(ray, shards, first_stream: int) -> list:
    remote_write = ray.remote(num_cpus=0.5)(write)
    refs = []
    for i in range(2):
        shard = shards[assign_shard(i, len(shards))]
        streams = [first_stream + 10 * i, first_stream + 10 * i + 1]
        refs.append(remote_write.remote(shard, streams, 600, seed=first_stream + i))
    return refs


def test_two_shards_two_writers_valid_batches_at_the_target_rate(service):
    ray, shards, sampler = service
    writers = start_writers(ray, shards, first_stream=0)
    shard_of_stream = {0: 0, 1: 0, 10: 1, 11: 1}
    seen = np.zeros(2)
    for _ in range(100):
        batch = sampler.next_batch()
        assert batch.frames.shape == (BATCH, STACK + 1, *FRAME_SHAPE)
        assert batch.frames.flags.c_contiguous and batch.frames.dtype == np.uint8
        for s, _, _ in check_batch(batch):
            seen[shard_of_stream[s]] += 1
    ray.get(writers, timeout=60)  # they stop once the learner stops sampling
    stats = ray.get([s.stats.remote() for s in shards], timeout=30)
    for st in stats:
        min_size = CFG.min_size // 2
        lead_steps = st["inserts"] - min_size - st["samples"] / SPI
        # Counts, not times: the limiter admits or holds whole chunks, so the actors' lead ends
        # within the tolerance plus at most one chunk (5 entries) whatever the scheduling was.
        assert -CFG.rate_tolerance <= lead_steps <= CFG.rate_tolerance + 5, st
        assert st["inserts_held"] >= 1 and st["bytes_used"] > 0  # the writers were held back
    # Both shards held about as much: each gave about half of the batches' transitions.
    assert abs(seen[0] / seen.sum() - 0.5) < 0.1
    metrics = {**sampler.stats(), **shard_metrics(stats)}
    assert metrics["sampler/batches"] == 100 and "sampler/wait_s" in metrics
    assert metrics["replay/size"] == sum(st["size"] for st in stats)


def test_killed_shard_restarts_from_its_snapshot(service):
    ray, shards, sampler = service
    path = ray.get(shards[0].save_snapshot.remote(), timeout=60)
    saved = ray.get(shards[0].stats.remote(), timeout=30)
    ray.kill(shards[0], no_restart=False)
    writers = start_writers(ray, shards, first_stream=100)
    for _ in range(20):
        check_batch(sampler.next_batch())
    ray.get(writers, timeout=60)
    after = ray.get(shards[0].stats.remote(), timeout=30)
    assert after["restored_from"] == path
    assert after["size"] >= saved["size"]


def test_a_starved_shard_does_not_stall_the_learner(ray_local):
    """Shard 0's only writer stops (its actor died); the learner draws around it from shard 1,
    whose writer goes on. Before, the learner waited on shard 0 until its hang timeout, and shard
    1's rate limiter stopped shard 1's writer meanwhile: one dead actor stalled the whole run."""
    shards = create_shards(CFG, FRAME_SHAPE, ACTION_DIM, STACK, SPI, seed=1)
    remote_write = ray_local.remote(num_cpus=0)(write)  # the shards take every CPU
    ray_local.get(remote_write.remote(shards[0], [50], 30, seed=5), timeout=60)  # then silence
    writer = remote_write.remote(shards[1], [60, 61], 2000, seed=6)
    sampler = ReplaySampler(shards, BATCH, CFG.prefetch, CFG.sample_timeout_s, hang_timeout_s=30)
    from_shard = np.zeros(2)
    for _ in range(60):  # far more than shard 0's limiter lets the learner take
        for s, _, _ in check_batch(sampler.next_batch()):
            from_shard[int(s >= 60)] += 1
    starved = ray_local.get(shards[0].stats.remote(), timeout=30)
    assert starved["samples"] <= (starved["inserts"] - 10 + CFG.rate_tolerance) * SPI
    assert sampler.stats()["sampler/redraws"] > 0 and from_shard[1] > from_shard[0] > 0
    sampler.close()
    for shard in shards:
        ray_local.kill(shard)
    ray_local.cancel(writer, force=True)


def test_the_sampler_ends_when_shards_are_released_below_their_minimum_size(ray_local):
    """`sacae train` stopped by `run.max_seconds` before the replay reached `replay.min_size`:
    the learner's call waiting for data ends (no batch) once the driver releases the shards,
    so the final checkpoint behind it is written. Before, it waited `replay.hang_timeout_s`."""
    shards = create_shards(CFG, FRAME_SHAPE, ACTION_DIM, STACK, SPI, seed=2)
    remote_write = ray_local.remote(num_cpus=0)(write)
    ray_local.get(remote_write.remote(shards[0], [70], 10, seed=7), timeout=60)  # below 20
    sampler = ReplaySampler(shards, BATCH, CFG.prefetch, 60.0, hang_timeout_s=3600)
    ray_local.get([s.release.remote() for s in shards], timeout=30)
    assert sampler.next_batch() is None and sampler.next_batch() is None
    stats = ray_local.get([s.stats.remote() for s in shards], timeout=30)
    assert [s["samples"] for s in stats] == [0, 0] and stats[0]["size"] > 0
    sampler.close()
    for shard in shards:
        ray_local.kill(shard)
