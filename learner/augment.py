"""DrQ random-shift augmentation (Kostrikov et al. 2020, arXiv:2004.13649), on the learner's device.

Pad each image by `pad` pixels replicating its border, then crop a random HxW window: every sample
of the batch is shifted by its own integer (dy, dx) in [-pad, pad]^2, the same for all its channels
(the stacked frames move together). DrQ pads 84x84 images by 4. Off (pad 0) in the SAC-AE recipe.
"""

from __future__ import annotations

import torch


def random_shift(obs: torch.Tensor, pad: int) -> torch.Tensor:
    """obs [B, C, H, W] of any dtype (uint8 pixels here) shifted per sample; pad 0 returns obs itself.

    Replicate padding then a crop at offset (pad + dy, pad + dx): output pixel (i, j) is input pixel
    (i + dy, j + dx) clamped to the image. Two implementations of the same draw: on the CPU, window
    copies from one padded batch; elsewhere one gather (a loop of B copies would be B launches).
    """
    if pad == 0:
        return obs
    shifts = torch.randint(-pad, pad + 1, (obs.shape[0], 2), device=obs.device)
    if obs.device.type == "cpu":
        return shift_by_copies(obs, shifts, pad)
    return shift_by_gather(obs, shifts)


def shift_by_gather(obs: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """One advanced-indexing gather; no padded copy. On the CPU it computes an offset from four
    index tensors for every output pixel, which cost 15% of a CPU learner's update (py-spy)."""
    b, c, h, w = obs.shape
    device = obs.device
    rows = (torch.arange(h, device=device) + shifts[:, :1]).clamp_(0, h - 1)  # [B, H]
    cols = (torch.arange(w, device=device) + shifts[:, 1:]).clamp_(0, w - 1)  # [B, W]
    return obs[
        torch.arange(b, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def shift_by_copies(obs: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Replicate-pad the batch with two index_selects (whole rows, then whole columns), then copy
    each sample's window: B strided copies of contiguous rows instead of a per-pixel gather."""
    b, c, h, w = obs.shape
    rows = torch.arange(-pad, h + pad).clamp_(0, h - 1)
    cols = torch.arange(-pad, w + pad).clamp_(0, w - 1)
    padded = obs.index_select(2, rows).index_select(3, cols)
    out = torch.empty_like(obs)
    for i, (dy, dx) in enumerate((shifts + pad).tolist()):
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out
