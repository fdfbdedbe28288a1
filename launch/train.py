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
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.collector import CollectStats
from actors.env import env_spec
from actors.evaluate import EvalActor
from actors.rollout_actor import RolloutActor, WeightsRegistry
from launch.config import CPU_PRESET, PRESETS, TrainConfig
from launch.learner_worker import RemoteLearnerWorker
from launch.placement import Demand, Placement, PlacementLog, alive_nodes, pin, plan_placement
from launch.ray_setup import LOCAL, init_ray, niced_nodes, niceness_warning
from launch.run_dir import RunDir, load_checkpoint
from launch.runner import Counters, Runner, replay_metrics
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
    if cfg.learner.cuda_graphs and not learner_gpu:
        raise SystemExit(
            "error: --learner.cuda-graphs needs the learner on a GPU, and this run's learner gets "
            "none (no GPU in the Ray cluster, or --learner.device cpu); drop --learner.cuda-graphs"
        )
    # Logical CPUs a local instance needs: learner, shards, actors, evaluation.
    needed = cfg.run.learner_cpus + cfg.replay.num_shards + num_actors + 1
    return Topology(
        num_actors=num_actors, learner_gpus=1.0 if learner_gpu else 0.0, ray_cpus=max(cpus, needed)
    )


class Driver:
    def __init__(
        self, cfg: TrainConfig, run: RunDir, topology: Topology, resume: Path | dict | None
    ):
        """`resume`: a run directory or checkpoint file, or a checkpoint already loaded."""
        self.cfg, self.run, self.topology = cfg, run, topology
        checkpoint = resume if isinstance(resume, dict | None) else load_checkpoint(resume)
        self.spec = spec = env_spec(cfg.env)  # shapes and bounds, worked out once from the env
        self.runner = Runner(cfg, run, checkpoint, spec)
        self.counters = self.runner.counters
        learner_state = self.runner.learner_state
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
            spec.frame_shape,
            spec.action_dim,
            spec.frame_stack,
            cfg.samples_per_insert,
            seed=cfg.run.seed,
            snapshot_dir=snapshot_dir,
            # Soft: a shard whose node died is restarted by Ray on another node.
            strategies=[
                pin(self.placement.assigned[f"shard{i}"], soft=True)
                for i in range(cfg.replay.num_shards)
            ],
            n_step=cfg.learner.n_step,
            gamma=cfg.learner.gamma,
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
        ).remote(cfg, spec.obs_shape, spec.action_dim, self.shards, self.registry, learner_state)
        per_actor_seed = -(-self.runner.seed_steps // topology.num_actors)
        # Each actor's incarnation (a replacement draws a new one: new streams, new tracks), and
        # the agent steps its completed calls reported, per (actor, incarnation).
        self.actor_incarnations = [self.counters.incarnation] * topology.num_actors
        self.reported_steps: dict[tuple[int, int], int] = {}
        self.actors = [
            self._start_actor(i, self.counters.incarnation, per_actor_seed)
            for i in range(topology.num_actors)
        ]
        self.eval_actor = self._start_eval_actor() if cfg.run.eval_every_frames else None
        self.eval_restarts = 0
        # Evaluation results waiting for their reconstruction image, by env frames.
        self._evaluations: dict[int, tuple] = {}
        # The newest weights version each actor has acted with.
        self.actor_versions = [0] * topology.num_actors
        self._eta_said = False

    @property
    def curve(self) -> list[tuple[int, float, float]]:
        return self.runner.curve

    @property
    def actor_restarts(self) -> int:
        return self.runner.actor_restarts

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
            self.cfg.env, self.cfg.learner, self.spec
        )

    # -- the loop ---------------------------------------------------------------------------------

    def train(self) -> Counters:
        """Step the run to its frame budget: keep one call of every process in flight and turn
        each reply into counters, metrics, evaluations, checkpoints and replacements."""
        runner = self.runner
        pending: dict[ray.ObjectRef, tuple[str, int, float]] = {}
        for i in range(len(self.actors)):
            pending[self._run_actor(i)] = ("actor", i, time.monotonic())
        pending[self.learner.train_for.remote(LEARNER_CALL_S)] = ("learner", 0, time.monotonic())
        self.learner_alive = True
        try:
            while runner.running():
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    self._on_reply(ref, pending)
                self._check_hung(pending)
                in_flight = {kind for kind, *_ in pending.values()}
                evaluating = "eval" in in_flight or "reconstruction" in in_flight
                if not evaluating and runner.eval_due(self.counters.env_frames):
                    ref = self._start_eval()
                    if ref is None:  # no weights published yet: ask again next time
                        runner.eval_due.postpone()
                    else:
                        pending[ref] = ("eval", self.counters.env_frames, time.monotonic())
                if runner.checkpoint_due(self.counters.updates) and "state" not in in_flight:
                    pending[self.learner.state_dict.remote()] = ("state", 0, time.monotonic())
                if runner.log_due(time.monotonic()):
                    self._log()
            # Let a running evaluation finish so the last curve point is written; the learner's
            # last call ends once the replay is released.
            self._release_replay()
            self._finish_evaluation(pending)
        finally:
            self._release_replay()
            if self.learner_alive:
                self._checkpoint()
            self._log()
            runner.close()
        return self.counters

    def close(self) -> None:
        """Stop every process of the run (on a cluster they would otherwise outlive the driver)."""
        handles = [*self.actors, *self.shards, self.learner, self.registry]
        if self.eval_actor is not None:
            handles.append(self.eval_actor)
        for handle in handles:
            ray.kill(handle, no_restart=True)

    # -- replies ----------------------------------------------------------------------------------

    def _on_reply(self, ref: ray.ObjectRef, pending: dict) -> None:
        """Turn one reply into counters, metrics or outputs, and keep that process busy.

        The driver never waits on the learner inside the loop: its checkpoint state and its
        reconstruction image queue behind a `train_for` call that may wait for transitions, and
        those come only from rollout calls the driver keeps dispatching. A blocking wait here
        stalled a run whose learner was faster than its actors until the hang timeout.
        """
        kind, index, _ = pending.pop(ref)
        if kind == "actor":
            self._on_actor_reply(ref, index)
            pending[self._run_actor(index)] = ("actor", index, time.monotonic())
        elif kind == "learner":
            self.runner.on_learner_row(self._learner_result(ref))
            self._say_cpu_eta()
            pending[self.learner.train_for.remote(LEARNER_CALL_S)] = (
                "learner",
                0,
                time.monotonic(),
            )
        elif kind == "state":
            self._save_checkpoint(self._learner_result(ref))
        elif kind == "eval":
            image_ref = self._on_eval_reply(ref, index)
            if image_ref is not None:
                pending[image_ref] = ("reconstruction", index, time.monotonic())
        elif kind == "reconstruction":
            self._on_reconstruction(ref, index)

    def _finish_evaluation(self, pending: dict) -> None:
        for ref, (kind, index, _) in list(pending.items()):
            if kind == "eval":
                image_ref = self._on_eval_reply(ref, index)
                if image_ref is not None:
                    self._on_reconstruction(image_ref, index)
            elif kind == "reconstruction":
                self._on_reconstruction(ref, index)

    def _run_actor(self, index: int) -> ray.ObjectRef:
        return self.actors[index].run_for.remote(ACTOR_CALL_STEPS, ACTOR_CALL_S)

    def _on_actor_reply(self, ref: ray.ObjectRef, index: int) -> None:
        try:
            stats: CollectStats = ray.get(ref, timeout=self.cfg.run.remote_timeout_s)
        except (RayActorError, RayTaskError, GetTimeoutError) as err:
            self._on_actor_failure(index, err)
            return
        self.actor_versions[index] = max(self.actor_versions[index], stats.weights_version)
        key = (index, self.actor_incarnations[index])
        self.reported_steps[key] = self.reported_steps.get(key, 0) + stats.agent_steps
        self.runner.on_collect(stats)

    def _on_actor_failure(self, index: int, err: Exception) -> None:
        """Replace a dead (or hung) rollout actor by a new one with a new incarnation.

        The driver replaces actors itself instead of leaving it to Ray's `max_restarts`: a call
        to an actor Ray is restarting fails at once with ActorUnavailableError, over and over
        until the restart is done, and Ray puts the restart on the node the hint chooses, never
        on a node that joined later. The new actor skips the seed steps and draws new tracks.
        """
        self.runner.actor_restarts += 1
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
        args = (latest[0], self.cfg.run.eval_episodes, self.runner.eval_seed())
        if self.cfg.run.eval_video:
            # The video comes back as bytes: the eval actor may run on another node of a cluster.
            return self.eval_actor.evaluate_with_video.remote(*args)
        return self.eval_actor.evaluate.remote(*args)

    def _on_eval_reply(self, ref: ray.ObjectRef, frames: int) -> ray.ObjectRef | None:
        """Take an evaluation's result; returns the learner call for its reconstruction image."""
        timeout = self.cfg.run.remote_timeout_s
        try:
            result = ray.get(ref, timeout=timeout)
        except (RayActorError, RayTaskError, GetTimeoutError) as err:
            log.warning(
                "evaluation at %d frames failed (%s); the next one starts a new eval actor",
                frames,
                type(err).__name__,
            )
            ray.kill(self.eval_actor, no_restart=True)
            self.eval_actor = None
            self.eval_restarts += 1
            return None
        video = None
        if isinstance(result, tuple):
            result, *video = result
        # Asked for now, with the image: both queue on the learner behind its current call.
        values = self.learner.value_metrics.remote(result.probes)
        self._evaluations[frames] = (dataclasses.replace(result, probes=None), video, values)
        return self.learner.reconstruction_image.remote()

    def _on_reconstruction(self, ref: ray.ObjectRef, frames: int) -> None:
        result, video, values_ref = self._evaluations.pop(frames)
        image, values = None, None
        try:
            image = ray.get(ref, timeout=self.cfg.run.remote_timeout_s)
            values = ray.get(values_ref, timeout=self.cfg.run.remote_timeout_s)
        except (RayActorError, RayTaskError, GetTimeoutError):
            pass  # a curve point without its image or value metrics
        self.runner.record_eval(frames, result, video, image, values)

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
        rate = self.runner.last_learner_row.get("learner/updates_per_s", 0.0)
        if self.topology.learner_gpus or self._eta_said or rate <= 0 or self.counters.updates < 10:
            return
        self._eta_said = True
        line = cpu_eta_line(self.cfg, self.counters.env_frames, rate, self.runner.trained_s())
        print(line, flush=True)

    def _resume_hint(self) -> str:
        latest = self.run.latest_checkpoint()
        where = f"the last checkpoint is {latest}" if latest else "no checkpoint was written yet"
        return f"{where}; continue with: sacae train --resume {self.run.path}"

    def _release_replay(self) -> None:
        """No more inserts will come: let the learner's last call finish without waiting."""
        try:
            ray.get(
                [s.release.remote() for s in self.shards], timeout=self.cfg.run.remote_timeout_s
            )
        except (GetTimeoutError, RayActorError, RayTaskError) as err:
            log.warning("could not release the replay shards (%s)", type(err).__name__)

    # -- outputs ----------------------------------------------------------------------------------

    def _checkpoint(self) -> None:
        self._save_checkpoint(self._learner_result(self.learner.state_dict.remote()))

    def _save_checkpoint(self, state: dict) -> None:
        if self.cfg.run.snapshot_replay:
            timeout = self.cfg.run.remote_timeout_s
            ray.get([s.save_snapshot.remote() for s in self.shards], timeout=timeout)
        self.runner.save_checkpoint(state)

    def _log(self) -> None:
        try:
            stats = ray.get([s.stats.remote() for s in self.shards], timeout=10.0)
            extra = replay_metrics(stats, self.cfg.env.action_repeat)
        except (GetTimeoutError, RayActorError, RayTaskError):
            extra = {}  # a restarting shard: its stats come with the next row
        self.runner.write_row(extra)


def cpu_eta_line(
    cfg: TrainConfig, env_frames: int, updates_per_s: float, trained_s: float = 0.0
) -> str:
    """What a learner without a GPU will take for the rest of the run, and what to do about it;
    where `run.max_seconds` ends the run first, about where it will stop."""
    frames_left = max(cfg.run.total_env_frames - env_frames, 0)
    updates = frames_left / cfg.env.action_repeat * cfg.learner.updates_per_step
    frames_per_s = updates_per_s / cfg.learner.updates_per_step * cfg.env.action_repeat
    hours = frames_left / frames_per_s / 3600
    line = (
        f"sacae: no GPU: the learner measured {updates_per_s:.2f} updates/s; the "
        f"{frames_left:,} env frames left ({updates:,.0f} updates) take about {hours:,.1f} h"
    )
    seconds_left = cfg.run.max_seconds - trained_s
    if cfg.run.max_seconds and seconds_left < hours * 3600:
        frames_then = env_frames + max(seconds_left, 0.0) * frames_per_s
        line += (
            f"; run.max_seconds ends it first, after {max(seconds_left, 0.0) / 60:,.0f} min, at "
            f"about {frames_then:,.0f} env frames at this rate"
        )
    if hours <= 12 or CPU_PRESET not in PRESETS:
        return line
    # The networks and batch say whether the CPU preset is in use (a run of it may override its
    # seed, length or run directory, as `sacae bench learning` does).
    if cfg.learner != PRESETS[CPU_PRESET]().learner:
        return line + f"; on a CPU machine use --preset {CPU_PRESET}, sized for one"
    return line + (
        f"; {CPU_PRESET} was sized on a CPU with native bf16 (AVX-512/AMX), where it is 4-5x "
        "faster: lower run.total_env_frames or run.max_seconds, or learn on a GPU"
    )


def train(cfg: TrainConfig, resume: Path | None = None) -> Counters:
    """Run a distributed training job to `run.total_env_frames`; returns the final counters."""
    if resume is not None:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, run_dir=str(resume)))
    # Before anything starts: a run with no usable checkpoint fails here, not after Ray is up.
    checkpoint = load_checkpoint(resume) if resume is not None else None
    env_spec(cfg.env)  # an unknown env id or a bad crop fails here too
    local = cfg.run.address == LOCAL
    cpus = cfg.run.num_cpus or os.cpu_count() or 1
    if local:
        topology = plan_topology(cfg, cpus, gpus=_local_gpus())
        init_ray(LOCAL, num_cpus=topology.ray_cpus)
    else:
        resources = init_ray(cfg.run.address)
        topology = plan_topology(cfg, int(resources.get("CPU", 1)) - 1, resources.get("GPU", 0))
        warning = niceness_warning(niced_nodes(cfg.run.remote_timeout_s))
        if warning:
            print(warning, flush=True)
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
