"""Env and rollout-actor configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from common.validation import require

if TYPE_CHECKING:
    from actors.spec import EnvSpec


@dataclass(frozen=True)
class EnvConfig:
    """The env pipeline: which env, action repeat, crop, frame stack, and CarRacing's training aids.

    The shapes and action bounds are the env's: `actors.env.env_spec(cfg)` works them out.
    """

    env_id: str = "CarRacing-v3"
    """Registered env id (actors/env.py), or 'module:EnvId' to import the module that registers it. CarRacing-v3: unmodified dynamics and rewards."""
    action_repeat: int = 4
    """Env frames per agent step; rewards are summed and repetition stops at an episode end."""
    frame_stack: int = 3
    """Frames stacked into one observation (channels first)."""
    crop: tuple[int, int, int, int] = (0, 84, 6, 90)
    """Rows top:bottom and cols left:right kept from the frame (CarRacing: 96x96; this default, the recipe's, drops the HUD, which the CarRacing presets keep)."""
    image_size: int = 0
    """Shrink the cropped frame to image_size x image_size by area averaging (a cheaper learner update, or the recipe's 84x84 from the whole frame as in the CarRacing presets); 0 = keep the crop's size (the recipe). Part of the policy's input, so evaluation uses it too."""
    fast_render: bool = True
    """Skip rendering of frames that action repeat drops and render the rest faster (byte-identical)."""
    no_progress_steps: int = 0
    """Training aid: end a training episode after this many agent steps without a new track tile, as a truncation (bootstraps); 0 = off (the recipe). Never applied in evaluation."""
    wrong_way_steps: int = 0
    """Training aid: end a training episode after this many agent steps in a row driven against the lap (CarRacing), as a terminal, so the critic learns what turning round costs (a pixel policy cannot see that it did: visited tiles look like new ones, so a truncation would bootstrap from a state like any other); 0 = off (the recipe, and every preset: with 10 on carracing-cpu three seeds averaged 578 against 665-740 without it, docs/deviations.md item 14). Never applied in evaluation."""
    skip_zoom: bool = False
    """Training aid: stand still through the 50-frame camera zoom-in inside reset(); those frames count as env frames of the episode's first step. Never applied in evaluation."""
    action_map: Literal["affine", "pedal"] = "affine"
    """How the policy's [-1, 1] actions become the env's: affine = one axis per env action mapped onto its Box (the recipe); pedal = steer and one signed axis for gas (> 0) or brake (< 0), never both (CarRacing). Part of the policy, so evaluation uses it too."""

    def __post_init__(self) -> None:
        require(self.action_repeat >= 1, "env.action_repeat", self.action_repeat, ">= 1")
        require(self.frame_stack >= 1, "env.frame_stack", self.frame_stack, ">= 1")
        top, bottom, left, right = self.crop
        # The upper bound is the env's frame size, checked by its spec (CarRacing: 96).
        require(
            0 <= top < bottom and 0 <= left < right,
            "env.crop",
            self.crop,
            "0 <= top < bottom and 0 <= left < right",
        )
        side = min(bottom - top, right - left)
        require(
            self.image_size == 0 or 1 <= self.image_size <= side,
            "env.image_size",
            self.image_size,
            f"0 (keep the crop) or 1..{side} (it only shrinks the crop)",
        )
        require(
            self.action_map in ACTION_MAPS,
            "env.action_map",
            self.action_map,
            f"one of {', '.join(ACTION_MAPS)}",
        )
        require(
            self.no_progress_steps >= 0,
            "env.no_progress_steps",
            self.no_progress_steps,
            ">= 0 (0 = off)",
        )
        require(
            self.wrong_way_steps >= 0,
            "env.wrong_way_steps",
            self.wrong_way_steps,
            ">= 0 (0 = off)",
        )

    def for_evaluation(self) -> EnvConfig:
        """This pipeline with every training aid off: evaluation always sees the stock env."""
        return dataclasses.replace(self, no_progress_steps=0, wrong_way_steps=0, skip_zoom=False)

    # Kept for callers that predate `env_spec`; each asks the env's spec.
    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """Deprecated: use `actors.env.env_spec(cfg).frame_shape`."""
        return self._spec().frame_shape

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        """Deprecated: use `actors.env.env_spec(cfg).obs_shape`."""
        return self._spec().obs_shape

    @property
    def action_dim(self) -> int:
        """Deprecated: use `actors.env.env_spec(cfg).action_dim`."""
        return self._spec().action_dim

    def _spec(self) -> EnvSpec:
        from actors.env import env_spec  # the registry imports this module

        return env_spec(self)


@dataclass(frozen=True)
class ActorConfig:
    """Rollout actors: how they act, when they fetch weights and how they ship data."""

    num_actors: int = 0
    """Rollout actor processes; 0 means one per CPU core left after the learner and the shards."""
    envs_per_actor: int = 2
    """Envs each actor steps together with one batched policy call."""
    seed_steps: int = 1000
    """Agent steps of uniform random actions before the policy acts (split across actors)."""
    weights_poll_every: int = 50
    """Agent steps (per env) between checks for newer policy weights."""
    chunk_steps: int = 25
    """Agent steps (per env) shipped to the replay shard in one chunk."""
    max_inflight_sends: int = 2
    """Chunks in flight to the replay; the actor waits when the replay is slower."""
    send_timeout_s: float = 300.0
    """Longest wait on one replay send before the actor reports the shard as unresponsive."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Acting precision on the actors' CPUs; auto = fp32, measured faster at the actors' small batches (`sacae bench env` prints both)."""

    def __post_init__(self) -> None:
        require(self.num_actors >= 0, "actor.num_actors", self.num_actors, ">= 0 (0 = auto)")
        require(self.envs_per_actor >= 1, "actor.envs_per_actor", self.envs_per_actor, ">= 1")
        require(self.seed_steps >= 0, "actor.seed_steps", self.seed_steps, ">= 0")
        require(
            self.weights_poll_every >= 1,
            "actor.weights_poll_every",
            self.weights_poll_every,
            ">= 1",
        )
        require(self.chunk_steps >= 1, "actor.chunk_steps", self.chunk_steps, ">= 1")
        require(
            self.max_inflight_sends >= 1,
            "actor.max_inflight_sends",
            self.max_inflight_sends,
            ">= 1",
        )
        require(self.send_timeout_s > 0, "actor.send_timeout_s", self.send_timeout_s, "> 0")
        require(
            self.precision in ACTING_PRECISIONS,
            "actor.precision",
            self.precision,
            f"one of {', '.join(ACTING_PRECISIONS)}",
        )

    def acting_precision(self) -> str:
        """fp32 or bf16. `auto` is fp32: a policy call at the actors' batch (`envs_per_actor`, 2)
        is too small for bf16 to pay for its casts; bf16 autocast measured 8% slower per actor
        (937.5 vs 1014.4 env frames/s, `sacae bench env`, 2026-11-25, a Xeon with AMX)."""
        return "fp32" if self.precision == "auto" else self.precision


ACTING_PRECISIONS = ("auto", "fp32", "bf16")
ACTION_MAPS = ("affine", "pedal")
