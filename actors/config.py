"""Env and rollout-actor configuration."""

from __future__ import annotations

from dataclasses import dataclass

from learner.config import require


@dataclass(frozen=True)
class EnvConfig:
    """The CarRacing pixel pipeline."""

    env_id: str = "CarRacing-v3"
    """Gymnasium id of the environment (CarRacing-v3, unmodified dynamics and rewards)."""
    action_repeat: int = 4
    """Env frames per agent step; rewards are summed and repetition stops at an episode end."""
    frame_stack: int = 3
    """Frames stacked into one observation (channels first)."""
    crop: tuple[int, int, int, int] = (0, 84, 6, 90)
    """Rows top:bottom and cols left:right kept from the 96x96 frame (drops the HUD)."""
    fast_render: bool = True
    """Skip rendering of frames that action repeat drops and render the rest faster (byte-identical)."""

    def __post_init__(self) -> None:
        require(self.action_repeat >= 1, "env.action_repeat", self.action_repeat, ">= 1")
        require(self.frame_stack >= 1, "env.frame_stack", self.frame_stack, ">= 1")
        top, bottom, left, right = self.crop
        require(
            0 <= top < bottom <= 96 and 0 <= left < right <= 96,
            "env.crop",
            self.crop,
            "0 <= top < bottom <= 96 and 0 <= left < right <= 96",
        )

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        top, bottom, left, right = self.crop
        return (3, bottom - top, right - left)

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        c, h, w = self.frame_shape
        return (c * self.frame_stack, h, w)

    @property
    def action_dim(self) -> int:
        """Steer, gas, brake."""
        return 3


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
