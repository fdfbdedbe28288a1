"""Replay service configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.validation import require


@dataclass(frozen=True)
class ReplayConfig:
    """Sharded pixel replay and its rate limiter."""

    capacity: int = 500_000
    """Transitions kept over all shards (about 21.2 KB each at 84x84 RGB)."""
    num_shards: int = 1
    """Replay shards (Ray actors); each rollout actor writes to one."""
    min_size: int = 1000
    """Transitions stored before learning starts (the recipe's seed steps)."""
    rate_tolerance: float = 200.0
    """How far (in agent steps per shard) either side may run ahead of the target samples per insert."""
    prefetch: int = 4
    """Sample requests the learner keeps in flight."""
    placement: Literal["spread", "pack"] = "spread"
    """spread: each shard on the node with the most free CPUs; pack: all on the learner's node."""
    snapshot_dir: str = ""
    """Where shards save Arrow snapshots; empty means `<run_dir>/replay` when snapshots are on."""
    snapshot_every_s: float = 0.0
    """Seconds between shard snapshots; 0 turns periodic snapshots off (checkpoints may still take one)."""
    sample_timeout_s: float = 60.0
    """Longest single wait for a sample reply before the learner re-checks the shards."""
    insert_timeout_s: float = 60.0
    """Longest single `wait_insert` call of a writer held back for a lagging learner (it then asks again)."""

    def __post_init__(self) -> None:
        require(self.capacity >= 1, "replay.capacity", self.capacity, ">= 1")
        require(self.num_shards >= 1, "replay.num_shards", self.num_shards, ">= 1")
        require(
            self.capacity >= self.num_shards * 16,
            "replay.capacity",
            self.capacity,
            ">= 16 per shard",
        )
        require(self.min_size >= 1, "replay.min_size", self.min_size, ">= 1")
        require(
            self.min_size <= self.capacity,
            "replay.min_size",
            self.min_size,
            f"<= replay.capacity ({self.capacity})",
        )
        require(
            self.rate_tolerance >= 1,
            "replay.rate_tolerance",
            self.rate_tolerance,
            ">= 1 (a narrower buffer can block actors and learner at once)",
        )
        require(self.prefetch >= 1, "replay.prefetch", self.prefetch, ">= 1")
        require(
            self.snapshot_every_s >= 0, "replay.snapshot_every_s", self.snapshot_every_s, ">= 0"
        )
        require(self.sample_timeout_s > 0, "replay.sample_timeout_s", self.sample_timeout_s, "> 0")
        require(self.insert_timeout_s > 0, "replay.insert_timeout_s", self.insert_timeout_s, "> 0")
