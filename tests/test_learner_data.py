"""The learner's data path: DrQ shift augmentation, reusable host buffers, fp32 metric sums."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_learner import TINY, make_batch

from launch.update_loop import UpdateLoop
from learner.augment import random_shift
from learner.learning import SacAeLearner
from learner.transfer import HostToDevice

# -- augmentation ---------------------------------------------------------------------------------


def coordinates(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Pixel values that encode their own position: 1000 * row + col (+ 1e6 * channel)."""
    rows = torch.arange(height).view(1, 1, -1, 1) * 1000
    cols = torch.arange(width).view(1, 1, 1, -1)
    chans = torch.arange(channels).view(1, -1, 1, 1) * 1_000_000
    return (rows + cols + chans).expand(batch, channels, height, width).double().contiguous()


@pytest.mark.parametrize("shape", [(64, 9, 84, 84), (16, 3, 20, 31)])
def test_random_shift_is_a_clamped_per_sample_shift_within_pad(shape):
    pad = 4
    obs = coordinates(*shape)
    out = random_shift(obs, pad)
    assert out.shape == obs.shape and out.dtype == obs.dtype
    b, c, h, w = shape
    # Recover each sample's shift from an interior pixel, then check every pixel against it.
    centre = out[:, 0, h // 2, w // 2].long()
    dy, dx = centre // 1000 - h // 2, centre % 1000 - w // 2
    assert dy.abs().max() <= pad and dx.abs().max() <= pad
    rows = (torch.arange(h) + dy[:, None]).clamp(0, h - 1)
    cols = (torch.arange(w) + dx[:, None]).clamp(0, w - 1)
    expected = (
        rows[:, None, :, None] * 1000
        + cols[:, None, None, :]
        + torch.arange(c).view(1, -1, 1, 1) * 1_000_000
    )
    assert torch.equal(out, expected.double())
    if b >= 64:  # samples get their own shifts (81 possible): not all equal
        assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 10


def test_random_shift_keeps_uint8_and_off_is_identity():
    obs = torch.randint(0, 256, (4, 9, 84, 84), dtype=torch.uint8)
    assert random_shift(obs, 0) is obs
    out = random_shift(obs, 4)
    assert out.dtype == torch.uint8 and out.shape == obs.shape


def test_learner_with_augment_shift_updates_and_differs_from_recipe():
    batch = make_batch()
    states = []
    for shift in (0, 4):
        learner = SacAeLearner((9, 84, 84), 3, dataclasses.replace(TINY, augment_shift=shift))
        torch.manual_seed(0)
        for _ in range(2):
            metrics = learner.update(batch)
        assert np.isfinite(float(metrics["learner/critic_loss"]))
        states.append(learner.nets.state_dict())
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0])


# -- host buffers ---------------------------------------------------------------------------------


class FakeFence:
    """Stands in for a CUDA event: records that the copy was waited for."""

    def __init__(self, log: list):
        self.log = log
        self.log.append("recorded")

    def synchronize(self):
        self.log.append("waited")


def test_host_buffers_are_a_ring_reused_only_after_their_copy_completed():
    log: list = []
    h2d = HostToDevice(
        torch.device("cpu"), 8, 3, num_buffers=3, stage=True, fence=lambda: FakeFence(log)
    )
    buffers = [h2d.host_batch_buffer(3, (3, 84, 84)) for _ in range(3)]
    assert len({id(b.frames) for b in buffers}) == 3
    assert buffers[0].frames.shape == (8, 4, 3, 84, 84) and buffers[0].actions.shape == (8, 3)
    h2d(buffers[0])
    assert log == ["recorded"]
    again = h2d.host_batch_buffer(3, (3, 84, 84))  # the ring comes round to buffer 0
    assert again.frames is buffers[0].frames and log == ["recorded", "waited"]
    # A batch assembled elsewhere is staged into the next free buffer before its copy.
    foreign = make_batch()
    device_batch = h2d(foreign)
    assert log[-1] == "recorded" and buffers[1].frames is not foreign.frames
    np.testing.assert_array_equal(buffers[1].frames, foreign.frames)
    assert torch.equal(device_batch.obs, torch.from_numpy(foreign.frames[:, :3]).flatten(1, 2))


def test_update_from_a_host_buffer_equals_update_from_fresh_arrays():
    batch = make_batch()
    results = []
    for use_buffer in (False, True):
        learner = SacAeLearner((9, 84, 84), 3, TINY, seed=3)
        if use_buffer:
            out = learner.host_batch_buffer(frame_stack=3)
            for name in ("frames", "actions", "rewards", "terminated", "weights_version"):
                np.copyto(getattr(out, name), getattr(batch, name))
            batch_in = out
        else:
            batch_in = batch
        torch.manual_seed(0)
        results.append({k: v.clone() for k, v in learner.update(batch_in).items()})
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


# -- metric sums ----------------------------------------------------------------------------------


class Bf16MetricsLearner:
    """Emits bf16 metrics, as a learner computing losses under autocast could."""

    updates, weights_version = 0, 0

    def policy_weights(self):
        return None

    def update(self, batch):
        self.updates += 1
        return {"learner/x": torch.tensor(1.0, dtype=torch.bfloat16)}


def test_metrics_are_summed_in_fp32():
    loop = UpdateLoop(Bf16MetricsLearner(), publish=lambda w: None, publish_every=10_000)
    batch = make_batch(batch=1)
    for _ in range(300):
        loop.step(batch)
    # A bf16 running sum of 300 ones sticks at 256, which would report 0.853.
    assert loop.report()["learner/x"] == 1.0
