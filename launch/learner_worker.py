"""The learner process of a distributed run: a thin Ray actor around SacAeLearner, sampler and UpdateLoop."""

from __future__ import annotations

import time

import numpy as np
import ray
import torch

from launch.config import TrainConfig
from launch.update_loop import UpdateLoop
from learner.learning import SacAeLearner
from learner.weights import PolicyWeights
from replay.sampler import ReplaySampler


class LearnerWorker:
    """Pulls prefetched batches from the shards, updates, publishes weights to the registry.

    One `ray.put` per published version; the registry keeps only the newest reference, and the
    previous publish must have landed before the next is sent (one publish in flight at most).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        obs_shape,
        action_dim: int,
        shards: list,
        registry,
        state: dict | None = None,
    ):
        self.cfg = cfg
        torch.set_num_threads(cfg.run.learner_cpus)  # Ray sets one thread per process otherwise
        self.learner = SacAeLearner(tuple(obs_shape), action_dim, cfg.learner, seed=cfg.run.seed)
        if state is not None:
            self.learner.load_state_dict(state)
        self.registry = registry
        self._publish_ref: ray.ObjectRef | None = None
        self.sampler = ReplaySampler(
            shards,
            cfg.learner.batch_size,
            prefetch=cfg.replay.prefetch,
            sample_timeout_s=cfg.replay.sample_timeout_s,
            seed=cfg.run.seed,
            hang_timeout_s=cfg.run.remote_timeout_s,
        )
        self.loop = UpdateLoop(self.learner, self._publish, cfg.run.weights_publish_every)
        self._last_batch = None

    def _publish(self, weights: PolicyWeights) -> None:
        if self._publish_ref is not None:
            ray.get(self._publish_ref, timeout=self.cfg.run.remote_timeout_s)
        self._publish_ref = self.registry.publish.remote(weights.version, [ray.put(weights)])

    def device(self) -> str:
        return str(self.learner.device)

    def train_for(self, seconds: float) -> dict[str, float]:
        """Update for about `seconds`, then report metric means, sampler waits and counters."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = self.sampler.next_batch()
            self.loop.step(batch)
            self._last_batch = batch
        row = self.loop.report()
        row.update(self.sampler.stats())
        return row

    def state_dict(self) -> dict:
        """Learner state on the CPU, for a checkpoint written by the driver."""
        return _to_cpu(self.learner.state_dict())

    def reconstruction_image(self, count: int = 4) -> np.ndarray | None:
        """uint8 HxWx3 grid: newest frames of sampled observations (top) over their reconstructions (bottom)."""
        if self._last_batch is None:
            return None
        frames = self._last_batch.frames[:count]  # [n, S+1, C, H, W]
        stack = frames.shape[1] - 1
        obs = torch.from_numpy(
            np.ascontiguousarray(frames[:, :stack].reshape(len(frames), -1, *frames.shape[-2:]))
        )
        recon = self.learner.reconstruct(obs).cpu().numpy()[:, -3:]  # newest frame of the stack
        top = np.concatenate(list(frames[:, stack - 1]), axis=2)
        bottom = np.concatenate(list((recon * 255).round().astype(np.uint8)), axis=2)
        return np.ascontiguousarray(np.concatenate([top, bottom], axis=1).transpose(1, 2, 0))


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


RemoteLearnerWorker = ray.remote(LearnerWorker)
