"""Evaluation: the deterministic policy (tanh of the mean) on fresh tracks, and an optional video.

`evaluate_policy` is plain Python; `EvalActor` is its thin Ray wrapper (1 CPU, 1 torch thread).
Episode seeds are spawned under `EVAL_SEED_DOMAIN`, so evaluation never drives a training track,
and the env is built with every training aid off (`EnvConfig.for_evaluation`): always the stock env.
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import ray
import torch

from actors.collector import eval_seeds
from actors.config import EnvConfig
from actors.env import EnvFactory, env_spec, make_env
from actors.spec import EnvPipeline, EnvSpec, end_reason, speed, tiles_visited, wrong_way
from learner.config import LearnerConfig
from learner.networks import Policy, build_policy
from learner.weights import PolicyWeights, load_policy_state

PROBE_EVERY_STEPS = 25
"""Agent steps between two value probes of an evaluation episode (CarRacing: 10 per episode)."""
WRONG_WAY_TRACK = 0.1
"""An episode that drove at least this fraction of its steps against the lap direction counts as a
wrong-way track (CarRacing: 25 agent steps, 2 s; a spin and its recovery take less)."""


@dataclass(frozen=True)
class ValueProbes:
    """States an evaluation went through, with the action it took and what followed: the
    learner's Q on them against the discounted return observed (over- or underestimation, as in
    TD3's Fig. 1 and REDQ's bias plots).

    A time limit cuts the observed return short; the rest is bootstrapped with the learner's own
    Q at the episode's last state, weighted by `tail_discount` (0 after a true termination), the
    way the critic's target treats a time limit.
    """

    obs: np.ndarray
    """uint8 [n, C*S, H, W] probe observations."""
    actions: np.ndarray
    """float32 [n, A] the deterministic actions taken there."""
    returns_to_end: np.ndarray
    """float32 [n] discounted sum of the rewards from the probe to the episode's end."""
    tail_discount: np.ndarray
    """float32 [n] gamma ** (steps from the probe to the end), 0 when the episode terminated."""
    end_index: np.ndarray
    """int64 [n] row of `end_obs` for the probe's episode."""
    end_obs: np.ndarray
    """uint8 [m, C*S, H, W] each episode's last observation."""
    end_actions: np.ndarray
    """float32 [m, A] the deterministic action at it."""

    def observed_values(self, end_q: np.ndarray) -> np.ndarray:
        """What each probe's Q should equal: the observed return plus the bootstrapped tail."""
        return self.returns_to_end + self.tail_discount * end_q[self.end_index]

    def metrics(self, q: np.ndarray, end_q: np.ndarray) -> dict[str, float]:
        """`eval/q_mean`, `eval/observed_value_mean` and their difference `eval/q_bias`, given
        the critic's values on the probes (`q`) and on the episodes' last states (`end_q`)."""
        observed = self.observed_values(end_q)
        return {
            "eval/q_mean": float(np.mean(q)),
            "eval/observed_value_mean": float(np.mean(observed)),
            "eval/q_bias": float(np.mean(q - observed)),
        }


@dataclass(frozen=True)
class EvalResult:
    mean_return: float
    std_return: float
    returns: list[float]
    lengths: list[int]
    """Episode lengths in agent steps."""
    video_path: str | None
    """The file written (a .gif when MP4 could not be written), or None."""
    end_reasons: list[str] = field(default_factory=list)
    """Why each episode ended (`actors.spec.END_REASONS`)."""
    tiles_visited_fractions: list[float] = field(default_factory=list)
    """Fraction of the track's tiles each episode visited (NaN for an env without tiles)."""
    wrong_way_fractions: list[float] = field(default_factory=list)
    """Fraction of each episode's agent steps driven against the lap direction (NaN for an env
    without a track)."""
    speeds: list[float] = field(default_factory=list)
    """Each episode's mean speed of the car, Box2D units/s (NaN for an env without a car)."""
    probes: ValueProbes | None = None
    """Value probes, when `evaluate_policy` was given the discount."""

    def summary(self) -> dict:
        """The JSON a report keeps: return statistics, how the episodes ended, how much of the
        track they drove, how much of it the wrong way and how fast, with the per-episode lists (in
        episode order) to read failures from."""
        returns = np.asarray(self.returns, dtype=float)
        tiles_mean, tiles = _mean_and_list(self.tiles_visited_fractions)
        wrong_way_mean, wrong_way = _mean_and_list(self.wrong_way_fractions)
        speed_mean, speeds = _mean_and_list(self.speeds, decimals=2)
        return {
            "mean": float(returns.mean()),
            "std": float(returns.std()),
            "min": float(returns.min()),
            "max": float(returns.max()),
            "returns": returns.round(2).tolist(),
            "lengths": list(self.lengths),
            "end_reason_counts": dict(Counter(self.end_reasons)),
            "end_reasons": list(self.end_reasons),
            "tiles_visited_mean": tiles_mean,
            "tiles_visited": tiles,
            "wrong_way_mean": wrong_way_mean,
            "wrong_way": wrong_way,
            "wrong_way_tracks": None
            if wrong_way_mean is None
            else sum(w >= WRONG_WAY_TRACK for w in wrong_way if w is not None),
            "speed_mean": speed_mean,
            "speed": speeds,
        }


def _mean_and_list(
    values: list[float], decimals: int = 4
) -> tuple[float | None, list[float | None]]:
    """The mean over the episodes that have the value, and the rounded per-episode list. NaN
    (an env without a track) is not JSON: such episodes get None, and the mean None when all do."""
    array = np.asarray(values, dtype=float)
    mean = float(np.nanmean(array)) if np.isfinite(array).any() else None
    return mean, [round(float(v), decimals) if np.isfinite(v) else None for v in array]


def evaluate_policy(
    policy: Policy,
    env_cfg: EnvConfig,
    episodes: int,
    seed: int,
    video_path: str | Path | None = None,
    env_factory: EnvFactory = make_env,
    gamma: float | None = None,
) -> EvalResult:
    """Run `episodes` episodes of tanh(mean) actions; record the first at full resolution when asked.

    The env is `env_factory(env_cfg.for_evaluation())`: training aids never reach evaluation.
    With the learner's discount `gamma`, the result carries `ValueProbes` for the Q comparison.
    """
    if episodes < 1:
        raise ValueError(f"evaluate_policy needs episodes >= 1, got {episodes}")
    eval_cfg = env_cfg.for_evaluation()
    env = env_factory(eval_cfg)
    episodes_run: list[_Episode] = []
    written = None
    try:
        for episode, episode_seed in enumerate(eval_seeds(seed, episodes)):
            video = None
            if video_path is not None and episode == 0:
                fps = env.spec.fps / eval_cfg.action_repeat
                video = VideoWriter(Path(video_path), fps=fps)
            try:
                episodes_run.append(_run_episode(policy, env, episode_seed, video, gamma))
            finally:
                if video is not None:
                    written = video.close()
    finally:
        env.close()
    returns = [e.episode_return for e in episodes_run]
    return EvalResult(
        float(np.mean(returns)),
        float(np.std(returns)),
        returns,
        [e.length for e in episodes_run],
        written,
        [e.end_reason for e in episodes_run],
        [e.tiles_visited for e in episodes_run],
        [e.wrong_way for e in episodes_run],
        [e.speed for e in episodes_run],
        _gather_probes(episodes_run) if gamma is not None else None,
    )


@dataclass(frozen=True)
class _Episode:
    episode_return: float
    length: int
    end_reason: str
    tiles_visited: float
    wrong_way: float
    speed: float
    probes: tuple | None = None
    """(obs, actions, returns_to_end, tail_discount, end_obs, end_action) of `ValueProbes`."""


def _run_episode(
    policy: Policy,
    env: EnvPipeline,
    seed: int,
    video: VideoWriter | None,
    gamma: float | None = None,
) -> _Episode:
    """One episode from `env.reset(seed)`; one full-resolution video frame per agent step."""
    obs = env.reset(seed=seed)
    episode_return, length, result = 0.0, 0, None
    rewards: list[float] = []
    probe_obs, probe_actions = [], []
    while True:
        if video is not None:
            video.add(env.render_full())
        action = policy.act(torch.from_numpy(obs[None]), deterministic=True)[0].numpy()
        if result is not None and (result.terminated or result.truncated):
            probes = None
            if gamma is not None:
                probes = _episode_probes(
                    probe_obs, probe_actions, rewards, gamma, result.terminated, obs, action
                )
            return _Episode(
                episode_return,
                length,
                end_reason(result),
                tiles_visited(result),
                wrong_way(result),
                speed(result),
                probes,
            )
        if gamma is not None and length % PROBE_EVERY_STEPS == 0:
            probe_obs.append(obs)
            probe_actions.append(action)
        result = env.step(action)
        obs = result.obs
        episode_return += result.reward
        rewards.append(result.reward)
        length += 1


def _episode_probes(probe_obs, probe_actions, rewards, gamma, terminated, end_obs, end_action):
    """Discounted returns from every probe step to the end, and the tail's discount."""
    to_end = np.zeros(len(rewards) + 1)
    for t in range(len(rewards) - 1, -1, -1):
        to_end[t] = rewards[t] + gamma * to_end[t + 1]
    steps = np.arange(len(probe_obs)) * PROBE_EVERY_STEPS
    tail = 0.0 if terminated else 1.0
    return (
        np.stack(probe_obs),
        np.stack(probe_actions).astype(np.float32),
        to_end[steps].astype(np.float32),
        (tail * gamma ** (len(rewards) - steps)).astype(np.float32),
        end_obs,
        end_action.astype(np.float32),
    )


def _gather_probes(episodes: list[_Episode]) -> ValueProbes:
    parts = [e.probes for e in episodes]
    return ValueProbes(
        obs=np.concatenate([p[0] for p in parts]),
        actions=np.concatenate([p[1] for p in parts]),
        returns_to_end=np.concatenate([p[2] for p in parts]),
        tail_discount=np.concatenate([p[3] for p in parts]),
        end_index=np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)]),
        end_obs=np.stack([p[4] for p in parts]),
        end_actions=np.stack([p[5] for p in parts]),
    )


class VideoWriter:
    """Streams frames to an MP4 (imageio-ffmpeg), or to a GIF beside it when ffmpeg is unavailable.

    Streaming matters: an episode at 600x400 is about 180 MB of raw frames.
    """

    def __init__(self, path: Path, fps: float):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # macro_block_size=8 divides both 600x400 and 96x96: ffmpeg keeps the frame size.
            self._writer = imageio.get_writer(path, fps=fps, macro_block_size=8)
            self.path = path
        except (ImportError, RuntimeError, ValueError, OSError) as err:
            self.path = path.with_suffix(".gif")
            warnings.warn(f"cannot write MP4 {path} ({err}); writing {self.path}", stacklevel=2)
            self._writer = imageio.get_writer(self.path, duration=1000 / fps, loop=0)

    def add(self, frame: np.ndarray) -> None:
        self._writer.append_data(frame)

    def close(self) -> str:
        self._writer.close()
        return str(self.path)


@ray.remote(num_cpus=1)
class EvalActor:
    """Evaluates published weights on its own CPU copy of the policy."""

    def __init__(self, env_cfg: EnvConfig, learner_cfg: LearnerConfig, spec: EnvSpec | None = None):
        """`spec`: the run's env spec (worked out here from `env_cfg` when not given)."""
        torch.set_num_threads(1)
        self.env_cfg = env_cfg
        self.gamma = learner_cfg.gamma
        spec = spec or env_spec(env_cfg)
        self.policy = build_policy(spec.obs_shape, spec.action_dim, learner_cfg)
        self.policy.eval().requires_grad_(False)

    def evaluate(
        self, weights: PolicyWeights, episodes: int, seed: int, video_path: str | None = None
    ) -> EvalResult:
        """Write the video (if any) on this actor's node."""
        load_policy_state(self.policy, weights)
        return evaluate_policy(
            self.policy, self.env_cfg, episodes, seed, video_path, gamma=self.gamma
        )

    def evaluate_with_video(
        self, weights: PolicyWeights, episodes: int, seed: int
    ) -> tuple[EvalResult, bytes, str]:
        """Evaluate and return the video's bytes and suffix, so the caller writes it on its own node."""
        with tempfile.TemporaryDirectory() as tmp:
            result = self.evaluate(weights, episodes, seed, str(Path(tmp) / "episode.mp4"))
            path = Path(result.video_path)
            return dataclasses.replace(result, video_path=None), path.read_bytes(), path.suffix
