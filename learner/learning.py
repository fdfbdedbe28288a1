"""The SAC-AE learner: orders the optimiser steps of one update and returns metrics.

One update on one batch, in the reference's order:
  1. critic step (critic loss trains the Q heads and the whole critic encoder, conv trunk included)
  2. every `policy_update_every`: policy step (conv features detached) and alpha step
  3. every `target_update_every`: soft update of the target critic (Q heads tau 0.01, encoder tau 0.05)
  4. every `decoder_update_every`: reconstruction step (trains the critic encoder and the decoder)

Each step is a forward+loss function (bf16 autocast around it when on, torch.compile'd when asked)
followed by backward and the optimiser step outside autocast, so no autocast region ever spans an
optimiser step. With `cuda_graphs` the whole update (augmentation included) replays as one CUDA
graph per phase of that schedule (learner/graphs.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

from learner import losses
from learner.augment import random_shift
from learner.config import ConfigError, LearnerConfig
from learner.graphs import Capture, UpdateGraphs, cuda_capture, cuda_side_stream, warmup_updates
from learner.networks import SacAeNetworks
from learner.precision import configure_cuda_backends, resolve_numerics
from learner.transfer import DeviceBatch, HostToDevice
from learner.weights import PolicyAverage, PolicyWeights, policy_state
from replay.types import SampledBatch

__all__ = ["DeviceBatch", "SacAeLearner", "pick_device"]


def pick_device(choice: str = "auto") -> torch.device:
    """Decide the learner's device once: CUDA when present (or asked for), else the CPU."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "learner.device is 'cuda' but no CUDA device is visible; use --learner.device auto"
            )
        return torch.device("cuda")
    return torch.device("cpu")


POLICY_METRICS = (
    "learner/policy_loss",
    "learner/alpha_loss",
    "learner/alpha",
    "learner/entropy",
    "learner/policy_log_std",
)
"""Metrics of the policy step; an update without one reports the last step's."""


def _adam(
    params,
    lr: float,
    beta1: float,
    device: torch.device,
    weight_decay: float = 0.0,
    capturable: bool = False,
) -> torch.optim.Adam:
    # Fused Adam (one kernel for all parameters) where this torch supports it on the device.
    # capturable: the step count stays on the device, as a CUDA graph's replay needs.
    kwargs = dict(lr=lr, betas=(beta1, 0.999), weight_decay=weight_decay, capturable=capturable)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, foreach=True, **kwargs)


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
        if cfg.cuda_graphs and self.device.type != "cuda":
            raise ConfigError(
                f"learner.cuda_graphs needs the learner on CUDA, and it is on {self.device.type}; "
                "drop --learner.cuda-graphs"
            )
        self.numerics = resolve_numerics(self.device, cfg.precision, cfg.channels_last)
        if self.device.type == "cuda":
            configure_cuda_backends()
        torch.manual_seed(seed)
        self.nets = SacAeNetworks(self.obs_shape, action_dim, cfg).to(self.device)
        if self.numerics.channels_last:
            self.nets.use_channels_last()
        # After the layout change: the average starts from the weights as they will be trained.
        self.policy_average = (
            PolicyAverage(self.nets.policy, cfg.policy_ema_decay) if cfg.policy_ema_decay else None
        )
        self.log_alpha = torch.tensor(
            math.log(cfg.init_temperature), device=self.device, requires_grad=True
        )
        self.target_entropy = (
            -float(action_dim) if cfg.target_entropy is None else float(cfg.target_entropy)
        )
        self.updates = 0
        self.weights_version = 0
        # Updates per numerics ("cpu: bf16, channels-last on"), this process's and those the loaded
        # state brings: `precision=auto` resolves per machine, so a run resumed on another CPU, or
        # two runs of one config, may have learned in different numerics.
        self._numerics_updates: dict[str, int] = {}
        self._updates_at_load = 0
        self.to_device = HostToDevice(self.device, cfg.batch_size, action_dim, n_step=cfg.n_step)

        self._make_optimisers()
        # Target parameter lists for the fused soft updates.
        target, online = self.nets.critic_target, self.nets.critic
        self._q_pairs = (
            [*target.q1.parameters(), *target.q2.parameters()],
            [*online.q1.parameters(), *online.q2.parameters()],
        )
        self._enc_pairs = (list(target.encoder.parameters()), list(online.encoder.parameters()))
        self._policy_metrics: dict[str, torch.Tensor] = {}
        self._make_forwards()
        self._graphs: UpdateGraphs | None = None
        if cfg.cuda_graphs:
            self.capture_updates()

    def _make_optimisers(self) -> None:
        """The critic, policy and alpha Adams, and the encoder and decoder Adams of the reconstruction
        step, with the recipe's learning rates and betas."""
        cfg, critic, policy = self.cfg, self.nets.critic, self.nets.policy
        trunk_ids = {id(p) for p in critic.encoder.trunk.parameters()}
        # The policy optimiser never holds the shared conv trunk: the policy loss must not move it.
        policy_params = [p for p in policy.parameters() if id(p) not in trunk_ids]
        adam = functools.partial(_adam, device=self.device, capturable=cfg.cuda_graphs)
        self.critic_opt = adam(critic.parameters(), cfg.critic_lr, cfg.critic_beta)
        self.policy_opt = adam(policy_params, cfg.policy_lr, cfg.policy_beta)
        self.alpha_opt = adam([self.log_alpha], cfg.alpha_lr, cfg.alpha_beta)
        self.encoder_opt = adam(critic.encoder.parameters(), cfg.encoder_lr, 0.9)
        self.decoder_opt = adam(
            self.nets.decoder.parameters(),
            cfg.decoder_lr,
            0.9,
            weight_decay=cfg.decoder_weight_decay,
        )

    def _make_forwards(self) -> None:
        """The forward+loss functions; compiled as whole functions so that the direct calls into
        submodules (trunk, heads, from_latent) are compiled too. `reconstruct` and the actors'
        weights use the eager modules, so they never trigger a recompile."""
        self._trunk = self.nets.critic.encoder.trunk
        self._critic_forward = self._critic_loss
        self._policy_forward = self._policy_loss
        self._decoder_forward = self._decoder_loss
        if self.cfg.compile:
            self._trunk = torch.compile(self._trunk)
            self._critic_forward = torch.compile(self._critic_loss)
            self._policy_forward = torch.compile(self._policy_loss)
            self._decoder_forward = torch.compile(self._decoder_loss)

    def capture_updates(
        self,
        capture: Capture = cuda_capture,
        warmup_context=cuda_side_stream,
    ) -> UpdateGraphs:
        """Run updates through whole-update graphs from now on (after a short eager warm-up).

        `cuda_graphs` calls this at construction; tests pass an eager stand-in for the capture.
        """
        cfg = self.cfg
        warmup = warmup_updates(
            cfg.policy_update_every, cfg.target_update_every, cfg.decoder_update_every
        )
        self._graphs = UpdateGraphs(self._step, warmup, capture, warmup_context)
        return self._graphs

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def host_batch_buffer(self, frame_stack: int) -> SampledBatch:
        """A free, reusable host batch (pinned on CUDA) for the sampler to assemble into.

        `sampler.next_batch(out=learner.host_batch_buffer(S))` then `update(batch)`: one host copy
        per batch instead of two. The arrays are overwritten a few batches later (see
        learner/transfer.py), so copy anything that must outlive that.
        """
        channels, height, width = self.obs_shape
        assert channels % frame_stack == 0, (channels, frame_stack)
        return self.to_device.host_batch_buffer(
            frame_stack, (channels // frame_stack, height, width)
        )

    # -- the update -------------------------------------------------------------------------------

    def update(self, batch: SampledBatch | DeviceBatch) -> dict[str, torch.Tensor]:
        """One SAC-AE update. Metrics are detached fp32 device tensors: reading them is the caller's sync."""
        if not isinstance(batch, DeviceBatch):
            batch = self.to_device(batch)
        graphs = self._graphs
        metrics = self._step(batch) if graphs is None else graphs(self._phase(), batch)
        policy_metrics = {key: value for key, value in metrics.items() if key in POLICY_METRICS}
        if policy_metrics:
            self._policy_metrics = policy_metrics
        else:
            metrics.update(self._policy_metrics)
        if self.policy_average is not None:
            self.policy_average.step()
        self.updates += 1
        return metrics

    def _phase(self) -> tuple[bool, bool, bool]:
        """Which optional steps this update takes: the graph that replays it."""
        cfg = self.cfg
        return (
            self.updates % cfg.policy_update_every == 0,
            self.updates % cfg.target_update_every == 0,
            self.updates % cfg.decoder_update_every == 0,
        )

    def _step(self, batch: DeviceBatch) -> dict[str, torch.Tensor]:
        """This update's work on a device batch: augmentation, then the steps; its own metrics."""
        if self.cfg.augment_shift:
            # DrQ: obs and next_obs shifted independently; the same shifted obs feeds the critic,
            # policy and reconstruction steps (so the decoder reconstructs what the encoder saw).
            batch = dataclasses.replace(
                batch,
                obs=random_shift(batch.obs, self.cfg.augment_shift),
                next_obs=random_shift(batch.next_obs, self.cfg.augment_shift),
            )
        return self._update(batch)

    def _update(self, batch: DeviceBatch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        metrics = self._critic_step(batch)
        conv_obs = None
        policy_step, target_step, decoder_step = self._phase()
        if policy_step:
            with self.numerics.autocast():
                if decoder_step:
                    # The policy step does not move the trunk, so the decoder step can reuse these
                    # conv features of obs (same weights, same input): one conv forward saved.
                    conv_obs = self._trunk(batch.obs)
                    conv_for_policy = conv_obs.detach()
                else:
                    with torch.no_grad():
                        conv_for_policy = self._trunk(batch.obs)
            metrics.update(self._policy_and_alpha_step(conv_for_policy))
        if target_step:
            losses.soft_update(*self._q_pairs, cfg.critic_tau)
            losses.soft_update(*self._enc_pairs, cfg.encoder_tau)
        if decoder_step:
            metrics.update(self._decoder_step(batch.obs, conv_obs))
        return metrics

    # Each step: forward and loss (under autocast), then backward and the optimiser step.

    def _critic_loss(self, batch: DeviceBatch, alpha: torch.Tensor):
        nets = self.nets
        with torch.no_grad():
            _, next_action, next_log_pi, _ = nets.policy(batch.next_obs)
            next_q1, next_q2 = nets.critic_target(batch.next_obs, next_action)
            target = losses.td_target(
                batch.rewards,
                batch.terminated,
                self.cfg.gamma**self.cfg.n_step,  # the n-step target's bootstrap discount
                next_q1,
                next_q2,
                alpha,
                next_log_pi,
            )
        q1, q2 = nets.critic(batch.obs, batch.actions)
        return losses.critic_loss(q1, q2, target), q1.detach(), q2.detach(), target

    def _critic_step(self, batch: DeviceBatch) -> dict[str, torch.Tensor]:
        with self.numerics.autocast():
            loss, q1, q2, target = self._critic_forward(batch, self.alpha.detach())
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return {
            "learner/critic_loss": loss.detach(),
            "learner/q1_mean": q1.mean(),
            "learner/q2_mean": q2.mean(),
            "learner/target_q_mean": target.mean(),
        }

    def _policy_loss(self, conv_features: torch.Tensor, alpha: torch.Tensor):
        nets = self.nets
        # The policy sees detached conv features through its own Linear+LayerNorm head; the critic
        # evaluates the sampled action on detached features too (no gradient reaches the trunk).
        _, action, log_pi, log_std = nets.policy.from_latent(
            nets.policy.encoder.head(conv_features)
        )
        q1, q2 = nets.critic.from_latent(nets.critic.encoder.head(conv_features), action)
        return losses.policy_loss(alpha, log_pi, q1, q2), log_pi, log_std

    def _policy_and_alpha_step(self, conv_features: torch.Tensor) -> dict[str, torch.Tensor]:
        # Gradients flow through the critic to the action only; its own parameters need none.
        self.nets.critic.requires_grad_(False)
        try:
            with self.numerics.autocast():
                loss, log_pi, log_std = self._policy_forward(conv_features, self.alpha.detach())
        finally:
            self.nets.critic.requires_grad_(True)
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

    def _decoder_loss(self, obs: torch.Tensor, conv_obs: torch.Tensor | None):
        encoder = self.nets.critic.encoder
        if conv_obs is None:
            conv_obs = encoder.trunk(obs)
        latent = encoder.head(conv_obs)
        reconstruction = self.nets.decoder(latent)
        target = losses.reconstruction_target(obs)
        return losses.reconstruction_loss(
            reconstruction, target, latent, self.cfg.decoder_latent_lambda
        )

    def _decoder_step(
        self, obs: torch.Tensor, conv_obs: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        with self.numerics.autocast():
            loss, mse = self._decoder_forward(obs, conv_obs)
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
        """Decoder output for uint8 obs, mapped back to [0, 1] pixel scale (for images in the run dir).

        Eager and fp32 whatever `compile` says: a batch of 4 must not recompile the update's graphs.
        """
        obs = obs.to(self.device)
        return (self.nets.decoder(self.nets.critic.encoder(obs)) + 0.5).clamp(0, 1)

    @torch.no_grad()
    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min(Q1, Q2) for uint8 obs and actions, the value the policy loss and the target use.

        Eager and fp32 like `reconstruct`: evaluation probes must not recompile the update.
        """
        q1, q2 = self.nets.critic(obs.to(self.device), actions.to(self.device, torch.float32))
        return torch.min(q1, q2).squeeze(-1).float()

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
            "numerics_updates": self.numerics_updates(),
            # A policy state dict (the keys of `policy.`) or None when learner.policy_ema_decay is 0.
            "policy_average": None if self.policy_average is None else self.policy_average.state(),
        }

    def numerics_updates(self) -> dict[str, int]:
        """How many of this learner's updates ran in which numerics, resumes included
        ("unrecorded": those of a checkpoint written before this was kept)."""
        history = dict(self._numerics_updates)
        here = f"{self.device.type}: {self.numerics.describe()}"
        if self.updates > self._updates_at_load:
            history[here] = history.get(here, 0) + self.updates - self._updates_at_load
        return history

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
        if self.policy_average is not None:
            self.policy_average.load(state.get("policy_average"))
        if self._graphs is not None:
            self._graphs.reset()  # the optimisers' state tensors were replaced
        self.updates = int(state["updates"])
        self.weights_version = int(state["weights_version"])
        unrecorded = {"unrecorded": self.updates} if self.updates else {}
        self._numerics_updates = dict(state.get("numerics_updates", unrecorded))
        self._updates_at_load = self.updates
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
