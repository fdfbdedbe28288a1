"""`sacae train`: the distributed run. Ray topology, the driver loop, metrics, evaluation, checkpoints, faults.

The driver owns no learning logic: it starts the shards, the weights registry, the learner worker,
the rollout actors and an eval actor, keeps one task of each in flight, and turns their replies into
counters, metrics, checkpoints and restarts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
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
from launch.config import CPU_PRESET, PRESETS, TrainConfig
from launch.learner_worker import RemoteLearnerWorker
from launch.metrics import MetricsLogger, ProgressBar, plot_learning_curve
from launch.placement import Demand, Placement, PlacementLog, alive_nodes, pin, plan_placement
from launch.ray_setup import LOCAL, init_ray
from launch.run_dir import RunDir, load_checkpoint
from replay.sampler import shard_metrics
from replay.shard import assign_shard, create_shards

log = logging.getLogger("sacae")

LEARNER_CALL_S = 2.0
"""Seconds of updates per learner call: the driver's view of the learner refreshes this often."""
ACTOR_CALL_STEPS = 50
"""Agent steps per rollout call."""
ACTOR_CALL_S = 5.0
"""A rollout call held back by the replay returns after this long with fewer steps, so a call
that takes `run.remote_timeout_s` longer than this is a hung process, not a rate-limited one."""


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
    learner_gpu = gpus >= 1 and cfg.learner.device != "cpu"
    if cfg.run.require_gpu and not learner_gpu:
        raise SystemExit(
            "error: --run.require-gpu is set but the Ray cluster has no GPU; start a node with a GPU "
            "(`ray start --num-gpus 1`) and keep --learner.device auto or cuda, or drop "
            "--run.require-gpu to learn on the CPU"
        )
    # Logical CPUs a local instance needs: learner, shards, actors, evaluation.
    needed = cfg.run.learner_cpus + cfg.replay.num_shards + num_actors + 1
    return Topology(
        num_actors=num_actors, learner_gpus=1.0 if learner_gpu else 0.0, ray_cpus=max(cpus, needed)
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
    def __init__(
        self, cfg: TrainConfig, run: RunDir, topology: Topology, resume: Path | dict | None
    ):
        """`resume`: a run directory or checkpoint file, or a checkpoint already loaded."""
        self.cfg, self.run, self.topology = cfg, run, topology
        self.counters = Counters()
        learner_state = None
        if resume is not None:
            checkpoint = resume if isinstance(resume, dict) else load_checkpoint(resume)
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
        self.driver_node = ray.get_runtime_context().get_node_id()
        self.placement = self._plan()
        self.placement_log = PlacementLog(run.path / "placement.jsonl")
        self.placement_log.write("start", self.placement)
        self.shards = create_shards(
            cfg.replay,
            env.frame_shape,
            env.action_dim,
            env.frame_stack,
            cfg.samples_per_insert,
            seed=cfg.run.seed,
            snapshot_dir=snapshot_dir,
            # Soft: a shard whose node died is restarted by Ray on another node.
            strategies=[
                pin(self.placement.assigned[f"shard{i}"], soft=True)
                for i in range(cfg.replay.num_shards)
            ],
        )
        # The registry lives on the driver's node: it fails with the run, never on its own.
        self.registry = WeightsRegistry.options(scheduling_strategy=pin(self.driver_node)).remote()
        # With a GPU the learner needs its GPU node; without one it stays on the driver's node,
        # next to the registry it publishes to.
        self.learner = RemoteLearnerWorker.options(
            num_cpus=cfg.run.learner_cpus,
            num_gpus=topology.learner_gpus,
            max_restarts=0,
            scheduling_strategy=pin(self.placement.assigned["learner"]),
        ).remote(cfg, env.obs_shape, env.action_dim, self.shards, self.registry, learner_state)
        seed_steps = 0 if resume is not None else cfg.actor.seed_steps
        per_actor_seed = -(-seed_steps // topology.num_actors)
        # Each actor's incarnation (a replacement draws a new one: new streams, new tracks), and
        # the agent steps its completed calls reported, per (actor, incarnation).
        self.actor_incarnations = [self.counters.incarnation] * topology.num_actors
        self.reported_steps: dict[tuple[int, int], int] = {}
        self.actors = [
            self._start_actor(i, self.counters.incarnation, per_actor_seed)
            for i in range(topology.num_actors)
        ]
        self.eval_actor = self._start_eval_actor() if cfg.run.eval_every_frames else None
        self.actor_restarts = 0
        self.eval_restarts = 0
        # The newest weights version each actor has acted with.
        self.actor_versions = [0] * topology.num_actors
        self.curve: list[tuple[int, float, float]] = []
        self.last_learner_row: dict[str, float] = {}
        self.last_return: float | None = None
        self._eta_said = False

    # -- placement and processes ------------------------------------------------------------------

    def _plan(self) -> Placement:
        """Every process's node, over the nodes alive now (the driver's node breaks ties)."""
        cfg, nodes = self.cfg, alive_nodes(first=self.driver_node)
        learner_node = self.driver_node
        if self.topology.learner_gpus:
            with_gpu = [n.node_id for n in nodes if n.gpus >= self.topology.learner_gpus]
            learner_node = with_gpu[0] if with_gpu else ""
        demands = [Demand("learner", cfg.run.learner_cpus, learner_node)]
        demands += [Demand(f"shard{i}", 1.0) for i in range(cfg.replay.num_shards)]
        if cfg.replay.placement == "pack":
            # As few nodes as possible: the shards go where the learner is (or the driver).
            demands = [demands[0]] + [
                Demand(d.name, d.cpus, learner_node or self.driver_node) for d in demands[1:]
            ]
        demands += [Demand(f"actor{i}", 1.0) for i in range(self.topology.num_actors)]
        if cfg.run.eval_every_frames:
            demands.append(Demand("eval", 1.0))
        return plan_placement(nodes, demands)

    def _replace(self, name: str) -> NodeAffinitySchedulingStrategy:
        """Where a replacement for process `name` goes: re-planned over the nodes alive now, so a
        node that joined since the start is used and a dead one is not."""
        died_on = self.placement.assigned.get(name, "")
        self.placement.update_nodes(alive_nodes(first=self.driver_node))
        node = self.placement.place(Demand(name, 1.0), avoid=died_on)
        self.placement_log.write(f"replace {name}", self.placement, [name])
        log.warning("%s goes to node %s", name, self.placement.describe_one(name))
        return pin(node)

    def _start_actor(
        self, index: int, incarnation: int, seed_steps: int, strategy=None
    ) -> ray.actor.ActorHandle:
        cfg = self.cfg
        # max_restarts=0: the driver replaces a dead actor itself (see `_on_actor_failure`).
        return RolloutActor.options(
            max_restarts=0,
            scheduling_strategy=strategy or pin(self.placement.assigned[f"actor{index}"]),
        ).remote(
            cfg.env,
            cfg.actor,
            cfg.learner,
            index,
            cfg.run.seed,
            seed_steps,
            self.registry,
            self.shards[assign_shard(index, cfg.replay.num_shards)],
            incarnation,
        )

    def _start_eval_actor(self, strategy=None) -> ray.actor.ActorHandle:
        strategy = strategy or pin(self.placement.assigned["eval"])
        return EvalActor.options(max_restarts=0, scheduling_strategy=strategy).remote(
            self.cfg.env, self.cfg.learner
        )

    # -- the loop ---------------------------------------------------------------------------------

    def train(self) -> Counters:
        cfg, counters = self.cfg, self.counters
        logger = MetricsLogger(self.run.path)
        bar = ProgressBar(cfg.run.total_env_frames, counters.env_frames, cfg.run.progress_bar)
        pending: dict[ray.ObjectRef, tuple[str, int, float]] = {}
        for i in range(len(self.actors)):
            pending[self._run_actor(i)] = ("actor", i, time.monotonic())
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
                        pending[self._run_actor(index)] = ("actor", index, time.monotonic())
                    elif kind == "learner":
                        self.last_learner_row = self._learner_result(ref)
                        counters.updates = int(self.last_learner_row["learner/updates"])
                        self._say_cpu_eta()
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
                    ref = self._start_eval()
                    if ref is not None:  # None: no weights published yet, ask again later
                        next_eval += cfg.run.eval_every_frames
                        pending[ref] = ("eval", counters.env_frames, time.monotonic())
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

    def _run_actor(self, index: int) -> ray.ObjectRef:
        return self.actors[index].run_for.remote(ACTOR_CALL_STEPS, ACTOR_CALL_S)

    def _on_actor_reply(self, ref: ray.ObjectRef, index: int, window: Window) -> None:
        try:
            stats: CollectStats = ray.get(ref, timeout=self.cfg.run.remote_timeout_s)
        except (RayActorError, RayTaskError, GetTimeoutError) as err:
            self._on_actor_failure(index, err)
            return
        self.actor_versions[index] = max(self.actor_versions[index], stats.weights_version)
        key = (index, self.actor_incarnations[index])
        self.reported_steps[key] = self.reported_steps.get(key, 0) + stats.agent_steps
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

    def _on_actor_failure(self, index: int, err: Exception) -> None:
        """Replace a dead (or hung) rollout actor by a new one with a new incarnation.

        The driver replaces actors itself instead of leaving it to Ray's `max_restarts`: a call
        to an actor Ray is restarting fails at once with ActorUnavailableError, over and over
        until the restart is done, and Ray puts the restart on the node the hint chooses, never
        on a node that joined later. The new actor skips the seed steps and draws new tracks.
        """
        self.actor_restarts += 1
        if self.actor_restarts > self.cfg.run.max_actor_restarts:
            raise RuntimeError(
                f"rollout actors failed {self.actor_restarts} times (> run.max_actor_restarts); "
                "see the actor logs under /tmp/ray/session_latest/logs"
            ) from err
        ray.kill(self.actors[index], no_restart=True)  # a hung process must not write any more
        summary = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        log.warning(
            "rollout actor %d failed (%s: %s); starting a replacement",
            index,
            type(err).__name__,
            summary,
        )
        incarnation = secrets.randbits(32)
        self.actors[index] = self._start_actor(
            index, incarnation, seed_steps=0, strategy=self._replace(f"actor{index}")
        )
        self.actor_incarnations[index] = incarnation
        self.actor_versions[index] = 0

    def _start_eval(self) -> ray.ObjectRef | None:
        latest = ray.get(self.registry.latest.remote(0), timeout=self.cfg.run.remote_timeout_s)
        if latest is None:
            return None
        if self.eval_actor is None:
            self.eval_actor = self._start_eval_actor(strategy=self._replace("eval"))
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
            log.warning(
                "evaluation at %d frames failed (%s); the next one starts a new eval actor",
                frames,
                type(err).__name__,
            )
            ray.kill(self.eval_actor, no_restart=True)
            self.eval_actor = None
            self.eval_restarts += 1
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
            # A rollout call returns within ACTOR_CALL_S even when the replay holds it back.
            allowed = limit + (ACTOR_CALL_S if kind == "actor" else 0.0)
            if now - started <= allowed:
                continue
            if kind == "learner":
                self.learner_alive = False  # a hung learner cannot give its state for a checkpoint
                raise LearnerDiedError(
                    f"the learner has not answered for {limit:.0f} s (run.remote_timeout_s); {self._resume_hint()}"
                )
            if kind == "actor":
                del pending[ref]
                self._on_actor_failure(
                    index, GetTimeoutError(f"no answer for {allowed:.0f} s; killed as hung")
                )
                pending[self._run_actor(index)] = ("actor", index, time.monotonic())

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

    def _say_cpu_eta(self) -> None:
        """Once, on a learner without a GPU: its measured rate and what the run will take."""
        rate = self.last_learner_row.get("learner/updates_per_s", 0.0)
        if self.topology.learner_gpus or self._eta_said or rate <= 0 or self.counters.updates < 10:
            return
        self._eta_said = True
        print(cpu_eta_line(self.cfg, self.counters.env_frames, rate), flush=True)

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


def cpu_eta_line(cfg: TrainConfig, env_frames: int, updates_per_s: float) -> str:
    """What a learner without a GPU will take for the rest of the run, and what to do about it."""
    frames_left = max(cfg.run.total_env_frames - env_frames, 0)
    updates = frames_left / cfg.env.action_repeat * cfg.learner.updates_per_step
    hours = updates / updates_per_s / 3600
    line = (
        f"sacae: no GPU: the learner measured {updates_per_s:.2f} updates/s; the "
        f"{frames_left:,} env frames left ({updates:,.0f} updates) take about {hours:,.1f} h"
    )
    if hours > 12 and CPU_PRESET in PRESETS and cfg != PRESETS[CPU_PRESET]():
        line += f"; on a CPU machine use --preset {CPU_PRESET}, sized for one"
    return line


def train(cfg: TrainConfig, resume: Path | None = None) -> Counters:
    """Run a distributed training job to `run.total_env_frames`; returns the final counters."""
    if resume is not None:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, run_dir=str(resume)))
    # Before anything starts: a run with no usable checkpoint fails here, not after Ray is up.
    checkpoint = load_checkpoint(resume) if resume is not None else None
    local = cfg.run.address == LOCAL
    cpus = cfg.run.num_cpus or os.cpu_count() or 1
    if local:
        topology = plan_topology(cfg, cpus, gpus=_local_gpus())
        init_ray(LOCAL, num_cpus=topology.ray_cpus)
    else:
        resources = init_ray(cfg.run.address)
        topology = plan_topology(cfg, int(resources.get("CPU", 1)) - 1, resources.get("GPU", 0))
    try:
        run = RunDir.create(cfg)
        print(
            f"sacae: run directory {run.path}; {topology.num_actors} actors, "
            f"{cfg.replay.num_shards} shards, learner on {'GPU' if topology.learner_gpus else 'CPU'}",
            flush=True,
        )
        driver = Driver(cfg, run, topology, checkpoint)
        print(f"sacae: placement: {driver.placement.describe()}", flush=True)
        # Ctrl-C and SIGTERM (`ray job stop`, a scheduler's kill) both end the run the same way:
        # through the driver's `finally`, which writes a checkpoint. A shell's `&` would leave
        # SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
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
