"""Versioned policy weights: the small CPU message the learner broadcasts to actors."""

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
