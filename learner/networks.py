"""SAC-AE networks (Yarats et al. 2019, arXiv:1910.01741, and the authors' pytorch_sac_ae).

The conv trunk is one module object, `ConvTrunk`, that the critic's encoder and the policy's encoder
both hold: the policy and critic share the very same conv parameters. Each encoder has its own
Linear+LayerNorm+tanh head. The target critic is a deep copy with its own trunk.

Under the learner's bf16 autocast only the pixel side runs in bf16: the convs, the encoders' Linear
and the decoder. From the LayerNorm on (the latent, the policy MLP and its Gaussian, the Q heads)
autocast is switched off inside the modules, so those always compute in fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from learner.config import LearnerConfig
from learner.precision import compute_dtype, full, full_precision


def conv_output_sizes(height: int, width: int, num_layers: int) -> list[tuple[int, int]]:
    """Spatial sizes after each 3x3 conv (stride 2, then 1), no padding: 84 -> 41 -> 39 -> 37 -> 35."""
    sizes = []
    for layer in range(num_layers):
        stride = 2 if layer == 0 else 1
        height, width = (height - 3) // stride + 1, (width - 3) // stride + 1
        if height < 1 or width < 1:
            raise ValueError(f"input too small for {num_layers} conv layers")
        sizes.append((height, width))
    return sizes


def init_weights(module: nn.Module) -> None:
    """The reference init: orthogonal Linear with zero bias; delta-orthogonal conv kernels.

    Delta-orthogonal (Xiao et al. 2018): all taps zero except an orthogonal centre tap, ReLU gain.
    """
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        assert module.weight.shape[2] == module.weight.shape[3]
        with torch.no_grad():
            module.weight.zero_()
            module.bias.zero_()
            centre = module.weight.shape[2] // 2
            nn.init.orthogonal_(
                module.weight[:, :, centre, centre], gain=nn.init.calculate_gain("relu")
            )


class ConvTrunk(nn.Module):
    """The conv layers of the encoder, applied to uint8 pixels scaled to [0, 1]."""

    def __init__(self, obs_shape: tuple[int, int, int], num_filters: int, num_layers: int):
        super().__init__()
        channels, height, width = obs_shape
        layers = [nn.Conv2d(channels, num_filters, 3, stride=2)]
        layers += [nn.Conv2d(num_filters, num_filters, 3, stride=1) for _ in range(num_layers - 1)]
        self.convs = nn.ModuleList(layers)
        self.spatial_sizes = conv_output_sizes(height, width, num_layers)
        out_h, out_w = self.spatial_sizes[-1]
        self.output_dim = num_filters * out_h * out_w
        # The layout of the conv input; `SacAeNetworks.use_channels_last` switches it with the weights.
        self.memory_format = torch.contiguous_format

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # uint8 straight to the conv dtype and layout, then scaled in place: one pass fewer than
        # float() / 255 and the cast autocast would add. Every uint8 / 255 is the same bf16 number
        # either way (checked for all 256 values), so the conv input is bit-identical.
        h = obs.to(
            dtype=compute_dtype(obs.device.type), memory_format=self.memory_format, copy=True
        )
        h = h.div_(255.0)
        for conv in self.convs:
            h = F.relu(conv(h), inplace=True)  # conv backward needs its input, not its output
        return h.flatten(1)


class Encoder(nn.Module):
    """Conv trunk (possibly shared) followed by this encoder's own Linear, LayerNorm and tanh."""

    def __init__(self, trunk: ConvTrunk, latent_dim: int):
        super().__init__()
        self.trunk = trunk
        self.fc = nn.Linear(trunk.output_dim, latent_dim)
        self.ln = nn.LayerNorm(latent_dim)

    def head(self, conv_features: torch.Tensor) -> torch.Tensor:
        h = self.fc(conv_features)  # bf16 under autocast: a 39200 x 50 matmul
        with full_precision(h):
            return torch.tanh(self.ln(full(h)))

    def forward(self, obs: torch.Tensor, detach_trunk: bool = False) -> torch.Tensor:
        h = self.trunk(obs)
        return self.head(h.detach() if detach_trunk else h)


class Decoder(nn.Module):
    """Mirror of the trunk: Linear+ReLU, stride-1 transposed convs+ReLU, a stride-2 one to the input shape."""

    def __init__(self, obs_shape: tuple[int, int, int], trunk: ConvTrunk, latent_dim: int):
        super().__init__()
        channels, height, width = obs_shape
        num_filters = trunk.convs[0].out_channels
        self.start_shape = (num_filters, *trunk.spatial_sizes[-1])
        self.fc = nn.Linear(latent_dim, trunk.output_dim)
        num_layers = len(trunk.convs)
        self.deconvs = nn.ModuleList(
            [
                nn.ConvTranspose2d(num_filters, num_filters, 3, stride=1)
                for _ in range(num_layers - 1)
            ]
        )
        first_h, first_w = trunk.spatial_sizes[0]
        # output_padding recovers the row/col that the stride-2 conv floored away.
        pad = (height - ((first_h - 1) * 2 + 3), width - ((first_w - 1) * 2 + 3))
        self.deconvs.append(
            nn.ConvTranspose2d(num_filters, channels, 3, stride=2, output_padding=pad)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction in fp32 (computed in bf16 under autocast)."""
        h = F.relu(self.fc(z), inplace=True).view(-1, *self.start_shape)
        for deconv in self.deconvs[:-1]:
            h = F.relu(deconv(h), inplace=True)
        return full(self.deconvs[-1](h))


def mlp(input_dim: int, hidden_dim: int, output_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(input_dim, hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, output_dim),
    )


def squash(mu: torch.Tensor, pi: torch.Tensor, log_pi: torch.Tensor | None):
    """tanh squashing with the change-of-variables correction (SAC paper, appendix C)."""
    mu, pi = torch.tanh(mu), torch.tanh(pi)
    if log_pi is not None:
        # The reference's form: log(1 - tanh(u)^2 + 1e-6), clamped at 0 from below by relu.
        log_pi = log_pi - torch.log(F.relu(1 - pi.pow(2)) + 1e-6).sum(-1, keepdim=True)
    return mu, pi, log_pi


class Policy(nn.Module):
    """Tanh-Gaussian policy on the latent of its own encoder head."""

    def __init__(self, encoder: Encoder, action_dim: int, cfg: LearnerConfig):
        super().__init__()
        self.encoder = encoder
        self.trunk = mlp(cfg.latent_dim, cfg.hidden_dim, 2 * action_dim)
        self.log_std_min, self.log_std_max = cfg.log_std_min, cfg.log_std_max

    def from_latent(self, z: torch.Tensor, sample: bool = True):
        """Return (tanh(mu), action, log_pi, log_std); action and log_pi are None when sample=False.

        Always fp32: log_pi of a tanh-squashed sample needs 1 - tanh(u)^2 near 0, which bf16 loses.
        """
        with full_precision(z):
            return self._from_latent(full(z), sample)

    def _from_latent(self, z: torch.Tensor, sample: bool):
        mu, log_std = self.trunk(z).chunk(2, dim=-1)
        # Bounded log-std: tanh then an affine map onto [log_std_min, log_std_max].
        log_std = torch.tanh(log_std)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        if not sample:
            return torch.tanh(mu), None, None, log_std
        noise = torch.randn_like(mu)
        pi = mu + noise * log_std.exp()
        # Gaussian log-density of pi, written in terms of the standard-normal noise.
        log_pi = (-0.5 * noise.pow(2) - log_std).sum(-1, keepdim=True) - 0.5 * math.log(
            2 * math.pi
        ) * mu.shape[-1]
        mu, pi, log_pi = squash(mu, pi, log_pi)
        return mu, pi, log_pi, log_std

    def forward(self, obs: torch.Tensor, sample: bool = True, detach_trunk: bool = False):
        return self.from_latent(self.encoder(obs, detach_trunk=detach_trunk), sample=sample)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Actions in [-1, 1] for a batch of uint8 observations: tanh(mu), or a sample."""
        mu, pi, _, _ = self.forward(obs, sample=not deterministic)
        return mu if deterministic else pi


class QFunction(nn.Module):
    def __init__(self, latent_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.net = mlp(latent_dim + action_dim, hidden_dim, 1)

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        # Always fp32: near Q = 300, bf16 steps are 1-2 units, as large as a step's reward.
        with full_precision(z):
            return self.net(torch.cat([full(z), full(action)], dim=-1))


class Critic(nn.Module):
    """Twin Q heads on the latent of the critic's encoder (which owns the shared conv trunk)."""

    def __init__(self, encoder: Encoder, action_dim: int, cfg: LearnerConfig):
        super().__init__()
        self.encoder = encoder
        self.q1 = QFunction(cfg.latent_dim, action_dim, cfg.hidden_dim)
        self.q2 = QFunction(cfg.latent_dim, action_dim, cfg.hidden_dim)

    def from_latent(
        self, z: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q1(z, action), self.q2(z, action)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach_trunk: bool = False):
        return self.from_latent(self.encoder(obs, detach_trunk=detach_trunk), action)


class SacAeNetworks(nn.Module):
    """All SAC-AE networks. `policy.encoder.trunk is critic.encoder.trunk`: one conv parameter set."""

    def __init__(self, obs_shape: tuple[int, int, int], action_dim: int, cfg: LearnerConfig):
        super().__init__()
        trunk = ConvTrunk(obs_shape, cfg.num_filters, cfg.num_conv_layers)
        self.critic = Critic(Encoder(trunk, cfg.latent_dim), action_dim, cfg)
        self.policy = Policy(Encoder(trunk, cfg.latent_dim), action_dim, cfg)
        self.decoder = Decoder(obs_shape, trunk, cfg.latent_dim)
        self.apply(init_weights)
        self.critic_target = Critic(
            Encoder(ConvTrunk(obs_shape, cfg.num_filters, cfg.num_conv_layers), cfg.latent_dim),
            action_dim,
            cfg,
        )
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        assert self.policy.encoder.trunk is self.critic.encoder.trunk

    def use_channels_last(self) -> SacAeNetworks:
        """Conv weights and conv inputs in channels-last layout (same values, faster kernels)."""
        self.to(memory_format=torch.channels_last)
        for trunk in (self.critic.encoder.trunk, self.critic_target.encoder.trunk):
            trunk.memory_format = torch.channels_last
        return self


def build_policy(obs_shape: tuple[int, int, int], action_dim: int, cfg: LearnerConfig) -> Policy:
    """The actors' CPU copy: an encoder (trunk + policy head) and the policy MLP, nothing else."""
    trunk = ConvTrunk(obs_shape, cfg.num_filters, cfg.num_conv_layers)
    policy = Policy(Encoder(trunk, cfg.latent_dim), action_dim, cfg)
    policy.apply(init_weights)
    return policy
