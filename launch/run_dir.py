"""The run directory: config.json, checkpoints/, metrics, eval artefacts. Checkpoints are written atomically."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from launch.config import TrainConfig

CHECKPOINT_FORMAT = 1
KEEP_CHECKPOINTS = 3


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, cfg: TrainConfig) -> RunDir:
        path = Path(cfg.run.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / "checkpoints").mkdir(exist_ok=True)
            (path / "eval").mkdir(exist_ok=True)
        except OSError as err:
            raise SystemExit(
                f"error: cannot create run directory {path} ({err}); pass a writable --run.run-dir"
            ) from err
        run = cls(path)
        cfg.save(path)
        return run

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    def save_checkpoint(self, learner_state: dict, counters: dict, cfg: TrainConfig) -> Path:
        """Write checkpoints/ckpt_<updates>.pt atomically (temp file, then rename) and prune old ones."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "learner": learner_state,
            "counters": dict(counters),
            "config": cfg.to_json(),
        }
        path = self.checkpoints / f"ckpt_{int(counters['updates']):010d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
        for old in sorted(self.checkpoints.glob("ckpt_*.pt"))[:-KEEP_CHECKPOINTS]:
            old.unlink()
        return path

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.checkpoints.glob("ckpt_*.pt"))
        return found[-1] if found else None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a checkpoint file, or the newest valid one of a run directory.

    In a directory, a corrupt newest checkpoint (a crash while writing, a full disk) is skipped
    with a warning that names it, for the one before it. A clear CheckpointError for anything
    unusable.
    """
    path = Path(path)
    if not path.is_dir():
        return _load_checkpoint_file(path, map_location)
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    found = sorted(folder.glob("ckpt_*.pt"), reverse=True)
    if not found:
        raise CheckpointError(
            f"no checkpoint in {path}; pass a ckpt_*.pt file or a run directory with checkpoints/"
        )
    errors = []
    for candidate in found:
        try:
            payload = _load_checkpoint_file(candidate, map_location)
        except CheckpointError as err:
            print(f"sacae: warning: skipping {candidate.name}: {err}", file=sys.stderr, flush=True)
            errors.append(str(err))
            continue
        return payload
    raise CheckpointError(
        f"no usable checkpoint in {folder}: every ckpt_*.pt is damaged; start a new run or put "
        f"back a copy of a checkpoint (newest: {errors[0]})"
    )


def _load_checkpoint_file(path: Path, map_location: str | torch.device) -> dict:
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass a ckpt_*.pt file from a run's checkpoints/"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(
            f"checkpoint {path} is corrupted or not a sacae checkpoint ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:120]}); "
            "use an earlier ckpt_*.pt from the same checkpoints/ folder"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {payload.get('format') if isinstance(payload, dict) else None!r}, "
            f"expected {CHECKPOINT_FORMAT}; it was written by another version of sacae"
        )
    for key in ("learner", "counters", "config"):
        if key not in payload:
            raise CheckpointError(
                f"checkpoint {path} lacks `{key}`; it is incomplete, use an earlier one"
            )
    payload["path"] = str(path)
    return payload
