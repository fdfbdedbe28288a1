"""Replay snapshots as compressed Arrow IPC files, and Parquet export for offline use.

A snapshot is `snapshot-<total_written>.arrow` (one row per stored entry, zstd-compressed) plus
`snapshot-<total_written>.json`, a manifest holding the file's sha256 and row count. Both are written
to temporary names and renamed, the manifest last, so a snapshot without a manifest is an
interrupted write and is ignored. The newest `keep` snapshots are kept.

Loading verifies the manifest, the sha256, the format version, frame shape and action dim before it
touches the storage, then decodes one record batch at a time into it. A refused snapshot raises
SnapshotError naming the file, the reason and the fix; the storage and the file are left as they
were. On shard start, `restore_latest` tries the newest snapshot and, if that one is corrupt, falls
back to the previous one with a logged error: a crash during a write must not cost the older good
snapshot. A mismatch of shape, action dim or format is a configuration error, not damage, and is
raised (every older snapshot would mismatch as well).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from replay.storage import FrameReplay

FORMAT_VERSION = 1
KEEP_SNAPSHOTS = 2
_ROWS_PER_BATCH = 1024  # 21 MB of 84x84 RGB frames: the storage lock is held for one such copy
_COMPRESSION = pa.Codec("zstd", compression_level=1)  # fast; CarRacing frames compress well
_CORRUPT_FIX = "move it aside to restore an older snapshot, or start the replay empty"
log = logging.getLogger(__name__)


class SnapshotError(RuntimeError):
    """A snapshot that cannot be restored; the message names the file, the reason and the fix."""


class SnapshotMismatchError(SnapshotError):
    """A sound snapshot written with another frame shape, action dim or format version."""


def _schema(
    frame_shape: tuple[int, ...], action_dim: int, metadata: dict[str, str] | None = None
) -> pa.Schema:
    return pa.schema(
        [
            ("abs_index", pa.int64()),
            ("stream_id", pa.int64()),
            ("first", pa.bool_()),
            ("prev", pa.int64()),
            ("action", pa.list_(pa.float32(), action_dim)),
            ("reward", pa.float32()),
            ("terminated", pa.bool_()),
            ("truncated", pa.bool_()),
            ("weights_version", pa.int64()),
            ("frame", pa.binary(int(np.prod(frame_shape)))),
        ],
        metadata=metadata,
    )


# Storage field names of the schema's plain columns, in schema order around `action`.
_NUMPY_NAMES = (
    "abs_index",
    "stream_ids",
    "first",
    "prev",
    "rewards",
    "terminated",
    "truncated",
    "weights_version",
)


def _to_record_batch(rows: dict[str, np.ndarray], schema: pa.Schema) -> pa.RecordBatch:
    n = len(rows["abs_index"])
    frames = pa.FixedSizeBinaryArray.from_buffers(
        schema.field("frame").type, n, [None, pa.py_buffer(np.ascontiguousarray(rows["frames"]))]
    )
    actions = pa.FixedSizeListArray.from_arrays(
        pa.array(rows["actions"].reshape(-1)), schema.field("action").type.list_size
    )
    columns = [pa.array(rows[name]) for name in _NUMPY_NAMES[:4]]
    columns += [actions] + [pa.array(rows[name]) for name in _NUMPY_NAMES[4:]] + [frames]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _from_record_batch(
    batch: pa.RecordBatch, frame_shape: tuple[int, ...], action_dim: int
) -> dict[str, np.ndarray]:
    n, frame_bytes = batch.num_rows, int(np.prod(frame_shape))
    frame_col = batch.column("frame")
    frames = np.frombuffer(
        frame_col.buffers()[1],
        np.uint8,
        count=n * frame_bytes,
        offset=frame_col.offset * frame_bytes,
    )
    rows = {
        name: batch.column(i).to_numpy(zero_copy_only=False)
        for name, i in zip(_NUMPY_NAMES, (0, 1, 2, 3, 5, 6, 7, 8), strict=True)
    }
    rows["actions"] = (
        batch.column("action").flatten().to_numpy(zero_copy_only=False).reshape(n, action_dim)
    )
    rows["frames"] = frames.reshape(n, *frame_shape)
    return rows


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_snapshot(
    storage: FrameReplay,
    directory: str | os.PathLike,
    lock: Callable[[], AbstractContextManager] | None = None,
    keep: int = KEEP_SNAPSHOTS,
    extra: Callable[[], dict] | None = None,
) -> Path:
    """Write the storage's entries to `directory`; returns the Arrow file's path.

    `lock()` (e.g. a shard's condition) guards each read of the storage, so inserts and samples go
    on while a large snapshot compresses. Entries overwritten meanwhile are left out; the snapshot
    holds the entries written before it started. `extra()` (JSON-able state that must match those
    entries, e.g. a rate limiter's counts) is read under the same lock as the entry range and comes
    back from `snapshot_extra`.
    """
    lock = lock or nullcontext
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with lock():
        lo, hi = storage.lowest, storage.total_written
        metadata = {
            "format_version": str(FORMAT_VERSION),
            "frame_shape": json.dumps(list(storage.frame_shape)),
            "action_dim": str(storage.action_dim),
            "capacity": str(storage.capacity),
            "frame_stack": str(storage.frame_stack),
            "total_written": str(hi),
            "rng_state": json.dumps(storage.rng.bit_generator.state),
            "extra": json.dumps(extra() if extra is not None else {}),
        }
    schema = _schema(storage.frame_shape, storage.action_dim, metadata)
    path = directory / f"snapshot-{hi:015d}.arrow"
    tmp = path.with_name(path.name + ".tmp")
    rows_written = 0
    options = ipc.IpcWriteOptions(compression=_COMPRESSION)
    with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, schema, options=options) as writer:
        for start in range(lo, hi, _ROWS_PER_BATCH):
            with lock():
                rows = storage.read_entries(start, min(hi, start + _ROWS_PER_BATCH))
            writer.write_batch(_to_record_batch(rows, schema))
            rows_written += len(rows["abs_index"])
    os.replace(tmp, path)
    manifest = {
        "format_version": FORMAT_VERSION,
        "file": path.name,
        "sha256": _sha256(path),
        "rows": rows_written,
        "bytes": path.stat().st_size,
        "total_written": hi,
        "created_unix_s": time.time(),
    }
    atomic_write_text(path.with_suffix(".json"), json.dumps(manifest, indent=1))
    _prune(directory, keep)
    return path


def list_snapshots(directory: str | os.PathLike) -> list[Path]:
    """Complete snapshots (those with a manifest) in `directory`, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    manifests = sorted(directory.glob("snapshot-*.json"), reverse=True)
    return [m.with_suffix(".arrow") for m in manifests]


def _prune(directory: Path, keep: int) -> None:
    for old in list_snapshots(directory)[keep:]:
        old.with_suffix(".json").unlink(missing_ok=True)
        old.unlink(missing_ok=True)


def _refuse(
    path: Path, reason: str, fix: str, cls: type[SnapshotError] = SnapshotError
) -> SnapshotError:
    return cls(f"replay snapshot {path} refused: {reason}; {fix}")


def verify_snapshot(
    path: str | os.PathLike, frame_shape: tuple[int, ...], action_dim: int
) -> dict[str, str]:
    """Check a snapshot's manifest, sha256, format and shapes; returns its metadata.

    Raises SnapshotError (SnapshotMismatchError for a sound file of another shape or version).
    """
    path = Path(path)
    _check_manifest(path)
    meta, schema = _read_metadata(path)
    _check_metadata(path, meta, schema, frame_shape, action_dim)
    return meta


def _check_manifest(path: Path) -> None:
    """The manifest is readable and the Arrow file's sha256 matches it."""
    manifest_path = path.with_suffix(".json")
    try:
        manifest = json.loads(manifest_path.read_text())
        expected_sha = manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise _refuse(
            path,
            f"its manifest {manifest_path.name} is missing or unreadable ({err})",
            _CORRUPT_FIX,
        ) from err
    if not path.is_file():
        raise _refuse(path, "the Arrow file is missing", _CORRUPT_FIX)
    actual_sha = _sha256(path)
    if actual_sha != expected_sha:
        raise _refuse(
            path,
            f"its sha256 {actual_sha[:12]}... differs from the manifest's {expected_sha[:12]}... "
            "(corrupt or truncated file)",
            _CORRUPT_FIX,
        )


def _read_metadata(path: Path) -> tuple[dict[str, str], pa.Schema]:
    try:
        with pa.OSFile(str(path), "rb") as source:
            schema = ipc.open_file(source).schema
    except pa.ArrowException as err:
        raise _refuse(path, f"Arrow cannot read it ({err})", _CORRUPT_FIX) from err
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}, schema


def _check_metadata(
    path: Path,
    meta: dict[str, str],
    schema: pa.Schema,
    frame_shape: tuple[int, ...],
    action_dim: int,
) -> None:
    mismatch = SnapshotMismatchError
    try:
        version = int(meta["format_version"])
        shape = tuple(json.loads(meta["frame_shape"]))
        dim = int(meta["action_dim"])
        int(meta["total_written"])
        json.loads(meta["rng_state"])
    except (KeyError, ValueError) as err:
        raise _refuse(
            path,
            f"its schema metadata lacks {err}",
            "it was not written by replay.snapshot",
            mismatch,
        ) from err
    if version != FORMAT_VERSION:
        raise _refuse(
            path,
            f"format version {version}, this code reads {FORMAT_VERSION}",
            "restore it with the code that wrote it, or start the replay empty",
            mismatch,
        )
    if shape != tuple(frame_shape) or dim != action_dim:
        raise _refuse(
            path,
            f"it holds frames {shape} and action dim {dim}; this replay expects frames "
            f"{tuple(frame_shape)} and action dim {action_dim}",
            "run with the env settings (image size, action space) that wrote it, or point "
            "replay.snapshot_dir elsewhere",
            mismatch,
        )
    if not schema.remove_metadata().equals(_schema(frame_shape, action_dim)):
        raise _refuse(
            path,
            f"unexpected columns {schema.names}",
            "it was not written by this version of replay.snapshot",
            mismatch,
        )


def _read_batches(
    path: Path, frame_shape: tuple[int, ...], action_dim: int, total_written: int
) -> Iterator[dict[str, np.ndarray]]:
    """Decode the file one record batch at a time (peak memory: one batch beyond the storage)."""
    last = -1
    with pa.OSFile(str(path), "rb") as source:
        reader = ipc.open_file(source)
        for i in range(reader.num_record_batches):
            rows = _from_record_batch(reader.get_batch(i), frame_shape, action_dim)
            abs_idx = rows["abs_index"]
            if len(abs_idx) and (
                abs_idx[0] <= last or np.any(np.diff(abs_idx) <= 0) or abs_idx[-1] >= total_written
            ):
                raise _refuse(
                    path, "its entry indices are not ascending below total_written", _CORRUPT_FIX
                )
            last = int(abs_idx[-1]) if len(abs_idx) else last
            yield rows


def load_snapshot(path: str | os.PathLike, storage: FrameReplay) -> int:
    """Replace the storage's contents by a verified snapshot; returns the entries restored.

    The manifest, sha256, format and shapes are checked before the storage is touched, so a
    corrupt or mismatched file raises SnapshotError and leaves the storage as it was. The sampling
    RNG resumes where the snapshot left it, so the restored storage samples as the saved one would.
    """
    path = Path(path)
    meta = verify_snapshot(path, storage.frame_shape, storage.action_dim)
    total = int(meta["total_written"])
    try:
        storage.load_entries(
            _read_batches(path, storage.frame_shape, storage.action_dim, total), total
        )
    except (pa.ArrowException, SnapshotError, ValueError) as err:
        # Only reachable for a file whose manifest was rewritten to match it: start empty.
        storage.load_entries([], 0)
        if isinstance(err, SnapshotError):
            raise
        raise _refuse(
            path, f"decoding failed ({err}); the replay is now empty", _CORRUPT_FIX
        ) from err
    storage.rng.bit_generator.state = json.loads(meta["rng_state"])
    return storage.num_entries


def restore_latest(directory: str | os.PathLike, storage: FrameReplay) -> Path | None:
    """Restore the newest sound snapshot in `directory`; returns its path, None when there is none.

    A corrupt newest snapshot is reported and skipped for the previous one; a mismatched one
    (SnapshotMismatchError) is raised, since every older snapshot was written the same way.
    """
    for path in list_snapshots(directory):
        try:
            load_snapshot(path, storage)
            return path
        except SnapshotMismatchError:
            raise
        except SnapshotError as err:
            log.error("%s; trying the previous snapshot", err)
    return None


def snapshot_extra(path: str | os.PathLike) -> dict:
    """The `extra` state saved with a snapshot ({} for snapshots written without one)."""
    meta, _ = _read_metadata(Path(path))
    return json.loads(meta.get("extra", "{}"))


def read_snapshot(path: str | os.PathLike) -> FrameReplay:
    """A new FrameReplay holding the snapshot at `path`, shaped by the file's own metadata.

    For offline use (export, inspection): the capacity, frame shape, action dim and frame stack are
    the writing shard's. The manifest and sha256 are checked before the metadata is trusted; a
    refused file raises SnapshotError naming it.
    """
    path = Path(path)
    _check_manifest(path)
    meta, _ = _read_metadata(path)
    try:
        storage = FrameReplay(
            int(meta["capacity"]),
            tuple(json.loads(meta["frame_shape"])),
            int(meta["action_dim"]),
            int(meta["frame_stack"]),
        )
    except (KeyError, ValueError, TypeError) as err:
        raise _refuse(
            path,
            f"its schema metadata lacks or mangles {err}",
            "it was not written by replay.snapshot",
            SnapshotMismatchError,
        ) from err
    load_snapshot(path, storage)
    return storage


def _parquet_schema(storage: FrameReplay, shard_column: bool) -> pa.Schema:
    metadata = {
        "frame_shape": json.dumps(list(storage.frame_shape)),
        "frame_stack": str(storage.frame_stack),
    }
    schema = _schema(storage.frame_shape, storage.action_dim, metadata).append(
        pa.field("sampleable", pa.bool_())
    )
    return schema.append(pa.field("shard", pa.int32())) if shard_column else schema


def _write_parquet_rows(
    storage: FrameReplay, writer: pq.ParquetWriter, shard: int | None = None
) -> int:
    lo, hi = storage.lowest, storage.total_written
    plain = _schema(storage.frame_shape, storage.action_dim)
    rows_written = 0
    for start in range(lo, hi, _ROWS_PER_BATCH):
        rows = storage.read_entries(start, min(hi, start + _ROWS_PER_BATCH))
        batch = _to_record_batch(rows, plain)
        columns = [*batch.columns, pa.array(storage.chains(rows["abs_index"])[1])]
        if shard is not None:
            columns.append(pa.array(np.full(batch.num_rows, shard, np.int32)))
        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=writer.schema))
        rows_written += batch.num_rows
    return rows_written


def export_parquet(storage: FrameReplay, path: str | os.PathLike) -> int:
    """Write the stored entries to one Parquet file for offline use; returns the rows written.

    One row per entry (frames once, as fixed-size binary of the schema's `frame_shape`). A row with
    `sampleable` true ends a transition; its stacks are rebuilt by following `prev` as in
    `FrameReplay.chains` (an episode start repeats its own frame).
    """
    with pq.ParquetWriter(str(path), _parquet_schema(storage, False), compression="zstd") as writer:
        return _write_parquet_rows(storage, writer)


def export_shards_parquet(
    shards: Iterable[tuple[int, FrameReplay]], path: str | os.PathLike
) -> dict[int, int]:
    """`export_parquet` of several shards into one file, plus a `shard` column; rows per shard.

    Each shard numbers its own entries, so `abs_index` and `prev` are unique within a shard only.
    `shards` is consumed lazily: pass a generator to hold one shard's storage in memory at a time.
    """
    rows: dict[int, int] = {}
    writer: pq.ParquetWriter | None = None
    try:
        for index, storage in shards:
            schema = _parquet_schema(storage, True)
            if writer is None:
                writer = pq.ParquetWriter(str(path), schema, compression="zstd")
            elif not schema.equals(writer.schema, check_metadata=True):
                raise ValueError(
                    f"replay shard {index} holds frames {storage.frame_shape}, action dim "
                    f"{storage.action_dim}, frame stack {storage.frame_stack}, unlike the shards "
                    "before it; export the shards one by one"
                )
            rows[index] = _write_parquet_rows(storage, writer, index)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError("no replay shard to export")
    return rows
