"""Ray-local integration of `sacae train`: end to end on CarRacing (smoke preset), resume, and faults."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import ray
from conftest import train_with_fault

from launch.config import smoke
from launch.run_dir import RunDir, load_checkpoint
from launch.serial import train_serial
from launch.train import Driver, LearnerDiedError, plan_topology

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def small_config(tmp_path, total_frames: int, **run_overrides):
    cfg = smoke()
    fields = {
        "run_dir": str(tmp_path / "run"),
        "total_env_frames": total_frames,
        "progress_bar": False,
        "eval_every_frames": total_frames,
        **run_overrides,
    }
    run = dataclasses.replace(cfg.run, **fields)
    return dataclasses.replace(cfg, run=run)


def make_driver(cfg, resume=None) -> Driver:
    topology = plan_topology(cfg, cpus=4, gpus=0)
    return Driver(cfg, RunDir.create(cfg), topology, resume)


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_end_to_end_smoke_then_resume(tmp_path, ray_six_cpus):
    cfg = small_config(tmp_path, total_frames=1200)
    driver = make_driver(cfg)
    counters = driver.train()
    driver.close()
    run_dir = tmp_path / "run"
    assert counters.env_frames >= 1200 and counters.env_steps * 4 >= counters.env_frames
    rows = read_metrics(run_dir)
    # Updates ran in proportion to the data (1 per agent step): the rate limiter holds actors
    # that run ahead, so the updates trail the stored transitions by at most min_size, the
    # shards' tolerance and the batches in the sampler and transfer pipeline (about 145 here;
    # exactly bounded in tests/test_replay.py). With the ~300 transitions of this run that is
    # above half of those past min_size, a floor that a stalled learner misses whatever the
    # machine's speed.
    stored = [row["replay/size"] for row in rows if "replay/size" in row][-1]
    assert counters.updates >= (stored - cfg.replay.min_size) / 2 > 50, (counters, stored)
    keys = set().union(*rows)
    for key in (
        "learner/critic_loss",
        "learner/alpha",
        "learner/policy_lag",
        "actors/env_frames_per_s",
        "replay/size",
        "sampler/wait_s",
        "eval/return_mean",
        "eval/q_bias",
        "counters/env_frames",
    ):
        assert key in keys, key
    documented = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    for key in keys - {"env_frames", "time"}:
        # Per-shard keys replay/shard<i>/<name> are documented under their total replay/<name>.
        total = re.sub(r"^replay/shard\d+/", "replay/", key)
        assert f"`{total}`" in documented, f"{key} is not listed in docs/metrics.md"
    assert list((run_dir / "tensorboard").glob("events.*"))
    assert list((run_dir / "eval").glob("eval_*.mp4"))
    assert (run_dir / "eval" / "learning_curve.png").stat().st_size > 0
    assert list((run_dir / "eval").glob("reconstruction_*.png"))
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["counters"]["updates"] == counters.updates
    assert json.loads((run_dir / "config.json").read_text())["learner"]["batch_size"] == 16

    # Serial mode on the same config writes the same metric keys (the run core is shared).
    # 400 frames: 36 updates and an evaluation write every key (a serial smoke update takes
    # ~120 ms on a 2-core AVX2 machine, and the keys do not grow with the budget).
    serial_run = dict(run_dir=str(tmp_path / "serial"), serial=True)
    serial_run.update(total_env_frames=400, eval_every_frames=400)
    serial_cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **serial_run))
    train_serial(serial_cfg)
    serial_keys = set().union(*read_metrics(tmp_path / "serial"))
    # Per-shard keys follow the shard count; episode keys need an episode that ended (the
    # single serial actor drives one 1000-frame episode to its end, the two actors do not).
    other = re.compile(r"^replay/shard\d+/|^actors/(episode_|end_|tiles_)")
    assert {k for k in serial_keys if not other.match(k)} == {k for k in keys if not other.match(k)}

    # Resume: counters continue from the checkpoint and learning goes on.
    resumed_cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, total_env_frames=1800))
    driver = make_driver(resumed_cfg, resume=run_dir)
    resumed = driver.train()
    driver.close()
    assert resumed.env_frames >= 1800
    assert resumed.updates > counters.updates
    assert load_checkpoint(run_dir)["counters"]["env_frames"] == resumed.env_frames


def test_learner_death_stops_the_run_with_the_resume_command(tmp_path, ray_six_cpus):
    cfg = small_config(tmp_path, total_frames=100_000, eval_every_frames=0)
    driver = make_driver(cfg)
    # Once the first checkpoint is written (every 100 updates in the smoke preset), kill the learner.
    with pytest.raises(LearnerDiedError, match="continue with: sacae train --resume") as err:
        train_with_fault(
            driver,
            lambda: driver.run.latest_checkpoint() is not None,
            lambda: ray.kill(driver.learner),
        )
    driver.close()
    assert "ckpt_" in str(err.value), "the message names the last checkpoint"
    assert load_checkpoint(tmp_path / "run")["counters"]["updates"] >= 100


def test_toy_env_plugs_in_through_the_registry_in_both_modes(tmp_path, ray_six_cpus):
    """The env seam: DotReach (tests/toy_env.py) runs distributed and serial by `env.env_id` alone.

    "toy_env:DotReach-toy" makes every Ray worker import the module that registers it; conftest
    puts tests/ on the workers' Python path, as a user's package would be installed.
    """
    cfg = small_config(tmp_path, total_frames=600, eval_every_frames=300)
    cfg = dataclasses.replace(
        cfg,
        env=dataclasses.replace(
            cfg.env, env_id="toy_env:DotReach-toy", crop=(0, 24, 0, 24), action_repeat=1
        ),
        # The n-step seam across Ray too: shards that ignored it would send S + 1 frames into
        # the learner's S + 2 frame buffers, and no update would run.
        learner=dataclasses.replace(cfg.learner, n_step=2),
    )
    driver = make_driver(cfg)
    assert driver.spec.frame_shape == (3, 24, 24)
    counters = driver.train()
    driver.close()
    assert counters.env_frames >= 600 and counters.updates > 0
    assert [frames for frames, *_ in driver.curve], "no evaluation ran on the toy env"
    rows = read_metrics(tmp_path / "run")
    # 20-step episodes: actors finished some, each reported with its return.
    assert any("actors/episode_return" in row for row in rows)

    serial_cfg = dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, run_dir=str(tmp_path / "serial"), serial=True)
    )
    result = train_serial(serial_cfg)
    assert result.updates > 0 and result.eval_returns
