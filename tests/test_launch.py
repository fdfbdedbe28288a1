"""Config composition, presets, the CLI's errors, topology planning and checkpoint validation (no Ray)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from actors.collector import CollectStats
from actors.evaluate import EvalResult
from actors.spec import TIME_LIMIT, EnvSpec
from launch.cli import main as cli_main
from launch.config import PRESETS, TrainConfig, config_from_dict, load_config
from launch.metrics import read_curve, read_trace
from launch.ray_setup import ClusterAddressError, _check_reachable
from launch.run_dir import CheckpointError, RunDir, load_checkpoint
from launch.runner import Every, Runner, end_summary, replay_metrics, spent_budget
from launch.train import plan_topology
from learner.config import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip_through_json(name, tmp_path):
    cfg = PRESETS[name]()
    path = cfg.save(tmp_path)
    assert load_config(path) == cfg
    # The CarRacing presets see the whole frame with its HUD, shrunk to the recipe's 84x84.
    whole = name in ("carracing", "carracing-cpu")
    assert json.loads(path.read_text())["env"]["crop"] == (
        [0, 96, 0, 96] if whole else [0, 84, 6, 90]
    )
    assert cfg.env.obs_shape[1:] == (84, 84)


def test_sac_ae_preset_is_the_recipe_and_carracing_adds_only_the_measured_aids():
    cfg = PRESETS["sac-ae"]()
    assert cfg.env.obs_shape == (9, 84, 84) and cfg.env.action_repeat == 4
    assert (
        cfg.learner.batch_size == 128
        and cfg.learner.critic_tau == 0.01
        and cfg.learner.encoder_tau == 0.05
    )
    assert cfg.samples_per_insert == 128
    aids = (
        cfg.env.no_progress_steps,
        cfg.env.wrong_way_steps,
        cfg.env.skip_zoom,
        cfg.env.action_map,
    )
    assert aids == (0, 0, False, "affine")
    assert (cfg.learner.augment_shift, cfg.learner.n_step) == (0, 1)
    # `carracing` is the recipe with the aids on, the same aids as `carracing-cpu`: nothing else.
    aided = PRESETS["carracing"]()
    assert aided.learner.augment_shift == 4 and aided.learner.n_step == 3
    assert aided.env.no_progress_steps == 50 and aided.env.skip_zoom
    assert (aided.env.crop, aided.env.image_size) == ((0, 96, 0, 96), 84)
    as_recipe = dataclasses.replace(
        aided,
        env=dataclasses.replace(
            aided.env,
            no_progress_steps=0,
            skip_zoom=False,
            action_map="affine",
            crop=cfg.env.crop,
            image_size=cfg.env.image_size,
        ),
        learner=dataclasses.replace(aided.learner, augment_shift=0, n_step=1),
    )
    assert as_recipe == cfg
    cpu = PRESETS["carracing-cpu"]()
    assert cpu.env == aided.env
    assert (cpu.learner.augment_shift, cpu.learner.n_step) == (4, 3)


def test_unknown_field_in_saved_config_is_refused():
    data = json.loads(TrainConfig().to_json())
    data["learner"]["batch_sise"] = 3
    with pytest.raises(ConfigError, match="batch_sise"):
        config_from_dict(data)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--learner.batch-size", "0"], "learner.batch_size"),
        (["train", "--replay.num-shards", "0"], "replay.num_shards"),
        (["train", "--env.crop", "0", "84", "90", "6"], "env.crop"),
        (["train", "--preset", "smoke", "--replay.min-size", "4"], "replay.min_size"),
    ],
)
def test_cli_rejects_bad_values_naming_the_field(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    assert exc.value.code != 0
    assert message in capsys.readouterr().err.replace("\n", " ").replace("│", "")


def test_cli_resume_needs_a_run_directory(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no config.json"):
        cli_main(["train", "--resume", str(tmp_path)])


def test_resuming_a_finished_run_starts_nothing_and_says_how_to_go_on(tmp_path, capsys):
    base = PRESETS["smoke"]()
    run_cfg = dataclasses.replace(base.run, run_dir=str(tmp_path), max_seconds=600.0)
    cfg = dataclasses.replace(base, run=run_cfg)
    run = RunDir.create(cfg)
    frames = cfg.run.total_env_frames
    counters = {"env_frames": frames, "updates": 9, "train_s": 30.0}
    ckpt = run.save_checkpoint({}, counters, cfg)
    assert spent_budget(cfg.run, {**counters, "env_frames": frames - 1}) is None
    over_time = spent_budget(cfg.run, {**counters, "env_frames": 0, "train_s": 601.0})
    assert over_time and "10 of 10 minutes trained" in over_time
    assert cli_main(["train", "--resume", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"nothing to train, its budget is spent ({frames:,} of {frames:,} env frames" in out
    assert "raise --run.total-env-frames or --run.max-seconds" in out
    # Nothing started: no new incarnation logged, no checkpoint past the finished one.
    assert list(run.checkpoints.glob("*.pt")) == [ckpt]
    assert not (tmp_path / "metrics.jsonl").exists()


def test_unreachable_cluster_address_fails_fast_with_the_address():
    with pytest.raises(ClusterAddressError, match="127.0.0.1:1"):
        _check_reachable("127.0.0.1:1", timeout_s=2.0)
    with pytest.raises(ClusterAddressError, match="HOST:PORT"):
        _check_reachable("127.0.0.1:notaport")


def test_topology_defaults_and_errors():
    cfg = PRESETS["carracing"]()
    topology = plan_topology(cfg, cpus=16, gpus=1)
    assert topology.num_actors == 16 - 1 - cfg.replay.num_shards and topology.learner_gpus == 1
    assert plan_topology(cfg, cpus=2, gpus=0).num_actors == 1  # never zero actors
    with pytest.raises(SystemExit, match="require-gpu"):
        plan_topology(
            dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, require_gpu=True)),
            cpus=4,
            gpus=0,
        )
    graphs = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, cuda_graphs=True))
    assert plan_topology(graphs, cpus=16, gpus=1).learner_gpus == 1
    with pytest.raises(SystemExit, match="cuda-graphs needs the learner on a GPU"):
        plan_topology(graphs, cpus=4, gpus=0)
    two_shards = dataclasses.replace(
        cfg,
        replay=dataclasses.replace(cfg.replay, num_shards=3),
        actor=dataclasses.replace(cfg.actor, num_actors=2),
    )
    with pytest.raises(SystemExit, match="num-shards"):
        plan_topology(two_shards, cpus=8, gpus=0)


def test_checkpoint_round_trip_and_corruption_is_refused(tmp_path):
    cfg = dataclasses.replace(
        PRESETS["smoke"](), run=dataclasses.replace(PRESETS["smoke"]().run, run_dir=str(tmp_path))
    )
    run = RunDir.create(cfg)
    path = run.save_checkpoint({"weights": torch.ones(3)}, {"updates": 7, "env_frames": 100}, cfg)
    loaded = load_checkpoint(tmp_path)
    assert loaded["counters"]["updates"] == 7 and torch.equal(
        loaded["learner"]["weights"], torch.ones(3)
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)
    assert path.exists(), "a bad checkpoint is reported, never deleted"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_old_checkpoints_are_pruned(tmp_path):
    cfg = dataclasses.replace(
        PRESETS["smoke"](), run=dataclasses.replace(PRESETS["smoke"]().run, run_dir=str(tmp_path))
    )
    run = RunDir.create(cfg)
    for updates in range(5):
        run.save_checkpoint({}, {"updates": updates}, cfg)
    assert [p.name for p in sorted(run.checkpoints.glob("*.pt"))] == [
        f"ckpt_{u:010d}.pt" for u in (2, 3, 4)
    ]


def smoke_run(tmp_path) -> tuple[RunDir, TrainConfig]:
    base = PRESETS["smoke"]()
    cfg = dataclasses.replace(base, run=dataclasses.replace(base.run, run_dir=str(tmp_path)))
    return RunDir.create(cfg), cfg


def test_run_directory_falls_back_past_a_corrupt_newest_checkpoint(tmp_path, capsys):
    run, cfg = smoke_run(tmp_path)
    run.save_checkpoint({}, {"updates": 1}, cfg)
    newest = run.save_checkpoint({}, {"updates": 2}, cfg)
    newest.write_bytes(newest.read_bytes()[:100])  # a crash while writing, a full disk
    assert load_checkpoint(tmp_path)["counters"]["updates"] == 1
    warning = capsys.readouterr().err
    assert newest.name in warning and "skipping" in warning
    assert newest.exists(), "a bad checkpoint is reported, never deleted"


def test_every_user_facing_failure_is_one_clean_line(tmp_path, capsys, monkeypatch):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.delenv("SACAE_DEBUG", raising=False)
    run, cfg = smoke_run(tmp_path)
    path = run.save_checkpoint({}, {"updates": 1}, cfg)
    path.write_bytes(b"not a checkpoint")
    failures = [
        (["train", "--run.address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
        (["train", "--resume", str(tmp_path)], "no usable checkpoint"),
        (["eval", "--checkpoint", str(tmp_path)], "no usable checkpoint"),
        (["export", "--run-dir", str(tmp_path / "nope"), str(tmp_path / "x.parquet")], "nope"),
    ]
    for argv, message in failures:
        assert cli_main(argv) != 0, argv
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
        assert len(lines) == 1 and message in lines[0], (argv, lines)
    # With SACAE_DEBUG=1 the traceback comes back (the exception propagates).
    monkeypatch.setenv("SACAE_DEBUG", "1")
    with pytest.raises(ClusterAddressError):
        cli_main(["train", "--run.address", "127.0.0.1:1"])


def test_cpu_only_run_is_told_its_rate_and_time():
    from launch.train import cpu_eta_line

    cfg = PRESETS["carracing"]()
    line = cpu_eta_line(cfg, env_frames=0, updates_per_s=1.0)
    # 2M frames at action repeat 4 and 1 update per step: 500k updates at 1/s is 138.9 h.
    assert "1.00 updates/s" in line and "500,000 updates" in line and "138.9 h" in line
    assert "--preset carracing-cpu" in line
    # A run of the CPU preset (with its own seed and length, as `sacae bench learning` makes) is
    # not told to use the preset it uses, but why it is slow and what to change.
    cpu = PRESETS["carracing-cpu"]()
    cpu = dataclasses.replace(cpu, run=dataclasses.replace(cpu.run, seed=3, max_seconds=60.0))
    line = cpu_eta_line(cpu, 0, 0.5)
    assert "--preset" not in line and "run.total_env_frames" in line, line
    # Its 60 seconds end it first: at 0.5 updates/s, 1 per agent step of 4 frames, 120 env frames.
    assert "ends it first, after 1 min, at about 120 env frames" in line, line
    assert "ends it first" not in cpu_eta_line(cpu, 0, 1e9)  # the frames end before the minute
    # A resumed run has what is left of its minutes.
    assert "after 0 min, at about 1,000 env frames" in cpu_eta_line(cpu, 1000, 0.5, trained_s=61.0)
    assert "sized" not in cpu_eta_line(cpu, 0, 100.0)  # a run that ends in time is left alone


def test_configs_saved_before_the_precision_fields_still_load():
    data = json.loads(PRESETS["smoke"]().to_json())
    data["learner"].pop("precision")
    data["learner"].update(bf16=False, channels_last=True)
    learner = config_from_dict(data).learner
    assert learner.precision == "fp32" and learner.channels_last == "auto"


@pytest.mark.ray
def test_local_ray_stays_on_loopback_even_when_ray_was_imported_first():
    """`sacae train` imports ray before it starts Ray; the local instance must still bind to
    127.0.0.1 (the variable that says so is read at import time)."""
    import os
    import subprocess
    import sys

    code = (
        "import ray\n"
        "from launch.ray_setup import init_ray\n"
        "init_ray('local', num_cpus=1)\n"
        "print(sorted({n['NodeManagerAddress'] for n in ray.nodes()}))\n"
        "ray.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    # A safety net, not a speed check: Ray's start took 66 s niced beside a training run here
    # (beside one it failed once under the 120 s limit this replaces, most likely timing out).
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.stdout.strip().splitlines()[-1] == "['127.0.0.1']", out.stderr[-2000:]


def test_a_run_that_never_updated_says_why_when_it_ends():
    cfg = PRESETS["carracing-cpu"]()
    assert end_summary(cfg, 4_000, 1_000, 250) == (
        "sacae: run ended at 4,000 env frames, 250 learner updates"
    )
    line = end_summary(cfg, 2_400, 600, 0)
    assert "no update ran" in line and "replay.min_size = 1,000" in line and "600 were" in line


def test_metric_rows_measure_actor_waits_over_the_reports_own_time(tmp_path):
    cfg = PRESETS["smoke"]()
    cfg = dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, run_dir=str(tmp_path), progress_bar=False)
    )
    spec = EnvSpec((3, 8, 8), 3, (-1.0, 0.0, 0.0), (1.0, 1.0, 1.0), ("steer", "gas", "brake"), 50.0)
    runner = Runner(cfg, RunDir.create(cfg), None, spec)
    # Two collect rounds of 10 s each, one held 6 s by the replay: 30% of the actors' time, however
    # long the window (here milliseconds; waits over the window's length read far above 1).
    runner.on_collect(CollectStats(env_frames=40, agent_steps=10, wall_s=10.0, send_wait_s=6.0))
    runner.on_collect(CollectStats(env_frames=40, agent_steps=10, wall_s=10.0))
    runner.write_row()
    runner.write_row()  # a window in which no actor reported
    runner.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["actors/send_wait_fraction"] == pytest.approx(0.3)
    assert rows[0]["counters/env_frames"] == 80 and rows[0]["actors/env_frames_per_s"] > 0
    assert "actors/send_wait_fraction" not in rows[1] and rows[1]["actors/env_frames_per_s"] == 0


def test_samples_per_insert_is_left_out_of_a_window_without_inserts():
    shard = dict(index=0, size=900, bytes_used=1, insert_wait_s=0.0, sample_wait_s=0.0)
    busy = replay_metrics([dict(shard, inserts_per_s=2.0, samples_per_s=128.0)], action_repeat=4)
    assert busy["replay/samples_per_insert"] == 64.0
    idle = replay_metrics([dict(shard, inserts_per_s=0.0, samples_per_s=128.0)], action_repeat=4)
    assert "replay/samples_per_insert" not in idle  # not 0: the learner sampled 128/s
    assert idle["learner/env_frames_consumed_per_s"] == 512.0


def test_a_resumed_run_gets_what_is_left_of_its_time_budget(tmp_path):
    cfg = PRESETS["smoke"]()
    cfg = dataclasses.replace(
        cfg,
        run=dataclasses.replace(
            cfg.run, run_dir=str(tmp_path), progress_bar=False, max_seconds=3600.0
        ),
    )
    spec = EnvSpec((3, 8, 8), 3, (-1.0, 0.0, 0.0), (1.0, 1.0, 1.0), ("steer", "gas", "brake"), 50.0)
    run = RunDir.create(cfg)
    fresh = Runner(cfg, run, None, spec)
    assert fresh.running()
    fresh.close()
    # A checkpoint that had trained 3590 s: the count goes on from there, and past the hour the
    # run stops whatever this incarnation's own age.
    saved = {"learner": {}, "counters": {"env_frames": 500, "updates": 9, "train_s": 3590.0}}
    resumed = Runner(cfg, run, saved, spec)
    assert resumed.counters.train_s == 3590.0 and resumed.trained_s() >= 3590.0
    resumed.save_checkpoint({"updates": 10})
    assert load_checkpoint(tmp_path)["counters"]["train_s"] >= 3590.0
    resumed.close()
    over = Runner(cfg, run, {**saved, "counters": {**saved["counters"], "train_s": 3601.0}}, spec)
    assert not over.running() and over.counters.incarnation == 1
    over.close()
    # A checkpoint written before the counter existed resumes with a full budget.
    old = Runner(cfg, run, {"learner": {}, "counters": {"env_frames": 500, "updates": 9}}, spec)
    assert old.counters.train_s == 0.0 and old.running()
    old.close()


def test_schedules_keep_their_marks_when_a_run_resumes_between_them():
    fresh = Every(20_000)
    assert [f for f in range(0, 100_001, 250) if fresh(f)] == [
        20_000,
        40_000,
        60_000,
        80_000,
        100_000,
    ]
    # Resumed at 78,986 frames: the next marks are 80k and 100k, not 98,986 and 118,986.
    resumed = Every(20_000, start=78_986)
    assert [f for f in range(78_986, 120_000, 250) if resumed(f)] == [80_236, 100_236]
    on_mark = Every(20_000, start=80_000)  # resumed exactly on a mark it has already evaluated
    assert not on_mark(80_000) and on_mark(100_000)
    never = Every(0, start=5)
    assert not any(never(f) for f in range(0, 10**6, 10**4))


def test_a_resumed_run_keeps_its_curve_and_goes_on_to_new_eval_tracks(tmp_path):
    cfg = PRESETS["smoke"]()
    run_cfg = dataclasses.replace(
        cfg.run, run_dir=str(tmp_path), progress_bar=False, eval_every_frames=20_000, seed=7
    )
    cfg = dataclasses.replace(cfg, run=run_cfg)
    spec = EnvSpec((3, 8, 8), 3, (-1.0, 0.0, 0.0), (1.0, 1.0, 1.0), ("steer", "gas", "brake"), 50.0)
    run = RunDir.create(cfg)
    first = Runner(cfg, run, None, spec)
    assert first.eval_seed() == 7
    # Evaluations at 20k and 40k; the 60k one is past the checkpoint (45k) the crash leaves.
    for frames, mean in ((20_000, -40.0), (40_000, 100.0), (60_000, 300.0)):
        first.record_eval(frames, EvalResult(mean, 5.0, [mean], [250], None))
    first.close()
    saved = {"learner": {}, "counters": {"env_frames": 45_000, "updates": 9}}
    resumed = Runner(cfg, run, saved, spec)
    assert resumed.curve == [(20_000, -40.0, 5.0), (40_000, 100.0, 5.0)]
    assert resumed.eval_seed() == 9  # the third evaluation's tracks, not the first's again
    assert not resumed.eval_due(59_999) and resumed.eval_due(60_010)
    resumed.record_eval(60_010, EvalResult(280.0, 5.0, [280.0], [250], None))
    resumed.close()
    # The report's curve: the resumed incarnation's 60k point replaces the lost one.
    assert [p[:2] for p in read_curve(tmp_path)] == [
        (20_000, -40.0),
        (40_000, 100.0),
        (60_010, 280.0),
    ]


def test_an_evaluation_row_carries_the_track_diagnostics_when_the_env_has_a_track(tmp_path):
    cfg = PRESETS["smoke"]()
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, run_dir=str(tmp_path)))
    spec = EnvSpec((3, 8, 8), 3, (-1.0, 0.0, 0.0), (1.0, 1.0, 1.0), ("steer", "gas", "brake"), 50.0)
    runner = Runner(cfg, RunDir.create(cfg), None, spec)
    track = EvalResult(500.0, 300.0, [800.0, 200.0], [250, 250], None, [TIME_LIMIT] * 2)
    track = dataclasses.replace(
        track,
        tiles_visited_fractions=[0.9, 0.3],
        wrong_way_fractions=[0.0, 0.5],
        speeds=[60.0, 30.0],
    )
    runner.record_eval(1_000, track)
    runner.record_eval(2_000, EvalResult(-50.0, 0.0, [-50.0], [250], None))  # no track
    runner.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    with_track, without = [r for r in rows if "eval/return_mean" in r]
    assert with_track["eval/tiles_visited_fraction"] == pytest.approx(0.6)
    assert with_track["eval/wrong_way_fraction"] == pytest.approx(0.25)
    assert with_track["eval/speed_mean"] == pytest.approx(45.0)
    track_keys = {"eval/tiles_visited_fraction", "eval/wrong_way_fraction", "eval/speed_mean"}
    assert not track_keys & without.keys()


def test_the_trace_keeps_the_learner_beside_each_evaluation_and_at_the_end(tmp_path):
    rows = [
        {"env_frames": 100, "learner/alpha": 0.1, "learner/entropy": 1.0, "replay/size": 9.0},
        {"env_frames": 200, "eval/return_mean": -40.0, "eval/return_std": 5.0, "eval/q_bias": 3.0},
        {"env_frames": 300, "learner/alpha": 0.2, "learner/entropy": -1.0},
        {"env_frames": 400, "eval/return_mean": 90.0, "eval/return_std": 6.0},
        {"env_frames": 500, "learner/alpha": 0.3},
        # A crash lost what came after the checkpoint at 250 frames: the 400 evaluation goes.
        {"env_frames": 250, "counters/incarnation": 1.0},
        {"env_frames": 450, "learner/alpha": 0.25, "learner/entropy": -2.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    trace = read_trace(tmp_path, keys=("learner/alpha", "learner/entropy"))
    assert trace == [
        {
            "env_frames": 200,
            "eval/return_mean": -40.0,
            "eval/return_std": 5.0,
            "eval/q_bias": 3.0,
            "learner/alpha": 0.1,
            "learner/entropy": 1.0,
        },
        {"env_frames": 450, "learner/alpha": 0.25, "learner/entropy": -2.0},  # where it ended
    ]
    assert read_curve(tmp_path) == [(200, -40.0, 5.0)]
    assert read_trace(tmp_path / "no-run") == []


def test_an_evaluation_right_after_a_resume_carries_the_learner_as_it_stood_at_the_checkpoint(
    tmp_path,
):
    rows = [
        {"env_frames": 100, "learner/alpha": 0.1},
        {"env_frames": 300, "learner/alpha": 0.2, "learner/entropy": -1.0},
        {"env_frames": 250, "counters/incarnation": 1.0},  # 300's values were lost with the crash
        {"env_frames": 260, "eval/return_mean": 10.0, "eval/return_std": 1.0},
        {"env_frames": 280, "learner/alpha": 0.15},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    trace = read_trace(tmp_path, keys=("learner/alpha", "learner/entropy"))
    assert trace == [
        {"env_frames": 260, "eval/return_mean": 10.0, "eval/return_std": 1.0, "learner/alpha": 0.1},
        {"env_frames": 280, "learner/alpha": 0.15},
    ]
