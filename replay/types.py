"""Small typed messages that cross process boundaries between actors, replay and the learner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class TransitionChunk:
    """Entries of one or more env streams, each new frame sent once.

    An entry is one frame of one stream (an env slot of an actor). An entry with `first=True` is the
    frame returned by `reset()`: it starts an episode and carries no transition (its action, reward
    and flags are zeros). Every other entry is the frame reached by taking `actions[i]` from the
    stream's previous entry, with the summed `rewards[i]` and the `terminated`/`truncated` flags of
    that agent step. Entries of one stream appear in time order; streams may be interleaved.
    """

    stream_ids: np.ndarray  # int64 [n]: which stream each entry belongs to
    frames: np.ndarray  # uint8 [n, C, H, W]: the newest frame only, never a whole stack
    first: np.ndarray  # bool [n]
    actions: np.ndarray  # float32 [n, A], in the policy's [-1, 1] space
    rewards: np.ndarray  # float32 [n]
    terminated: np.ndarray  # bool [n]
    truncated: np.ndarray  # bool [n]
    weights_version: np.ndarray  # int64 [n]: policy version that chose the action

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_transitions(self) -> int:
        return int((~self.first).sum())


@dataclass(frozen=True)
class SampledBatch:
    """A batch of transitions, uint8 pixels ready for one host-to-device copy.

    `frames[:, :S]` is the observation stack and `frames[:, N:]` the next-observation stack
    (S = frame_stack, N = n_step, 1 in the recipe), so stacks are never materialised twice on the
    host. The action is the one taken at obs, the reward the discounted sum of the N rewards that
    followed, the flags those of the N-th step.
    """

    frames: np.ndarray  # uint8 [B, S + N, C, H, W]
    actions: np.ndarray  # float32 [B, A]
    rewards: np.ndarray  # float32 [B]: sum_k gamma^k r_(t+k) over the N steps
    terminated: np.ndarray  # float32 [B]: 1.0 removes the bootstrap term; truncation keeps it
    weights_version: np.ndarray  # int64 [B]

    def __len__(self) -> int:
        return int(self.frames.shape[0])


class SampleReply(NamedTuple):
    """A shard's answer to a sample request."""

    batch: SampledBatch | None
    """The transitions, or None when the shard could not give them before its timeout."""
    size: int
    """Transitions stored in the shard."""
    sampleable: bool
    """Whether the shard's rate limiter lets the learner take more now (False: it waits for inserts)."""
    released: bool = False
    """The run's writers stopped for good (`ReplayShard.release`): a reply without a batch is final."""
