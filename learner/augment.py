"""DrQ random-shift augmentation (Kostrikov et al. 2020, arXiv:2004.13649), on the learner's device.

Pad each image by `pad` pixels replicating its border, then crop a random HxW window: every sample
of the batch is shifted by its own integer (dy, dx) in [-pad, pad]^2, the same for all its channels
(the stacked frames move together). DrQ pads 84x84 images by 4. Off (pad 0) in the SAC-AE recipe.
"""

from __future__ import annotations

import torch


def random_shift(obs: torch.Tensor, pad: int) -> torch.Tensor:
    """obs [B, C, H, W] of any dtype (uint8 pixels here) shifted per sample; pad 0 returns obs itself.

    Replicate padding then a crop at offset (pad + dy, pad + dx) reads pixel (i + dy, j + dx)
    clamped to the image: one gather, no loop over the batch and no padded copy.
    """
    if pad == 0:
        return obs
    b, c, h, w = obs.shape
    device = obs.device
    shifts = torch.randint(-pad, pad + 1, (b, 2), device=device)
    rows = (torch.arange(h, device=device) + shifts[:, :1]).clamp_(0, h - 1)  # [B, H]
    cols = (torch.arange(w, device=device) + shifts[:, 1:]).clamp_(0, w - 1)  # [B, W]
    return obs[
        torch.arange(b, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
