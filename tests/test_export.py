"""`sacae export`: a run's replay snapshots to Parquet, and its one-line errors. No Ray."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from launch.cli import main
from replay.snapshot import list_snapshots, save_snapshot
from replay.storage import FrameReplay
from replay.types import TransitionChunk

FRAME_SHAPE = (3, 6, 5)
ACTION_DIM = 2
STACK = 3
COLUMNS = [
    "abs_index",
    "stream_id",
    "first",
    "prev",
    "action",
    "reward",
    "terminated",
    "truncated",
    "weights_version",
    "frame",
    "sampleable",
    "shard",
]


def filled(seed: int, steps: int, capacity: int = 64, streams: int = 2) -> FrameReplay:
    """A replay written by `streams` streams in episodes of 5 steps (`steps` entries per stream)."""
    rng = np.random.default_rng(seed)
    replay = FrameReplay(capacity, FRAME_SHAPE, ACTION_DIM, STACK, seed=seed)
    for t in range(steps):
        n = streams
        replay.add(
            TransitionChunk(
                stream_ids=np.arange(n, dtype=np.int64),
                frames=rng.integers(0, 256, (n, *FRAME_SHAPE), dtype=np.uint8),
                first=np.full(n, t % 5 == 0),
                actions=rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
                rewards=rng.normal(size=n).astype(np.float32),
                terminated=np.full(n, t % 5 == 4),
                truncated=np.zeros(n, bool),
                weights_version=np.full(n, t, np.int64),
            )
        )
    return replay


def export(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["export", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_export_writes_every_shard_newest_snapshot(tmp_path, capsys):
    run = tmp_path / "run"
    shards = {0: filled(0, 20), 1: filled(1, 50)}  # shard 1 has wrapped its ring (100 > 64)
    save_snapshot(filled(2, 3), run / "replay" / "shard1")  # an older snapshot: not exported
    for i, replay in shards.items():
        save_snapshot(replay, run / "replay" / f"shard{i}")
    rc, out, err = export(capsys, "--run-dir", run, tmp_path / "replay.parquet")
    assert rc == 0, err
    assert "wrote 104 rows (shard 0: 40, shard 1: 64)" in out

    table = pq.read_table(tmp_path / "replay.parquet")
    assert table.column_names == COLUMNS
    assert table.num_rows == sum(r.num_entries for r in shards.values()) == 104
    assert json.loads(table.schema.metadata[b"frame_shape"]) == list(FRAME_SHAPE)
    shard_col = table.column("shard").to_numpy()
    for i, replay in shards.items():
        rows = table.filter(shard_col == i)
        every = np.arange(replay.lowest, replay.total_written)
        np.testing.assert_array_equal(rows.column("abs_index").to_numpy(), every)
        np.testing.assert_array_equal(rows.column("sampleable").to_numpy(), replay.chains(every)[1])
        frames = np.frombuffer(b"".join(rows.column("frame").to_pylist()), np.uint8)
        stored = replay.read_entries(replay.lowest, replay.total_written)
        np.testing.assert_array_equal(frames.reshape(-1, *FRAME_SHAPE), stored["frames"])
    assert not list(tmp_path.glob("*.tmp"))


def test_export_follows_the_configured_snapshot_dir(tmp_path, capsys):
    run, elsewhere = tmp_path / "run", tmp_path / "snapshots"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"replay": {"snapshot_dir": str(elsewhere)}}))
    save_snapshot(filled(0, 10), elsewhere / "shard0")
    rc, _, err = export(capsys, "--run-dir", run, tmp_path / "out.parquet")
    assert rc == 0, err
    assert pq.read_metadata(tmp_path / "out.parquet").num_rows == 20


def one_line_error(rc: int, out: str, err: str) -> str:
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_missing_run_dir_is_one_line(tmp_path, capsys):
    err = one_line_error(*export(capsys, "--run-dir", tmp_path / "nope", tmp_path / "o.parquet"))
    assert str(tmp_path / "nope") in err and "does not exist" in err


def test_run_without_snapshots_says_how_to_get_them(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    err = one_line_error(*export(capsys, "--run-dir", tmp_path / "run", tmp_path / "o.parquet"))
    assert "no replay snapshots" in err
    assert "--run.snapshot-replay" in err and "--replay.snapshot-every-s" in err
    assert not (tmp_path / "o.parquet").exists()


def test_corrupted_snapshot_is_one_line_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    save_snapshot(filled(0, 10), run / "replay" / "shard0")
    path = save_snapshot(filled(1, 10), run / "replay" / "shard1")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    err = one_line_error(*export(capsys, "--run-dir", run, tmp_path / "o.parquet"))
    assert str(path) in err and "sha256" in err
    assert not (tmp_path / "o.parquet").exists() and not list(tmp_path.glob("*.tmp"))
    assert list_snapshots(run / "replay" / "shard1") == [path]  # the refused file is kept


@pytest.mark.parametrize("target", ["dir", "missing-parent"])
def test_bad_output_path_is_one_line(tmp_path, capsys, target):
    save_snapshot(filled(0, 10), tmp_path / "run" / "replay" / "shard0")
    out = tmp_path if target == "dir" else tmp_path / "no" / "o.parquet"
    err = one_line_error(*export(capsys, "--run-dir", tmp_path / "run", out))
    assert str(out if target == "dir" else out.parent) in err
