"""The SAC-AE losses, one function each, citing what they implement.

SAC: Haarnoja et al. 2018 (arXiv:1812.05905). SAC-AE: Yarats et al. 2019 (arXiv:1910.01741) and the
authors' pytorch_sac_ae `sac_ae.py`, whose `train.py` settings are the recipe (docs/deviations.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learner.precision import full


def td_target(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    next_q1: torch.Tensor,
    next_q2: torch.Tensor,
    alpha: torch.Tensor,
    next_log_pi: torch.Tensor,
) -> torch.Tensor:
    """y = r + gamma * (1 - terminated) * (min(Q1', Q2') - alpha * log pi(a'|s')).

    Only termination removes the bootstrap; a time-limit truncation keeps it (Pardo et al. 2018).
    For n-step targets (Sutton & Barto 7.1; DrQ-v2) `reward` is the discounted sum of the n rewards,
    the next state is n steps on, and the caller passes gamma^n as `gamma`.
    """
    soft_value = torch.min(next_q1, next_q2) - alpha * next_log_pi
    return reward + gamma * (1.0 - terminated) * soft_value


def critic_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Twin soft Q regression: MSE(Q1, y) + MSE(Q2, y)."""
    return F.mse_loss(q1, target) + F.mse_loss(q2, target)


def policy_loss(
    alpha: torch.Tensor, log_pi: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor
) -> torch.Tensor:
    """SAC policy objective: E[alpha * log pi(a|s) - min(Q1, Q2)(s, a)], a ~ pi reparameterised."""
    return (alpha * log_pi - torch.min(q1, q2)).mean()


def alpha_loss(alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Temperature loss of the reference: alpha (not log alpha) times (-log pi - H_target), detached."""
    return (alpha * (-log_pi - target_entropy).detach()).mean()


def reconstruction_target(obs: torch.Tensor, bits: int = 5) -> torch.Tensor:
    """uint8 obs reduced to 5 bits, dequantised with uniform noise, centred (Kingma & Dhariwal 2018)."""
    bins = 2**bits
    # floor(obs / 2^(8-bits)) as a shift on the integers, then one fused pass. Dividing by a power
    # of two commutes with rounding, so this equals floor(obs/8)/32 + noise/32 - 0.5 bit for bit
    # (tests/test_learner.py checks it), at about half the time of the float version.
    x = full(torch.bitwise_right_shift(obs, 8 - bits))
    return (x + torch.rand_like(x)).div_(bins).sub_(0.5)


def reconstruction_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, latent: torch.Tensor, latent_lambda: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE reconstruction plus the RAE latent penalty lambda * mean(0.5 * ||z||^2) (Ghosh et al. 2019).

    Returns (total loss, reconstruction MSE).
    """
    mse = F.mse_loss(reconstruction, target)
    latent_penalty = (0.5 * latent.pow(2).sum(dim=1)).mean()
    return mse + latent_lambda * latent_penalty, mse


@torch.no_grad()
def soft_update(target: list[torch.Tensor], source: list[torch.Tensor], tau: float) -> None:
    """Polyak averaging target <- (1 - tau) * target + tau * source, one fused foreach call."""
    torch._foreach_lerp_(target, source, tau)
