"""The env registry: `env.env_id` picks the pipeline, and `env_spec` says its shapes once.

A new env is one module with a pipeline class (the `EnvPipeline` methods of `actors/spec.py`) and
one `register_env(env_id, factory)` call; `make_env(cfg)` then builds it for every actor, the
evaluation and serial mode. CarRacing-v3 (`actors/carracing.py`) is registered here; the DotReach
toy registers itself in `tests/toy_env.py`.

Registration is per process. An id written `"module:EnvId"` imports `module` first (the
Gymnasium convention), so that processes which never imported the registering module (Ray
workers) can build the env as well.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from actors.carracing import CARRACING_ID, CarRacingPipeline, carracing_spec
from actors.config import EnvConfig
from actors.spec import EnvPipeline, EnvSpec, StepResult, map_action
from common.validation import ConfigError, require

__all__ = [
    "CarRacingPipeline",
    "EnvPipeline",
    "EnvSpec",
    "StepResult",
    "env_spec",
    "make_env",
    "map_action",
    "register_env",
    "registered_env_ids",
]

EnvFactory = Callable[[EnvConfig], EnvPipeline]
SpecFn = Callable[[EnvConfig], EnvSpec]


@dataclass(frozen=True)
class _Registration:
    factory: EnvFactory
    spec: SpecFn | None
    """The spec without building an env; None: `env_spec` builds one env and reads its `spec`."""


_REGISTRY: dict[str, _Registration] = {}
_SPECS: dict[EnvConfig, EnvSpec] = {}


def register_env(env_id: str, factory: EnvFactory, spec: SpecFn | None = None) -> None:
    """Make `env_id` buildable by `make_env`. Registering the same factory again is a no-op.

    `spec(cfg)` gives the env's spec without building one (optional: an env is cheap to probe).
    """
    old = _REGISTRY.get(env_id)
    if old is not None and old.factory is not factory:
        raise ValueError(f"env id {env_id!r} is already registered to {old.factory!r}")
    _REGISTRY[env_id] = _Registration(factory, spec)
    for cfg in [c for c in _SPECS if c.env_id == env_id]:
        del _SPECS[cfg]


def registered_env_ids() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def _registration(env_id: str) -> _Registration:
    """The registration of `env_id`, importing the module of a "module:EnvId" id first."""
    module, sep, name = env_id.rpartition(":")
    if sep and name not in _REGISTRY:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(
                f"config field `env.env_id` = {env_id!r}: cannot import {module!r} ({err}); "
                "check that it is on the Python path of every process"
            ) from err
    key = name if sep else env_id
    known = ", ".join(repr(k) for k in registered_env_ids())
    require(
        key in _REGISTRY,
        "env.env_id",
        env_id,
        f"a registered env id ({known}), or 'module:EnvId' for an env that module registers",
    )
    return _REGISTRY[key]


def make_env(cfg: EnvConfig) -> EnvPipeline:
    """Build the pipeline registered under `cfg.env_id`."""
    return _registration(cfg.env_id).factory(cfg)


def env_spec(cfg: EnvConfig) -> EnvSpec:
    """The spec of the env `cfg` selects, worked out once per config and kept."""
    spec = _SPECS.get(cfg)
    if spec is None:
        registration = _registration(cfg.env_id)
        if registration.spec is not None:
            spec = registration.spec(cfg)
        else:
            probe = registration.factory(cfg)
            try:
                spec = probe.spec
            finally:
                probe.close()
        require(
            cfg.action_map != "pedal" or spec.pedal is not None,
            "env.action_map",
            cfg.action_map,
            f"'affine': {cfg.env_id!r} has no gas and brake actions for a pedal axis",
        )
        _SPECS[cfg] = spec
    return spec


register_env(CARRACING_ID, CarRacingPipeline, spec=carracing_spec)
