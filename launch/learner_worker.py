"""The learner process: SacAeLearner, a BatchSource and a weights publisher behind UpdateLoop.

`LearnerWorker` is plain Python and runs in serial mode as it is; `RemoteLearnerWorker` is its thin
Ray wrapper, which builds the Ray transport (the shard sampler and the registry publisher) inside
the learner's process and hands them in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import ray
import torch

from actors.evaluate import ValueProbes
from actors.rollout_actor import RegistryPublisher
from launch.config import TrainConfig
from launch.update_loop import UpdateLoop
from learner.learning import SacAeLearner
from learner.weights import PolicyWeights
from replay.sampler import ReplaySampler
from replay.source import BatchSource


class LearnerWorker:
    """Pulls batches from its source, updates, publishes weights every `run.weights_publish_every`."""

    def __init__(
        self,
        cfg: TrainConfig,
        obs_shape,
        action_dim: int,
        source: BatchSource,
        publish: Callable[[PolicyWeights], None],
        state: dict | None = None,
    ):
        self.cfg = cfg
        self.learner = SacAeLearner(tuple(obs_shape), action_dim, cfg.learner, seed=cfg.run.seed)
        if state is not None:
            self.learner.load_state_dict(state)
        self.source = source
        self.loop = UpdateLoop(self.learner, publish, cfg.run.weights_publish_every)
        self._last_batch = None

    def device(self) -> str:
        return str(self.learner.device)

    def train_until(self, deadline: float | None = None) -> int:
        """Update until `deadline` (monotonic), or until a non-blocking source has no batch;
        returns the updates made."""
        updates = 0
        while deadline is None or time.monotonic() < deadline:
            # One host copy per batch: the sampler assembles into the learner's reusable
            # (pinned, on CUDA) buffer, which the learner then copies to its device.
            out = self.learner.host_batch_buffer(self.cfg.env.frame_stack)
            batch = self.source.next_batch(out=out)
            if batch is None:
                break
            self.loop.step(batch)
            self._last_batch = batch
            updates += 1
        return updates

    def train_for(self, seconds: float) -> dict[str, float]:
        """Update for about `seconds`, then report metric means, sampler waits and counters."""
        self.train_until(time.monotonic() + seconds)
        return self.report()

    def report(self) -> dict[str, float]:
        row = self.loop.report()
        row.update(self.source.stats())
        return row

    def state_dict(self) -> dict:
        """Learner state on the CPU, for a checkpoint written by the driver."""
        return _to_cpu(self.learner.state_dict())

    def policy_weights(self) -> PolicyWeights:
        """The newest published weights (what evaluation uses)."""
        return self.loop.latest

    def value_metrics(self, probes: ValueProbes | None) -> dict[str, float]:
        """The critic's values on an evaluation's probes against the returns observed there."""
        if probes is None:
            return {}

        def q(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
            values = self.learner.q_values(torch.from_numpy(obs), torch.from_numpy(actions))
            return values.cpu().numpy()

        return probes.metrics(q(probes.obs, probes.actions), q(probes.end_obs, probes.end_actions))

    def reconstruction_image(self, count: int = 4) -> np.ndarray | None:
        """uint8 HxWx3 grid: newest frames of sampled observations (top) over their reconstructions (bottom)."""
        if self._last_batch is None:
            return None
        frames = np.array(
            self._last_batch.frames[:count]
        )  # [n, S + n_step, C, H, W]; the buffer is reused
        stack = self.cfg.env.frame_stack
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


@ray.remote
class RemoteLearnerWorker(LearnerWorker):
    """LearnerWorker in its own Ray process, fed by the shards and publishing to the registry."""

    def __init__(
        self, cfg: TrainConfig, obs_shape, action_dim: int, shards: list, registry, state=None
    ):
        torch.set_num_threads(cfg.run.learner_cpus)  # Ray sets one thread per process otherwise
        sampler = ReplaySampler(
            shards,
            cfg.learner.batch_size,
            prefetch=cfg.replay.prefetch,
            sample_timeout_s=cfg.replay.sample_timeout_s,
            seed=cfg.run.seed,
            hang_timeout_s=cfg.run.remote_timeout_s,
        )
        publish = RegistryPublisher(registry, cfg.run.remote_timeout_s)
        super().__init__(cfg, obs_shape, action_dim, sampler, publish, state)
