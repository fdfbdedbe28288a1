"""The learning test under bf16: the same DotReach budget and threshold as tests/test_learning.py.

`precision=auto` already runs bf16 on CPUs with native bf16 (and on CUDA); this runs bf16 explicitly
so that every machine checks that bf16 numerics learn (emulated bf16 is slower, still well in budget).
"""

from __future__ import annotations

import dataclasses

import pytest
from test_learning import HANG_GUARD_S, RETURN_THRESHOLD, toy_config
from toy_env import DotReach

from launch.serial import train_serial


@pytest.mark.extended
@pytest.mark.timeout(HANG_GUARD_S + 300)
def test_serial_sac_ae_learns_dot_reach_in_bf16(tmp_path):
    cfg = toy_config(tmp_path, total_frames=4000)
    cfg = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, precision="bf16"))
    result = train_serial(cfg, env_factory=DotReach, max_seconds=HANG_GUARD_S)
    assert result.updates >= 3500, f"only {result.updates} updates ran"
    assert result.eval_returns, "no evaluation ran"
    assert result.eval_returns[-1] > RETURN_THRESHOLD, f"eval return {result.eval_returns[-1]:.2f}"
