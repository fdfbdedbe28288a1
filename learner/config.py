"""Learner configuration: the SAC-AE recipe of the authors' `train.py` (see docs/deviations.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# Re-exported: `from learner.config import ConfigError, require` keeps working above `learner`.
from common.validation import ConfigError, require

__all__ = ["ConfigError", "LearnerConfig", "require"]


@dataclass(frozen=True)
class LearnerConfig:
    """SAC-AE learner: networks, optimisers and the update schedule."""

    batch_size: int = 128
    """Transitions per gradient update."""
    gamma: float = 0.99
    """Discount factor."""
    n_step: int = 1
    """Agent steps per TD target (1 = the recipe; DrQ-v2 uses 3): y = sum_k gamma^k r_(t+k) over n steps + gamma^n (1 - terminated) * soft V(s_(t+n)); the replay samples n-step windows inside one episode (docs/deviations.md 18)."""
    latent_dim: int = 50
    """Size of the encoder's output feature (after Linear, LayerNorm, tanh)."""
    num_filters: int = 32
    """Channels of every conv layer of the encoder and decoder."""
    num_conv_layers: int = 4
    """Conv layers of the encoder (the first has stride 2, the others stride 1)."""
    hidden_dim: int = 1024
    """Width of the two hidden layers of the policy and of each Q head."""
    log_std_min: float = -10.0
    """Lower bound of the policy's log standard deviation."""
    log_std_max: float = 2.0
    """Upper bound of the policy's log standard deviation."""
    init_temperature: float = 0.1
    """Initial entropy temperature alpha."""
    target_entropy: float | None = None
    """Policy entropy (nats) that alpha is tuned toward; None = -(action dimensions), the recipe's (SAC v2). Lower keeps alpha smaller."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic (Q heads and the encoder it trains)."""
    critic_beta: float = 0.9
    """Adam beta1 of the critic."""
    policy_lr: float = 1e-3
    """Adam learning rate of the policy (its MLP and its own Linear+LayerNorm head)."""
    policy_beta: float = 0.9
    """Adam beta1 of the policy."""
    encoder_lr: float = 1e-3
    """Adam learning rate of the encoder under the reconstruction loss."""
    decoder_lr: float = 1e-3
    """Adam learning rate of the decoder."""
    alpha_lr: float = 1e-4
    """Adam learning rate of log_alpha."""
    alpha_beta: float = 0.5
    """Adam beta1 of log_alpha."""
    critic_tau: float = 0.01
    """Soft-update rate of the target Q heads."""
    encoder_tau: float = 0.05
    """Soft-update rate of the target critic's encoder."""
    policy_update_every: int = 2
    """Update the policy and alpha every this many updates."""
    target_update_every: int = 2
    """Soft-update the target critic every this many updates."""
    decoder_update_every: int = 1
    """Take a reconstruction step every this many updates."""
    decoder_latent_lambda: float = 1e-6
    """Weight of the latent penalty mean(0.5*||z||^2) in the reconstruction loss."""
    decoder_weight_decay: float = 1e-7
    """L2 weight decay of the decoder (decoder parameters only)."""
    updates_per_step: float = 1.0
    """Gradient updates per agent step; the replay rate limiter holds samples per insert at batch_size times this."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the learner runs: auto picks CUDA when present, else the CPU."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast of the pixel side (convs, encoder and decoder Linear; the rest stays fp32, docs/deviations.md 11); auto: bf16 on CUDA and on CPUs with native bf16 (avx512_bf16 or AMX), else fp32."""
    channels_last: Literal["auto", "on", "off"] = "auto"
    """Channels-last memory format for the convs; auto: on for CUDA, and on the CPU as measured (learner/precision.py: CPU_CHANNELS_LAST)."""
    compile: bool = False
    """torch.compile the trunk and the forward+loss of the critic, policy and decoder steps (meant for CUDA; on the CPU it works but warms up for minutes)."""
    cuda_graphs: bool = False
    """Replay each update as one CUDA graph per phase of its schedule (learner/graphs.py): one launch instead of hundreds of small kernels. CUDA only; off until measured faster (`sacae bench learner` adds its row on CUDA)."""
    augment_shift: int = 0
    """DrQ random shift in pixels (replicate pad, random crop back to size); 0 = off = the SAC-AE recipe; DrQ uses 4."""

    policy_ema_decay: float = 0.0
    """Keep an exponential moving average of the policy's weights (trunk, head, MLP), one step per update, in the checkpoints; 0 = off. Actors act with the live weights; `sacae eval --weights average` drives the average. Measured once on carracing-cpu at 0.999: 54 below the final weights on the same 100 tracks (docs/deviations.md 20)."""

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "learner.batch_size", self.batch_size, ">= 1")
        require(0.0 < self.gamma <= 1.0, "learner.gamma", self.gamma, "in (0, 1]")
        require(self.latent_dim >= 1, "learner.latent_dim", self.latent_dim, ">= 1")
        require(self.num_filters >= 1, "learner.num_filters", self.num_filters, ">= 1")
        require(self.num_conv_layers >= 1, "learner.num_conv_layers", self.num_conv_layers, ">= 1")
        require(self.hidden_dim >= 1, "learner.hidden_dim", self.hidden_dim, ">= 1")
        require(
            self.log_std_min < self.log_std_max,
            "learner.log_std_min",
            self.log_std_min,
            f"< learner.log_std_max ({self.log_std_max})",
        )
        require(self.init_temperature > 0, "learner.init_temperature", self.init_temperature, "> 0")
        require(
            self.target_entropy is None or math.isfinite(self.target_entropy),
            "learner.target_entropy",
            self.target_entropy,
            "a finite number of nats, or None for -(action dimensions)",
        )
        for name in ("critic_lr", "policy_lr", "encoder_lr", "decoder_lr", "alpha_lr"):
            value = getattr(self, name)
            require(value > 0, f"learner.{name}", value, "> 0")
        for name in ("critic_beta", "policy_beta", "alpha_beta"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"learner.{name}", value, "in [0, 1)")
        for name in ("critic_tau", "encoder_tau"):
            value = getattr(self, name)
            require(0.0 < value <= 1.0, f"learner.{name}", value, "in (0, 1]")
        for name in ("policy_update_every", "target_update_every", "decoder_update_every"):
            value = getattr(self, name)
            require(value >= 1, f"learner.{name}", value, ">= 1")
        require(
            self.decoder_latent_lambda >= 0,
            "learner.decoder_latent_lambda",
            self.decoder_latent_lambda,
            ">= 0",
        )
        require(
            self.decoder_weight_decay >= 0,
            "learner.decoder_weight_decay",
            self.decoder_weight_decay,
            ">= 0",
        )
        require(
            self.precision in ("auto", "fp32", "bf16"),
            "learner.precision",
            self.precision,
            "auto, fp32 or bf16",
        )
        require(
            self.channels_last in ("auto", "on", "off"),
            "learner.channels_last",
            self.channels_last,
            "auto, on or off",
        )
        require(
            self.augment_shift >= 0, "learner.augment_shift", self.augment_shift, ">= 0 (0 = off)"
        )
        require(
            not (self.cuda_graphs and self.device == "cpu"),
            "learner.cuda_graphs",
            self.cuda_graphs,
            "False with learner.device cpu (CUDA graphs need CUDA)",
        )
        require(self.n_step >= 1, "learner.n_step", self.n_step, ">= 1 (1 = one-step targets)")
        require(
            0.0 <= self.policy_ema_decay < 1.0,
            "learner.policy_ema_decay",
            self.policy_ema_decay,
            "in [0, 1) (0 = off; 0.999 averages over about 2,000 updates)",
        )
        require(self.updates_per_step > 0, "learner.updates_per_step", self.updates_per_step, "> 0")
