"""`sacae bench learner`: SAC-AE updates per second, against a straightforward update in the same run.

The baseline is the authors' update written plainly: the policy step runs the policy encoder and the
critic encoder separately on the same obs, the decoder step runs the trunk again, and Adam runs
per parameter (no foreach/fused kernels). Both compute the same losses.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro

from learner import losses
from learner.config import LearnerConfig
from learner.learning import DeviceBatch, SacAeLearner
from replay.types import SampledBatch


class StraightforwardLearner(SacAeLearner):
    """The reference's update order with its redundant forward passes and per-parameter Adam."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cfg, nets = self.cfg, self.nets
        adam = torch.optim.Adam
        self.critic_opt = adam(
            nets.critic.parameters(),
            lr=cfg.critic_lr,
            betas=(cfg.critic_beta, 0.999),
            foreach=False,
        )
        self.policy_opt = adam(
            nets.policy.parameters(),
            lr=cfg.policy_lr,
            betas=(cfg.policy_beta, 0.999),
            foreach=False,
        )
        self.alpha_opt = adam(
            [self.log_alpha], lr=cfg.alpha_lr, betas=(cfg.alpha_beta, 0.999), foreach=False
        )
        self.encoder_opt = adam(nets.critic.encoder.parameters(), lr=cfg.encoder_lr, foreach=False)
        self.decoder_opt = adam(
            nets.decoder.parameters(),
            lr=cfg.decoder_lr,
            weight_decay=cfg.decoder_weight_decay,
            foreach=False,
        )

    def _update(self, batch: DeviceBatch) -> dict[str, torch.Tensor]:
        cfg, nets = self.cfg, self.nets
        metrics = self._critic_step(batch)
        if self.updates % cfg.policy_update_every == 0:
            _, pi, log_pi, _ = nets.policy(batch.obs, detach_trunk=True)
            q1, q2 = nets.critic(batch.obs, pi, detach_trunk=True)
            loss = losses.policy_loss(self.alpha.detach(), log_pi, q1, q2)
            self.policy_opt.zero_grad()
            loss.backward()
            self.policy_opt.step()
            a_loss = losses.alpha_loss(self.alpha, log_pi, self.target_entropy)
            self.alpha_opt.zero_grad()
            a_loss.backward()
            self.alpha_opt.step()
        if self.updates % cfg.target_update_every == 0:
            with torch.no_grad():
                for pairs, tau in (
                    (self._q_pairs, cfg.critic_tau),
                    (self._enc_pairs, cfg.encoder_tau),
                ):
                    for target, source in zip(*pairs, strict=True):
                        target.data.copy_(tau * source.data + (1 - tau) * target.data)
        metrics.update(self._decoder_step(batch.obs, None))
        return metrics


def random_batch(
    batch_size: int, obs_shape: tuple[int, int, int], frame_stack: int = 3, seed: int = 0
) -> SampledBatch:
    rng = np.random.default_rng(seed)
    c, h, w = obs_shape
    return SampledBatch(
        frames=rng.integers(
            0, 256, (batch_size, frame_stack + 1, c // frame_stack, h, w), dtype=np.uint8
        ),
        actions=rng.uniform(-1, 1, (batch_size, 3)).astype(np.float32),
        rewards=rng.normal(size=batch_size).astype(np.float32),
        terminated=np.zeros(batch_size, np.float32),
        weights_version=np.zeros(batch_size, np.int64),
    )


def measure_updates_per_s(
    learner: SacAeLearner, batch: SampledBatch, seconds: float, warmup: int = 2
) -> float:
    """Updates/s including the host-to-device copy of every batch, as in training."""
    for _ in range(warmup):
        learner.update(batch)
    sync = torch.cuda.synchronize if learner.device.type == "cuda" else (lambda: None)
    sync()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds or count < 2:
        metrics = learner.update(batch)
        count += 1
    float(metrics["learner/critic_loss"])  # one sync at the end
    sync()
    return count / (time.perf_counter() - start)


@dataclass(frozen=True)
class LearnerBenchArgs:
    """Learner throughput on random pixel batches."""

    batch_size: int = 128
    """Transitions per update."""
    image_size: int = 84
    """Height and width of the (square) observation."""
    seconds: float = 20.0
    """Measuring time for each variant."""
    threads: int = 0
    """CPU threads for torch; 0 keeps torch's default (all cores)."""
    baseline: bool = True
    """Also measure the straightforward update in the same run."""
    device: str = "auto"
    """auto, cpu or cuda."""
    compile: bool = False
    """CUDA only: torch.compile the networks."""
    bf16: bool = False
    """CUDA only: bf16 autocast."""


def learner_bench(args: LearnerBenchArgs) -> dict:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    obs_shape = (9, args.image_size, args.image_size)
    cfg = LearnerConfig(
        batch_size=args.batch_size, device=args.device, compile=args.compile, bf16=args.bf16
    )
    batch = random_batch(args.batch_size, obs_shape)
    learner = SacAeLearner(obs_shape, 3, cfg)
    result = {
        "device": torch.cuda.get_device_name()
        if learner.device.type == "cuda"
        else f"cpu x{torch.get_num_threads()}",
        "batch_size": args.batch_size,
        "obs_shape": list(obs_shape),
        "updates_per_s": round(measure_updates_per_s(learner, batch, args.seconds), 3),
        "compile": args.compile,
        "bf16": args.bf16,
    }
    if args.baseline:
        plain = StraightforwardLearner(
            obs_shape, 3, LearnerConfig(batch_size=args.batch_size, device=args.device)
        )
        result["baseline_updates_per_s"] = round(
            measure_updates_per_s(plain, batch, args.seconds), 3
        )
        result["speedup"] = round(result["updates_per_s"] / result["baseline_updates_per_s"], 3)
    return result


def main(argv: list[str] | None = None) -> dict:
    args = tyro.cli(LearnerBenchArgs, args=argv)
    result = learner_bench(args)
    print(json.dumps(result), flush=True)
    return result
