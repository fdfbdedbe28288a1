"""Whole-update CUDA graphs: one captured graph per phase of the update schedule.

One SAC-AE update launches hundreds of small kernels (three forward/backward passes, five Adam
steps, the soft target updates). At batch 128 on an H100 their launch cost, not their math, bounds
updates/s. A CUDA graph replays all of them with one launch ("whole network capture" in PyTorch's
CUDA graphs notes, whose rules this follows):

- Warm-up first, eagerly, on a side stream: cuDNN autotuning, the optimisers' lazy state and
  torch.compile's first calls happen then, never during a capture.
- Static inputs: each batch is copied into the tensors the graph was captured reading.
- Static outputs: the metrics vector is overwritten by the next replay, so each replay's is cloned.
- Adam with `capturable=True` (its step count lives on the device: learner/learning.py).
- No host sync inside an update (its metrics are device tensors).
- Whatever replaces a tensor a graph captured (loading optimiser state does) must call `reset()`.

The update's Python branches (the policy step every `policy_update_every`, the targets every
`target_update_every`, the decoder every `decoder_update_every`) choose which kernels run, so each
distinct phase gets its own graph, captured the first time it comes up after the warm-up. Random
numbers (the policy's noise, the reconstruction target's dequantisation noise, the DrQ shift) are
drawn afresh at every replay: CUDA's generator advances its offset per replay of a captured graph.

The capture and the warm-up stream are parameters so that tests can check this bookkeeping on the
CPU with an eager stand-in for the graph (tests/test_graphs.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

import torch

from learner.transfer import DeviceBatch

Capture = Callable[[Callable[[], torch.Tensor]], Callable[[], torch.Tensor]]
"""Records `fn` once and returns `replay`: run what was recorded, return fn's (static) output."""


def cuda_capture(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


@contextlib.contextmanager
def cuda_side_stream() -> Iterator[None]:
    """Run the body on a fresh side stream, then wait for it (the warm-up rule of CUDA graphs).

    The synchronize at the end also keeps the caching allocator from handing the warm-up's memory
    to another stream while the side stream may still use it; it runs only during the warm-up.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        yield
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()


def warmup_updates(policy_every: int, target_every: int, decoder_every: int) -> int:
    """Eager updates before the first capture: every phase of the schedule twice, at least 3."""
    return max(3, 2 * math.lcm(policy_every, target_every, decoder_every))


@dataclass
class _Graph:
    inputs: DeviceBatch  # the static tensors the graph reads
    replay: Callable[[], torch.Tensor]  # returns the static metrics vector
    names: list[str]  # the metric names, in the vector's order (set when the update runs)


class UpdateGraphs:
    """Runs `update_fn(batch) -> metrics` eagerly for `warmup` calls, then through one graph per phase.

    `update_fn` must read the batch only from its argument and return scalar tensors; its metrics
    come back as views of one vector cloned after the replay (valid until the caller drops them).
    """

    def __init__(
        self,
        update_fn: Callable[[DeviceBatch], dict[str, torch.Tensor]],
        warmup: int,
        capture: Capture = cuda_capture,
        warmup_context: Callable[[], contextlib.AbstractContextManager] = cuda_side_stream,
    ):
        self._update_fn = update_fn
        self.warmup = warmup
        self._capture = capture
        self._warmup_context = warmup_context
        self.reset()

    def reset(self) -> None:
        """Drop every graph and warm up again."""
        self.eager_left = self.warmup
        self.graphs: dict[Hashable, _Graph] = {}

    def __call__(self, phase: Hashable, batch: DeviceBatch) -> dict[str, torch.Tensor]:
        if self.eager_left > 0:
            self.eager_left -= 1
            with self._warmup_context():
                return self._update_fn(batch)
        graph = self.graphs.get(phase) or self._record(phase, batch)
        for field in dataclasses.fields(DeviceBatch):
            getattr(graph.inputs, field.name).copy_(getattr(batch, field.name), non_blocking=True)
        values = graph.replay().clone()
        return dict(zip(graph.names, values.unbind(0), strict=True))

    def _record(self, phase: Hashable, batch: DeviceBatch) -> _Graph:
        inputs = DeviceBatch(
            **{f.name: getattr(batch, f.name).clone() for f in dataclasses.fields(DeviceBatch)}
        )
        names: list[str] = []

        def run() -> torch.Tensor:
            metrics = self._update_fn(inputs)
            names[:] = list(metrics)
            return torch.stack([value.float() for value in metrics.values()])

        graph = _Graph(inputs=inputs, replay=self._capture(run), names=names)
        self.graphs[phase] = graph
        return graph
