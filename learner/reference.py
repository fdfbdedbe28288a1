"""The straightforward SAC-AE update: the bench's baseline and the tests' oracle.

The authors' update written plainly (pytorch_sac_ae `sac_ae.py`, `update`): fp32, NCHW convs, every
step runs its networks on the observation from scratch (the policy step runs the policy encoder and
the critic encoder separately, the decoder step runs the trunk again), per-parameter Adam, the
critic's parameters collect (and later discard) gradients of the policy loss. SacAeLearner must
reach the same parameters within float tolerance (tests/test_learner.py).
"""

from __future__ import annotations

import dataclasses

import torch

from learner import losses
from learner.learning import DeviceBatch, SacAeLearner


class StraightforwardLearner(SacAeLearner):
    """Same networks, init, RNG use and order of steps as SacAeLearner; none of its shortcuts."""

    def __init__(self, obs_shape, action_dim, cfg, seed: int = 0, device=None):
        cfg = dataclasses.replace(
            cfg,
            precision="fp32",
            channels_last="off",
            compile=False,
            cuda_graphs=False,
            augment_shift=0,
        )
        super().__init__(obs_shape, action_dim, cfg, seed=seed, device=device)

    def _make_optimisers(self) -> None:
        """Per-parameter Adam (no fused or foreach kernels), the authors' betas."""
        cfg, nets, adam = self.cfg, self.nets, torch.optim.Adam
        self.critic_opt = adam(
            nets.critic.parameters(),
            lr=cfg.critic_lr,
            betas=(cfg.critic_beta, 0.999),
            foreach=False,
        )
        # The reference hands the tied conv weights to the policy optimiser too; the detached
        # features leave their gradient None, so Adam skips them.
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
        # Critic.
        with torch.no_grad():
            _, next_action, next_log_pi, _ = nets.policy(batch.next_obs)
            next_q1, next_q2 = nets.critic_target(batch.next_obs, next_action)
            target = losses.td_target(
                batch.rewards,
                batch.terminated,
                cfg.gamma**cfg.n_step,
                next_q1,
                next_q2,
                self.alpha,
                next_log_pi,
            )
        q1, q2 = nets.critic(batch.obs, batch.actions)
        loss = losses.critic_loss(q1, q2, target)
        self.critic_opt.zero_grad()
        loss.backward()
        self.critic_opt.step()
        metrics = {"learner/critic_loss": loss.detach()}
        # Policy and alpha.
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
            metrics["learner/policy_loss"] = loss.detach()
        # Targets.
        if self.updates % cfg.target_update_every == 0:
            with torch.no_grad():
                for pairs, tau in (
                    (self._q_pairs, cfg.critic_tau),
                    (self._enc_pairs, cfg.encoder_tau),
                ):
                    for target_param, param in zip(*pairs, strict=True):
                        target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)
        # Reconstruction.
        if self.updates % cfg.decoder_update_every == 0:
            latent = nets.critic.encoder(batch.obs)
            reconstruction = nets.decoder(latent)
            loss, mse = losses.reconstruction_loss(
                reconstruction,
                losses.reconstruction_target(batch.obs),
                latent,
                cfg.decoder_latent_lambda,
            )
            self.encoder_opt.zero_grad()
            self.decoder_opt.zero_grad()
            loss.backward()
            self.encoder_opt.step()
            self.decoder_opt.step()
            metrics["learner/reconstruction_loss"] = loss.detach()
        return metrics
