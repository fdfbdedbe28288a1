"""`sacae export --run-dir RUN out.parquet`: a run's replay snapshots as one Parquet file.

Each shard's newest snapshot (`<snapshot dir>/shard<i>/snapshot-*.arrow`) is verified, restored
into a FrameReplay of the shard's own shape and written with `replay.snapshot.export_shards_parquet`:
one row per stored entry, frames once, plus `sampleable` and `shard` columns. One shard is in memory
at a time (about 21 KB per stored transition). The file is written under a temporary name and
renamed, so a failed export leaves no partial `out.parquet`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from replay.snapshot import export_shards_parquet, list_snapshots, read_snapshot
from replay.storage import FrameReplay

_SHARD_DIR = re.compile(r"shard(\d+)")
HOW_TO_SNAPSHOT = (
    "train with --run.snapshot-replay (a snapshot with each checkpoint) or "
    "--replay.snapshot-every-s SECONDS (periodic snapshots)"
)


class ExportError(RuntimeError):
    """A run directory that cannot be exported; the message names the path and the fix."""


def snapshot_root(run_dir: Path) -> Path:
    """Where the run's shards saved snapshots: its config's replay.snapshot_dir, else RUN/replay."""
    try:
        configured = json.loads((run_dir / "config.json").read_text())["replay"]["snapshot_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        configured = ""  # an older or hand-made run directory: the default place
    return Path(configured) if configured else run_dir / "replay"


def newest_snapshots(run_dir: str | os.PathLike) -> dict[int, Path]:
    """Shard index -> newest complete snapshot; ExportError when the run has none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(
            f"run directory {run_dir} does not exist; pass the --run.run-dir of a `sacae train` run"
        )
    root = snapshot_root(run_dir)
    found = {}
    if root.is_dir():
        for sub in root.iterdir():
            match = _SHARD_DIR.fullmatch(sub.name)
            if match and sub.is_dir() and (snapshots := list_snapshots(sub)):
                found[int(match.group(1))] = snapshots[0]
    if not found:
        raise ExportError(
            f"run directory {run_dir} holds no replay snapshots (looked in {root}/shard*/); "
            f"{HOW_TO_SNAPSHOT}"
        )
    return dict(sorted(found.items()))


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike) -> dict[int, int]:
    """Write every shard's newest snapshot of `run_dir` to the Parquet file `out`; rows per shard.

    Raises ExportError for a bad run directory or output path, SnapshotError for a refused snapshot.
    """
    snapshots = newest_snapshots(run_dir)
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"output {out} is a directory; pass a file name such as replay.parquet")
    if not out.parent.is_dir():
        raise ExportError(f"output folder {out.parent} does not exist; create it first")

    def shards() -> Iterator[tuple[int, FrameReplay]]:
        for index, path in snapshots.items():
            yield index, read_snapshot(path)

    tmp = out.with_name(out.name + ".tmp")
    try:
        rows = export_shards_parquet(shards(), tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
