"""The one host-to-device copy of a batch, through a ring of reusable (on CUDA pinned) host buffers.

On CUDA a batch assembled in pageable memory costs two host copies (into a staging buffer, then
the DMA). A caller that asks `host_batch_buffer()` for a free buffer and has the sampler assemble
into it (`ReplaySampler.next_batch(out=...)`) saves one. A buffer is handed out again only after
the CUDA event recorded behind its last copy has completed; `HOST_BUFFERS` buffers let the
sampler assemble the next batch while the previous copy is in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from learner.precision import full
from replay.types import SampledBatch

HOST_BUFFERS = 3
"""Reusable host batches: one being copied, one being assembled, one spare."""


@dataclass
class DeviceBatch:
    """A batch on the learner's device; pixels still uint8."""

    obs: torch.Tensor
    next_obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor


@dataclass
class _Slot:
    batch: SampledBatch  # numpy views of `tensors`
    tensors: tuple[
        torch.Tensor, ...
    ]  # frames, actions, rewards, terminated (weights_version stays)
    fence: object | None = None  # a recorded event behind this slot's last copy


def _cuda_fence() -> torch.cuda.Event:
    event = torch.cuda.Event()
    event.record()
    return event


class HostToDevice:
    """Copies SampledBatches to `device` and lends reusable host buffers to assemble them in.

    On CUDA the buffers are pinned, a batch assembled elsewhere is staged into one (`stage`), and
    `fence` records a `torch.cuda.Event` behind each copy. On the CPU the device batch is a view of
    the host arrays (no copy, nothing to wait for). `stage` and `fence` are parameters so that tests
    can check the ring and its reuse rule on the CPU.
    """

    def __init__(
        self,
        device: torch.device,
        batch_size: int,
        action_dim: int,
        num_buffers: int = HOST_BUFFERS,
        stage: bool | None = None,
        fence: Callable[[], object] | None = None,
        n_step: int = 1,
    ):
        self.device = device
        self.n_step = n_step  # frames [B, S + n_step]: next_obs starts n_step frames after obs
        self.batch_size, self.action_dim, self.num_buffers = batch_size, action_dim, num_buffers
        on_cuda = device.type == "cuda"
        self.pin = on_cuda
        self.stage = on_cuda if stage is None else stage
        self._fence = fence if fence is not None else (_cuda_fence if on_cuda else None)
        self._slots: list[_Slot] = []
        self._next = 0

    def host_batch_buffer(
        self, frame_stack: int, frame_shape: tuple[int, int, int]
    ) -> SampledBatch:
        """A free host batch of preallocated arrays to assemble the next batch into.

        Blocks until the copy that last read it has completed. Valid until `num_buffers - 1`
        further buffers were asked for: assemble into it, then pass it to `__call__`.
        """
        shape = (self.batch_size, frame_stack + self.n_step, *frame_shape)
        if not self._slots or self._slots[0].batch.frames.shape != shape:
            self._slots = [self._new_slot(shape) for _ in range(self.num_buffers)]
        slot = self._slots[self._next]
        self._next = (self._next + 1) % self.num_buffers
        if slot.fence is not None:
            slot.fence.synchronize()
            slot.fence = None
        return slot.batch

    def _new_slot(self, frames_shape: tuple[int, ...]) -> _Slot:
        b = self.batch_size

        def empty(shape, dtype):
            return torch.empty(shape, dtype=dtype, pin_memory=self.pin)

        tensors = (
            empty(frames_shape, torch.uint8),
            empty((b, self.action_dim), torch.float32),
            empty((b,), torch.float32),
            empty((b,), torch.float32),
        )
        frames, actions, rewards, terminated = (t.numpy() for t in tensors)
        batch = SampledBatch(frames, actions, rewards, terminated, np.zeros(b, np.int64))
        return _Slot(batch=batch, tensors=tensors)

    def _slot_of(self, batch: SampledBatch) -> _Slot | None:
        return next((s for s in self._slots if s.batch.frames is batch.frames), None)

    def __call__(self, batch: SampledBatch) -> DeviceBatch:
        """The one host-to-device copy; stacks are split on the device (no copy on the CPU)."""
        slot = self._slot_of(batch)
        if slot is None and self.stage:
            # A batch assembled elsewhere: stage it in a pinned buffer for an asynchronous copy.
            stack = batch.frames.shape[1] - self.n_step
            staged = self.host_batch_buffer(stack, batch.frames.shape[2:])
            for name in ("frames", "actions", "rewards", "terminated"):
                np.copyto(getattr(staged, name), getattr(batch, name))
            slot = self._slot_of(staged)
        if slot is not None:
            # Our own slot: its tensors are the arrays (views), whatever the caller wrote into them.
            host = slot.tensors
        else:
            host = tuple(
                torch.from_numpy(np.ascontiguousarray(a))
                for a in (batch.frames, batch.actions, batch.rewards, batch.terminated)
            )
        frames, actions, rewards, terminated = (
            t.to(self.device, non_blocking=self.pin) for t in host
        )
        if slot is not None and self._fence is not None:
            slot.fence = self._fence()
        stack = frames.shape[1] - self.n_step  # frames [B, S + n_step, C, H, W] uint8
        return DeviceBatch(
            obs=frames[:, :stack].flatten(1, 2),
            next_obs=frames[:, self.n_step :].flatten(1, 2),
            actions=full(actions),
            rewards=full(rewards).unsqueeze(-1),
            terminated=full(terminated).unsqueeze(-1),
        )
