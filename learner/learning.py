"""The SAC-AE learner: orders the optimiser steps of one update and returns metrics.

One update on one batch, in the reference's order:
  1. critic step (critic loss trains the Q heads and the whole critic encoder, conv trunk included)
  2. every `policy_update_every`: policy step (conv features detached) and alpha step
  3. every `target_update_every`: soft update of the target critic (Q heads tau 0.01, encoder tau 0.05)
  4. every `decoder_update_every`: reconstruction step (trains the critic encoder and the decoder)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from learner import losses
from learner.config import LearnerConfig
from learner.networks import SacAeNetworks
from learner.weights import PolicyWeights, policy_state
from replay.types import SampledBatch


def pick_device(choice: str = "auto") -> torch.device:
    """Decide the learner's device once: CUDA when present (or asked for), else the CPU."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "learner.device is 'cuda' but no CUDA device is visible; use --learner.device auto"
            )
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class DeviceBatch:
    """A batch on the learner's device; pixels still uint8."""

    obs: torch.Tensor
    next_obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor


def _adam(
    params, lr: float, beta1: float, device: torch.device, weight_decay: float = 0.0
) -> torch.optim.Adam:
    # Fused Adam (one kernel for all parameters) where this torch supports it on the device.
    try:
        return torch.optim.Adam(
            params, lr=lr, betas=(beta1, 0.999), weight_decay=weight_decay, fused=True
        )
    except (RuntimeError, ValueError):
        return torch.optim.Adam(
            params, lr=lr, betas=(beta1, 0.999), weight_decay=weight_decay, foreach=True
        )


class SacAeLearner:
    """Networks, optimisers and counters of SAC-AE. Knows nothing of where batches come from."""

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        action_dim: int,
        cfg: LearnerConfig,
        seed: int = 0,
        device: torch.device | None = None,
    ):
        self.cfg = cfg
        self.obs_shape = tuple(obs_shape)
        self.action_dim = action_dim
        self.device = device or pick_device(cfg.device)
        torch.manual_seed(seed)
        self.nets = SacAeNetworks(self.obs_shape, action_dim, cfg).to(self.device)
        on_cuda = self.device.type == "cuda"
        if cfg.channels_last and on_cuda:
            self.nets.to(memory_format=torch.channels_last)
        if cfg.compile and on_cuda:
            for module in (
                self.nets.critic,
                self.nets.critic_target,
                self.nets.policy,
                self.nets.decoder,
            ):
                module.compile()  # in place: attribute access (encoder, trunk) keeps working
        self._autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and on_cuda)
        self.log_alpha = torch.tensor(
            math.log(cfg.init_temperature), device=self.device, requires_grad=True
        )
        self.target_entropy = -float(action_dim)
        self.updates = 0
        self.weights_version = 0

        critic, policy = self.nets.critic, self.nets.policy
        trunk_ids = {id(p) for p in critic.encoder.trunk.parameters()}
        # The policy optimiser never holds the shared conv trunk: the policy loss must not move it.
        policy_params = [p for p in policy.parameters() if id(p) not in trunk_ids]
        self.critic_opt = _adam(critic.parameters(), cfg.critic_lr, cfg.critic_beta, self.device)
        self.policy_opt = _adam(policy_params, cfg.policy_lr, cfg.policy_beta, self.device)
        self.alpha_opt = _adam([self.log_alpha], cfg.alpha_lr, cfg.alpha_beta, self.device)
        self.encoder_opt = _adam(critic.encoder.parameters(), cfg.encoder_lr, 0.9, self.device)
        self.decoder_opt = _adam(
            self.nets.decoder.parameters(),
            cfg.decoder_lr,
            0.9,
            self.device,
            cfg.decoder_weight_decay,
        )
        # Target parameter lists for the fused soft updates.
        target, online = self.nets.critic_target, critic
        self._q_pairs = (
            [*target.q1.parameters(), *target.q2.parameters()],
            [*online.q1.parameters(), *online.q2.parameters()],
        )
        self._enc_pairs = (list(target.encoder.parameters()), list(online.encoder.parameters()))
        self._policy_metrics: dict[str, torch.Tensor] = {}

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    # -- data -------------------------------------------------------------------------------------

    def to_device(self, batch: SampledBatch) -> DeviceBatch:
        """The one host-to-device copy of a batch; stacks are split on the device."""
        pin = self.device.type == "cuda"

        def put(array: np.ndarray) -> torch.Tensor:
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            return (
                tensor.pin_memory().to(self.device, non_blocking=True)
                if pin
                else tensor.to(self.device)
            )

        frames = put(batch.frames)  # [B, S+1, C, H, W] uint8
        stack = frames.shape[1] - 1
        return DeviceBatch(
            obs=frames[:, :stack].flatten(1, 2),
            next_obs=frames[:, 1:].flatten(1, 2),
            actions=put(batch.actions).float(),
            rewards=put(batch.rewards).float().unsqueeze(-1),
            terminated=put(batch.terminated).float().unsqueeze(-1),
        )

    # -- the update -------------------------------------------------------------------------------

    def update(self, batch: SampledBatch | DeviceBatch) -> dict[str, torch.Tensor]:
        """One SAC-AE update. Metrics are detached device tensors: reading them is the caller's sync."""
        if not isinstance(batch, DeviceBatch):
            batch = self.to_device(batch)
        with self._autocast:
            metrics = self._update(batch)
        self.updates += 1
        return metrics

    def _update(self, batch: DeviceBatch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        metrics = self._critic_step(batch)
        conv_obs = None
        if self.updates % cfg.policy_update_every == 0:
            if self.updates % cfg.decoder_update_every == 0:
                # The policy step does not move the trunk, so the decoder step can reuse these
                # conv features of obs (same weights, same input): one conv forward saved.
                conv_obs = self.nets.critic.encoder.trunk(batch.obs)
                conv_for_policy = conv_obs.detach()
            else:
                with torch.no_grad():
                    conv_for_policy = self.nets.critic.encoder.trunk(batch.obs)
            self._policy_metrics = self._policy_and_alpha_step(conv_for_policy)
        metrics.update(self._policy_metrics)
        if self.updates % cfg.target_update_every == 0:
            losses.soft_update(*self._q_pairs, cfg.critic_tau)
            losses.soft_update(*self._enc_pairs, cfg.encoder_tau)
        if self.updates % cfg.decoder_update_every == 0:
            metrics.update(self._decoder_step(batch.obs, conv_obs))
        return metrics

    def _critic_step(self, batch: DeviceBatch) -> dict[str, torch.Tensor]:
        nets = self.nets
        with torch.no_grad():
            _, next_action, next_log_pi, _ = nets.policy(batch.next_obs)
            next_q1, next_q2 = nets.critic_target(batch.next_obs, next_action)
            target = losses.td_target(
                batch.rewards,
                batch.terminated,
                self.cfg.gamma,
                next_q1,
                next_q2,
                self.alpha,
                next_log_pi,
            )
        q1, q2 = nets.critic(batch.obs, batch.actions)
        loss = losses.critic_loss(q1, q2, target)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return {
            "learner/critic_loss": loss.detach(),
            "learner/q1_mean": q1.detach().mean(),
            "learner/q2_mean": q2.detach().mean(),
            "learner/target_q_mean": target.mean(),
        }

    def _policy_and_alpha_step(self, conv_features: torch.Tensor) -> dict[str, torch.Tensor]:
        nets = self.nets
        # The policy sees detached conv features through its own Linear+LayerNorm head; the critic
        # evaluates the sampled action on detached features too (no gradient reaches the trunk).
        _, action, log_pi, log_std = nets.policy.from_latent(
            nets.policy.encoder.head(conv_features)
        )
        # Gradients flow through the critic to the action only; its own parameters need none.
        nets.critic.requires_grad_(False)
        try:
            q1, q2 = nets.critic.from_latent(nets.critic.encoder.head(conv_features), action)
        finally:
            nets.critic.requires_grad_(True)
        alpha = self.alpha.detach()
        loss = losses.policy_loss(alpha, log_pi, q1, q2)
        self.policy_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.policy_opt.step()

        a_loss = losses.alpha_loss(self.alpha, log_pi, self.target_entropy)
        self.alpha_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        self.alpha_opt.step()
        return {
            "learner/policy_loss": loss.detach(),
            "learner/alpha_loss": a_loss.detach(),
            "learner/alpha": self.alpha.detach(),
            "learner/entropy": -log_pi.detach().mean(),
            "learner/policy_log_std": log_std.detach().mean(),
        }

    def _decoder_step(
        self, obs: torch.Tensor, conv_obs: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        encoder = self.nets.critic.encoder
        if conv_obs is None:
            conv_obs = encoder.trunk(obs)
        latent = encoder.head(conv_obs)
        reconstruction = self.nets.decoder(latent)
        target = losses.reconstruction_target(obs)
        loss, mse = losses.reconstruction_loss(
            reconstruction, target, latent, self.cfg.decoder_latent_lambda
        )
        self.encoder_opt.zero_grad(set_to_none=True)
        self.decoder_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.encoder_opt.step()
        self.decoder_opt.step()
        return {
            "learner/reconstruction_loss": loss.detach(),
            "learner/reconstruction_mse": mse.detach(),
        }

    # -- weights and state ------------------------------------------------------------------------

    def policy_weights(self) -> PolicyWeights:
        """The CPU subset an actor needs (trunk, policy head, policy MLP), stamped with a new version."""
        self.weights_version += 1
        return PolicyWeights(version=self.weights_version, state=policy_state(self.nets.policy))

    @torch.no_grad()
    def reconstruct(self, obs: torch.Tensor) -> torch.Tensor:
        """Decoder output for uint8 obs, mapped back to [0, 1] pixel scale (for images in the run dir)."""
        obs = obs.to(self.device)
        return (self.nets.decoder(self.nets.critic.encoder(obs)) + 0.5).clamp(0, 1)

    def state_dict(self) -> dict:
        return {
            "nets": self.nets.state_dict(),
            "log_alpha": self.log_alpha.detach().cpu(),
            "critic_opt": self.critic_opt.state_dict(),
            "policy_opt": self.policy_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "encoder_opt": self.encoder_opt.state_dict(),
            "decoder_opt": self.decoder_opt.state_dict(),
            "updates": self.updates,
            "weights_version": self.weights_version,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "obs_shape": self.obs_shape,
            "action_dim": self.action_dim,
        }

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["obs_shape"]) != self.obs_shape or state["action_dim"] != self.action_dim:
            raise ValueError(
                f"checkpoint is for obs {tuple(state['obs_shape'])} / {state['action_dim']} actions, "
                f"this learner has obs {self.obs_shape} / {self.action_dim}; use the run's own config"
            )
        self.nets.load_state_dict(state["nets"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"].to(self.device))
        for name in ("critic_opt", "policy_opt", "alpha_opt", "encoder_opt", "decoder_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.updates = int(state["updates"])
        self.weights_version = int(state["weights_version"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
