"""The env registry and EnvSpec: `env.env_id` picks the pipeline; the spec is the env's, worked out once."""

from __future__ import annotations

import pytest
from toy_env import TOY_ENV_ID, DotReach

from actors import env as env_registry
from actors.carracing import CarRacingPipeline, carracing_spec
from actors.config import ActorConfig, EnvConfig
from actors.env import env_spec, make_env, register_env, registered_env_ids
from actors.spec import INFO_END_REASON, TIME_LIMIT, EnvSpec
from common.validation import ConfigError
from launch.config import RunConfig, TrainConfig
from launch.serial import train_serial
from learner.config import LearnerConfig
from replay.config import ReplayConfig

TOY = EnvConfig(env_id=TOY_ENV_ID, crop=(0, 24, 0, 24), frame_stack=1, action_repeat=1)


def test_make_env_dispatches_on_the_env_id():
    assert {"CarRacing-v3", TOY_ENV_ID} <= set(registered_env_ids())
    toy = make_env(TOY)
    try:
        assert isinstance(toy, DotReach)
        assert toy.reset(seed=0).shape == (3, 24, 24)
    finally:
        toy.close()
    car = make_env(EnvConfig())
    try:
        assert isinstance(car, CarRacingPipeline)
    finally:
        car.close()


def test_unknown_env_id_names_the_registered_ids():
    with pytest.raises(ConfigError, match="env.env_id") as err:
        make_env(EnvConfig(env_id="Pong-v5"))
    assert "'CarRacing-v3'" in str(err.value) and f"'{TOY_ENV_ID}'" in str(err.value)
    with pytest.raises(ConfigError, match="Pong-v5"):
        env_spec(EnvConfig(env_id="Pong-v5"))
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        make_env(EnvConfig(env_id="no_such_module:Thing-v0"))


def test_module_prefixed_id_imports_the_registering_module():
    """A process that never imported the toy (a Ray worker) builds it as "toy_env:DotReach-toy"."""
    env = make_env(EnvConfig(env_id=f"toy_env:{TOY_ENV_ID}", crop=(0, 16, 0, 16)))
    try:
        assert isinstance(env, DotReach) and env.spec.frame_shape == (3, 16, 16)
    finally:
        env.close()


def test_spec_is_the_envs_and_is_computed_once():
    cfg = EnvConfig()
    spec = env_spec(cfg)
    assert spec is env_spec(EnvConfig())  # kept per config
    assert spec.frame_shape == (3, 84, 84) and spec.obs_shape == (9, 84, 84)
    assert spec.action_dim == 3 and spec.frame_stack == 3
    assert spec.action_low == (-1.0, 0.0, 0.0) and spec.action_high == (1.0, 1.0, 1.0)
    assert spec.action_names == ("steer", "gas", "brake") and spec.fps == 50.0
    env = make_env(cfg)  # the class-level spec agrees with a built env's action space
    try:
        assert env.spec == spec
    finally:
        env.close()
    # The old EnvConfig properties ask the spec.
    assert (cfg.frame_shape, cfg.obs_shape, cfg.action_dim) == (
        spec.frame_shape,
        spec.obs_shape,
        spec.action_dim,
    )
    toy = env_spec(TOY)
    assert toy.obs_shape == (3, 24, 24) and toy.frame_stack == 1 and TOY.obs_shape == (3, 24, 24)


def test_spec_without_a_spec_function_probes_one_env():
    built = []

    def factory(cfg):
        built.append(cfg)
        return DotReach(cfg)

    register_env("Probed-toy", factory)
    try:
        cfg = EnvConfig(env_id="Probed-toy", crop=(0, 12, 0, 20), frame_stack=2)
        assert env_spec(cfg).obs_shape == (6, 12, 20)
        assert env_spec(cfg).obs_shape == (6, 12, 20)
        assert len(built) == 1
    finally:
        del env_registry._REGISTRY["Probed-toy"]


def test_a_taken_id_is_not_silently_replaced():
    register_env(TOY_ENV_ID, DotReach)  # the same factory again: a no-op
    with pytest.raises(ValueError, match=TOY_ENV_ID):
        register_env(TOY_ENV_ID, CarRacingPipeline)


def test_crop_outside_the_carracing_frame_is_a_config_error():
    EnvConfig(crop=(0, 100, 0, 100))  # the bound is the env's, checked by its spec
    with pytest.raises(ConfigError, match="env.crop"):
        carracing_spec(EnvConfig(crop=(0, 100, 0, 100)))
    with pytest.raises(ConfigError, match="env.crop"):
        env_spec(EnvConfig(crop=(0, 100, 0, 100)))
    with pytest.raises(ConfigError, match="env.crop"):
        EnvConfig(crop=(0, 84, 90, 6))


def test_envspec_derives_obs_shape_and_action_dim():
    spec = EnvSpec((3, 10, 12), 4, (-1.0, -1.0), (1.0, 1.0), ("a", "b"), 10.0)
    assert spec.obs_shape == (12, 10, 12) and spec.action_dim == 2
    assert hash(spec) == hash(EnvSpec((3, 10, 12), 4, (-1.0, -1.0), (1.0, 1.0), ("a", "b"), 10.0))


def test_toy_episode_end_says_time_limit():
    env = make_env(TOY)
    env.reset(seed=1)
    results = [env.step([0.0, 0.0, 0.0]) for _ in range(20)]
    assert results[-1].truncated and results[-1].info[INFO_END_REASON] == TIME_LIMIT


def test_serial_mode_runs_the_toy_selected_by_its_id(tmp_path):
    """The seam end to end: no env_factory, only `env.env_id`; updates and evaluations run."""
    cfg = TrainConfig(
        env=EnvConfig(env_id=TOY_ENV_ID, crop=(0, 16, 0, 16), frame_stack=2, action_repeat=1),
        actor=ActorConfig(envs_per_actor=1, seed_steps=50, weights_poll_every=1, chunk_steps=1),
        replay=ReplayConfig(capacity=2000, min_size=32, rate_tolerance=4),
        learner=LearnerConfig(batch_size=16, latent_dim=8, num_filters=4, hidden_dim=16),
        run=RunConfig(
            total_env_frames=200,
            run_dir=str(tmp_path / "run"),
            eval_every_frames=100,
            eval_episodes=2,
            weights_publish_every=1,
            log_every_s=0.5,
            progress_bar=False,
        ),
    )
    result = train_serial(cfg)
    assert result.env_frames >= 200 and result.updates > 100
    assert len(result.eval_returns) == 2


def test_pedal_map_needs_an_env_with_gas_and_brake():
    cfg = EnvConfig(env_id=TOY_ENV_ID, crop=(0, 16, 0, 16), action_map="pedal")
    with pytest.raises(ConfigError, match="env.action_map.*no gas and brake"):
        env_spec(cfg)
