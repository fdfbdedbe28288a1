"""`sacae train`: the distributed run. Ray topology, the driver loop, metrics, evaluation, checkpoints, faults.

The driver owns no learning logic: it starts the shards, the weights registry, the learner worker,
the rollout actors and an eval actor, keeps one task of each in flight, and turns their replies into
counters, metrics, checkpoints and restarts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.collector import CollectStats
from actors.evaluate import EvalActor
from actors.rollout_actor import RolloutActor, WeightsRegistry
from launch.config import TrainConfig
from launch.learner_worker import RemoteLearnerWorker
from launch.metrics import MetricsLogger, ProgressBar, plot_learning_curve
from launch.ray_setup import LOCAL, init_ray
from launch.run_dir import RunDir, load_checkpoint
from replay.sampler import shard_metrics
from replay.shard import assign_shard, create_shards

log = logging.getLogger("sacae")

LEARNER_CALL_S = 2.0
"""Seconds of updates per learner call: the driver's view of the learner refreshes this often."""
ACTOR_CALL_STEPS = 50
"""Agent steps per rollout call."""


class LearnerDiedError(RuntimeError):
    """The learner process died; the run stops and the last checkpoint resumes it."""


@dataclass(frozen=True)
class Topology:
    num_actors: int
    learner_gpus: float
    ray_cpus: int


def plan_topology(cfg: TrainConfig, cpus: int, gpus: float) -> Topology:
    """Actors default to the cores left after the learner and the shards (at least one)."""
    num_actors = cfg.actor.num_actors or max(1, cpus - cfg.run.learner_cpus - cfg.replay.num_shards)
    if cfg.replay.num_shards > num_actors:
        raise SystemExit(
            f"error: replay.num_shards = {cfg.replay.num_shards} exceeds the {num_actors} rollout actors; "
            "every shard needs a writer: lower --replay.num-shards or raise --actor.num-actors"
        )
    if cfg.run.require_gpu and gpus < 1:
        raise SystemExit(
            "error: --run.require-gpu is set but the Ray cluster has no GPU; start a node with a GPU "
            "(`ray start --num-gpus 1`) or drop --run.require-gpu to learn on the CPU"
        )
    # Logical CPUs a local instance needs: learner, shards, actors, evaluation.
    needed = cfg.run.learner_cpus + cfg.replay.num_shards + num_actors + 1
    return Topology(
        num_actors=num_actors, learner_gpus=1.0 if gpus >= 1 else 0.0, ray_cpus=max(cpus, needed)
    )


@dataclass
class Counters:
    env_frames: int = 0
    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    incarnation: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Window:
    """What happened since the last metrics row."""

    start: float = field(default_factory=time.monotonic)
    env_frames: int = 0
    send_wait_s: float = 0.0
    returns: list = field(default_factory=list)
    lengths: list = field(default_factory=list)


class Driver:
    def __init__(self, cfg: TrainConfig, run: RunDir, topology: Topology, resume: Path | None):
        self.cfg, self.run, self.topology = cfg, run, topology
        self.counters = Counters()
        learner_state = None
        if resume is not None:
            checkpoint = load_checkpoint(resume)
            learner_state = checkpoint["learner"]
            self.counters = Counters(
                **{
                    k: v
                    for k, v in checkpoint["counters"].items()
                    if k in Counters.__dataclass_fields__
                }
            )
            self.counters.incarnation += 1  # new tracks and new streams after a resume
        env = cfg.env
        snapshot_dir = ""
        if cfg.run.snapshot_replay or cfg.replay.snapshot_every_s > 0:
            snapshot_dir = cfg.replay.snapshot_dir or str(run.path / "replay")
        self.snapshot_dir = snapshot_dir
        self.shards = create_shards(
            cfg.replay,
            env.frame_shape,
            env.action_dim,
            env.frame_stack,
            cfg.samples_per_insert,
            seed=cfg.run.seed,
            snapshot_dir=snapshot_dir,
        )
        # The registry lives on the driver's node: it fails with the run, never on its own.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.registry = WeightsRegistry.options(scheduling_strategy=here).remote()
        # With a GPU the learner goes where the GPU is; without one it stays on the driver's node
        # (soft: elsewhere if that node is full), next to the registry it publishes to.
        node = ray.get_runtime_context().get_node_id()
        learner_place = (
            "DEFAULT" if topology.learner_gpus else NodeAffinitySchedulingStrategy(node, soft=True)
        )
        self.learner = RemoteLearnerWorker.options(
            num_cpus=cfg.run.learner_cpus,
            num_gpus=topology.learner_gpus,
            max_restarts=0,
            scheduling_strategy=learner_place,
        ).remote(cfg, env.obs_shape, env.action_dim, self.shards, self.registry, learner_state)
        seed_steps = 0 if resume is not None else cfg.actor.seed_steps
        per_actor_seed = -(-seed_steps // topology.num_actors)
        self.actors = [
            RolloutActor.options(
                max_restarts=cfg.run.max_actor_restarts, scheduling_strategy="SPREAD"
            ).remote(
                env,
                cfg.actor,
                cfg.learner,
                i,
                cfg.run.seed,
                per_actor_seed,
                self.registry,
                self.shards[assign_shard(i, cfg.replay.num_shards)],
                self.counters.incarnation,
            )
            for i in range(topology.num_actors)
        ]
        self.eval_actor = EvalActor.remote(env, cfg.learner) if cfg.run.eval_every_frames else None
        self.actor_restarts = 0
        # The newest weights version each actor has acted with.
        self.actor_versions = [0] * topology.num_actors
        self.curve: list[tuple[int, float, float]] = []
        self.last_learner_row: dict[str, float] = {}
        self.last_return: float | None = None

    # -- the loop ---------------------------------------------------------------------------------

    def train(self) -> Counters:
        cfg, counters = self.cfg, self.counters
        logger = MetricsLogger(self.run.path)
        bar = ProgressBar(cfg.run.total_env_frames, counters.env_frames, cfg.run.progress_bar)
        pending: dict[ray.ObjectRef, tuple[str, int, float]] = {}
        for i, actor in enumerate(self.actors):
            pending[actor.run_for.remote(ACTOR_CALL_STEPS)] = ("actor", i, time.monotonic())
        pending[self.learner.train_for.remote(LEARNER_CALL_S)] = ("learner", 0, time.monotonic())
        next_eval = (
            counters.env_frames + cfg.run.eval_every_frames if cfg.run.eval_every_frames else None
        )
        next_checkpoint = counters.updates + cfg.run.checkpoint_every_updates
        window, next_log = Window(), time.monotonic() + cfg.run.log_every_s
        self.learner_alive = True
        deadline = time.monotonic() + cfg.run.max_seconds if cfg.run.max_seconds else float("inf")
        try:
            while counters.env_frames < cfg.run.total_env_frames and time.monotonic() < deadline:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    kind, index, _ = pending.pop(ref)
                    if kind == "actor":
                        self._on_actor_reply(ref, index, window)
                        pending[self.actors[index].run_for.remote(ACTOR_CALL_STEPS)] = (
                            "actor",
                            index,
                            time.monotonic(),
                        )
                    elif kind == "learner":
                        self.last_learner_row = self._learner_result(ref)
                        counters.updates = int(self.last_learner_row["learner/updates"])
                        pending[self.learner.train_for.remote(LEARNER_CALL_S)] = (
                            "learner",
                            0,
                            time.monotonic(),
                        )
                    elif kind == "eval":
                        self._on_eval_reply(ref, index, logger)
                self._check_hung(pending)
                if (
                    next_eval is not None
                    and counters.env_frames >= next_eval
                    and not any(k == "eval" for k, *_ in pending.values())
                ):
                    next_eval += cfg.run.eval_every_frames
                    pending[self._start_eval()] = ("eval", counters.env_frames, time.monotonic())
                if counters.updates >= next_checkpoint:
                    next_checkpoint = counters.updates + cfg.run.checkpoint_every_updates
                    self._checkpoint()
                if time.monotonic() >= next_log:
                    self._log(logger, bar, window)
                    window, next_log = Window(), time.monotonic() + cfg.run.log_every_s
            # Let a running evaluation finish so the last curve point is written.
            for ref, (kind, index, _) in list(pending.items()):
                if kind == "eval":
                    self._on_eval_reply(ref, index, logger)
        finally:
            if self.learner_alive:
                self._checkpoint()
            self._log(logger, bar, window)
            logger.close()
            bar.close()
        return counters

    def close(self) -> None:
        """Stop every process of the run (on a cluster they would otherwise outlive the driver)."""
        handles = [*self.actors, *self.shards, self.learner, self.registry]
        if self.eval_actor is not None:
            handles.append(self.eval_actor)
        for handle in handles:
            ray.kill(handle, no_restart=True)

    # -- replies ----------------------------------------------------------------------------------

    def _on_actor_reply(self, ref: ray.ObjectRef, index: int, window: Window) -> None:
        try:
            stats: CollectStats = ray.get(ref)
        except (RayActorError, RayTaskError) as err:
            # Ray restarts the process (max_restarts); it comes back with fresh env seeds and streams.
            self.actor_restarts += 1
            log.warning(
                "rollout actor %d failed (%s); restarted, collection goes on",
                index,
                type(err).__name__,
            )
            if self.actor_restarts > self.cfg.run.max_actor_restarts:
                raise RuntimeError(
                    f"rollout actors failed {self.actor_restarts} times (> run.max_actor_restarts); "
                    "see the actor logs under /tmp/ray/session_latest/logs"
                ) from err
            return
        self.actor_versions[index] = max(self.actor_versions[index], stats.weights_version)
        c = self.counters
        c.env_frames += stats.env_frames
        c.env_steps += stats.agent_steps
        c.episodes += stats.episodes
        window.env_frames += stats.env_frames
        window.send_wait_s += stats.send_wait_s
        window.returns.extend(stats.episode_returns)
        window.lengths.extend(stats.episode_lengths)
        if stats.episode_returns:
            self.last_return = stats.episode_returns[-1]

    def _start_eval(self) -> ray.ObjectRef:
        latest = ray.get(self.registry.latest.remote(0), timeout=self.cfg.run.remote_timeout_s)
        # Fresh tracks: eval seeds come from their own seed domain, moved on at every evaluation.
        args = (latest[0], self.cfg.run.eval_episodes, self.cfg.run.seed + len(self.curve))
        if self.cfg.run.eval_video:
            # The video comes back as bytes: the eval actor may run on another node of a cluster.
            return self.eval_actor.evaluate_with_video.remote(*args)
        return self.eval_actor.evaluate.remote(*args)

    def _on_eval_reply(self, ref: ray.ObjectRef, frames: int, logger: MetricsLogger) -> None:
        try:
            result = ray.get(ref, timeout=self.cfg.run.remote_timeout_s)
        except (RayActorError, RayTaskError, GetTimeoutError) as err:
            log.warning("evaluation at %d frames failed: %s", frames, err)
            return
        if isinstance(result, tuple):
            result, video, suffix = result
            (self.run.eval_dir / f"eval_{frames:010d}{suffix}").write_bytes(video)
        self.curve.append((frames, result.mean_return, result.std_return))
        logger.write(
            frames,
            {
                "eval/return_mean": result.mean_return,
                "eval/return_std": result.std_return,
                "eval/episode_length_mean": float(np.mean(result.lengths)),
            },
        )
        plot_learning_curve(self.curve, self.run.eval_dir / "learning_curve.png")
        try:
            image = ray.get(
                self.learner.reconstruction_image.remote(), timeout=self.cfg.run.remote_timeout_s
            )
        except (RayActorError, RayTaskError, GetTimeoutError):
            image = None
        if image is not None:
            iio.imwrite(self.run.eval_dir / f"reconstruction_{frames:010d}.png", image)

    def _check_hung(self, pending: dict) -> None:
        now = time.monotonic()
        limit = self.cfg.run.remote_timeout_s
        for ref, (kind, index, started) in list(pending.items()):
            if now - started <= limit:
                continue
            if kind == "learner":
                self.learner_alive = False  # a hung learner cannot give its state for a checkpoint
                raise LearnerDiedError(
                    f"the learner has not answered for {limit:.0f} s (run.remote_timeout_s); {self._resume_hint()}"
                )
            if kind == "actor":
                log.warning(
                    "rollout actor %d hung for %.0f s; killing it so Ray restarts it", index, limit
                )
                ray.kill(self.actors[index], no_restart=False)
                pending[ref] = (kind, index, now)

    def _learner_result(self, ref: ray.ObjectRef):
        """A learner call's result; the learner's death stops the run with the resume command."""
        try:
            return ray.get(ref, timeout=self.cfg.run.remote_timeout_s)
        except (RayActorError, RayTaskError) as err:
            self.learner_alive = False
            summary = str(err).strip().splitlines()[0]
            raise LearnerDiedError(
                f"the learner process died ({type(err).__name__}: {summary}); {self._resume_hint()}"
            ) from err

    def _resume_hint(self) -> str:
        latest = self.run.latest_checkpoint()
        where = f"the last checkpoint is {latest}" if latest else "no checkpoint was written yet"
        return f"{where}; continue with: sacae train --resume {self.run.path}"

    # -- outputs ----------------------------------------------------------------------------------

    def _checkpoint(self) -> None:
        timeout = self.cfg.run.remote_timeout_s
        state = self._learner_result(self.learner.state_dict.remote())
        self.counters.updates = int(state["updates"])
        if self.cfg.run.snapshot_replay:
            ray.get([s.save_snapshot.remote() for s in self.shards], timeout=timeout)
        self.run.save_checkpoint(state, self.counters.as_dict(), self.cfg)

    def _log(self, logger: MetricsLogger, bar: ProgressBar, window: Window) -> None:
        elapsed = max(time.monotonic() - window.start, 1e-9)
        row: dict[str, float] = dict(self.last_learner_row)
        row.update(
            {
                "counters/env_frames": self.counters.env_frames,
                "counters/env_steps": self.counters.env_steps,
                "counters/episodes": self.counters.episodes,
                "actors/env_frames_per_s": window.env_frames / elapsed,
                "actors/send_wait_fraction": window.send_wait_s
                / elapsed
                / max(len(self.actors), 1),
                "actors/restarts": self.actor_restarts,
            }
        )
        if window.returns:
            row["actors/episode_return"] = float(np.mean(window.returns))
            row["actors/episode_length"] = float(np.mean(window.lengths))
        try:
            stats = ray.get([s.stats.remote() for s in self.shards], timeout=10.0)
            row.update(shard_metrics(stats))
            inserts = sum(s["inserts_per_s"] for s in stats)
            samples = sum(s["samples_per_s"] for s in stats)
            row["replay/samples_per_insert"] = samples / inserts if inserts > 0 else 0.0
            row["learner/env_frames_consumed_per_s"] = samples * self.cfg.env.action_repeat
        except (GetTimeoutError, RayActorError, RayTaskError):
            pass  # a restarting shard: its stats come with the next row
        logger.write(self.counters.env_frames, row)
        bar.update(
            self.counters.env_frames,
            self.counters.updates,
            self.last_return,
            row["actors/env_frames_per_s"],
            row.get("learner/updates_per_s", 0.0),
        )


def train(cfg: TrainConfig, resume: Path | None = None) -> Counters:
    """Run a distributed training job to `run.total_env_frames`; returns the final counters."""
    if resume is not None:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, run_dir=str(resume)))
    local = cfg.run.address == LOCAL
    cpus = cfg.run.num_cpus or os.cpu_count() or 1
    if local:
        topology = plan_topology(cfg, cpus, gpus=_local_gpus())
        init_ray(LOCAL, num_cpus=topology.ray_cpus)
    else:
        resources = init_ray(cfg.run.address)
        topology = plan_topology(cfg, int(resources.get("CPU", 1)) - 1, resources.get("GPU", 0))
    run = RunDir.create(cfg)
    print(
        f"sacae: run directory {run.path}; {topology.num_actors} actors, {cfg.replay.num_shards} shards, "
        f"learner on {'GPU' if topology.learner_gpus else 'CPU'}",
        flush=True,
    )
    driver = Driver(cfg, run, topology, resume)
    # Ctrl-C and SIGTERM (`ray job stop`, a scheduler's kill) both end the run the same way: through
    # the driver's `finally`, which writes a checkpoint. A shell's `&` would leave SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return driver.train()
    except KeyboardInterrupt:
        print(
            f"\nsacae: interrupted; checkpoint written; continue with: sacae train --resume {run.path}",
            flush=True,
        )
        return driver.counters
    finally:
        if local:
            ray.shutdown()


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _local_gpus() -> float:
    try:
        import torch

        return float(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no usable CUDA runtime means no GPU
        return 0.0
