"""Versioned policy weights: the small CPU message the learner broadcasts to actors, and the
moving average of the policy's weights that the learner may keep beside them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class PolicyWeights:
    """Encoder trunk + policy head + policy MLP as numpy arrays (zero-copy through Ray's object store)."""

    version: int
    state: dict[str, np.ndarray]

    @property
    def num_bytes(self) -> int:
        return sum(a.nbytes for a in self.state.values())


def policy_state(policy: nn.Module) -> dict[str, np.ndarray]:
    """A CPU numpy copy of a policy's parameters (fp32, contiguous NCHW)."""
    return {
        name: tensor.detach().to("cpu", torch.float32).contiguous().numpy().copy()
        for name, tensor in policy.state_dict().items()
    }


def load_policy_state(policy: nn.Module, weights: PolicyWeights) -> None:
    """Load broadcast weights into an actor's CPU policy copy (strict: names and shapes must match)."""
    state = {name: torch.from_numpy(np.asarray(array)) for name, array in weights.state.items()}
    policy.load_state_dict(state, strict=True)


class PolicyAverage:
    """An exponential moving average of a policy's parameters (trunk, head, MLP), on their device.

    Polyak averaging of the iterates (Polyak & Juditsky 1992; in deep learning, the EMA of weights
    that SWA and DINO-style teachers use): `average <- decay * average + (1 - decay) * live` after
    every update, so the average spans about 2 / (1 - decay) updates. It never feeds back into
    training: actors act with the live weights, the average is only stored and evaluated. Measured
    because the final weights of a run move a lot in its last few thousand updates, and a uniform
    average of its last three checkpoints beat the final one in 8 of 9 runs (benchmarks/README).
    """

    def __init__(self, policy: nn.Module, decay: float):
        assert 0.0 < decay < 1.0, decay
        self.decay = decay
        # The parameter objects, not their tensors: `.data` may be replaced (channels-last), a
        # reference to the old storage would go stale.
        params = dict(policy.named_parameters())
        self._names, self._params = list(params), list(params.values())
        assert set(self._names) == set(policy.state_dict()), "a policy with buffers is not averaged"
        self._average = [p.detach().float().clone() for p in self._params]

    @torch.no_grad()
    def step(self) -> None:
        """Move the average toward the live weights by one update's share (1 - decay)."""
        torch._foreach_lerp_(self._average, [p.detach() for p in self._params], 1.0 - self.decay)

    def state(self) -> dict[str, torch.Tensor]:
        """The average as a policy state dict of contiguous fp32 CPU tensors (`Policy.load_state_dict`)."""
        return {
            name: tensor.to("cpu", torch.float32).contiguous().clone()
            for name, tensor in zip(self._names, self._average, strict=True)
        }

    @torch.no_grad()
    def load(self, state: dict[str, torch.Tensor] | None) -> None:
        """Restore a saved average; None (a checkpoint of a run without it) starts it from the
        live weights, as at construction."""
        for name, param, average in zip(self._names, self._params, self._average, strict=True):
            average.copy_(param.detach() if state is None else state[name])
