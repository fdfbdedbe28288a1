"""`sacae bench ablation`: arm parsing, the comparison over seeds, and a tiny serial ablation."""

from __future__ import annotations

import json

import pytest

from launch.bench_ablation import (
    BASE,
    compare,
    detectable_difference,
    main,
    markdown,
    parse_arm,
    permutation_p,
    pooled_seed_sd,
    seeds_needed,
)


def test_arms_parse_into_a_name_and_train_overrides():
    assert parse_arm("ar8: --env.action-repeat 8 --env.no-progress-steps 13") == (
        "ar8",
        ["--env.action-repeat", "8", "--env.no-progress-steps", "13"],
    )
    for bad in ["no colon --env.skip-zoom", "Bad Name: --env.skip-zoom", "base: --x 1"]:
        with pytest.raises(SystemExit, match="is invalid"):
            parse_arm(bad)
    with pytest.raises(SystemExit, match="changes nothing"):
        parse_arm("empty:   ")


def test_a_bad_override_in_any_arm_stops_the_ablation_before_anything_trains(tmp_path):
    argv = ["--preset", "smoke", "--arms", "a: --learner.batch-size 8", "b: --learner.batch-sise 8"]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        main(argv)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_permutation_p_is_exact_over_the_splits_of_the_seed_means():
    # 2 vs 2, fully apart: of the 6 splits, the observed one and its mirror are as extreme.
    assert permutation_p([1.0, 2.0], [3.0, 4.0]) == pytest.approx(1 / 3)
    # 3 vs 3, fully apart: 2 of 20.
    assert permutation_p([1.0, 2.0, 3.0], [7.0, 8.0, 9.0]) == pytest.approx(0.1)
    # Interleaved: the difference is no larger than most splits'.
    assert permutation_p([1.0, 4.0], [2.0, 3.0]) == 1.0


def fake_report(means: list[float], minutes: float = 120.0) -> dict:
    seeds = {
        str(i): {
            "wall_s": 1.0,
            "machine": {"cpu": "AMD EPYC"},
            "eval": {"mean": m, "counters": {"train_s": minutes * 60, "env_frames": 114_735}},
            "curve": [],
        }
        for i, m in enumerate(means)
    }
    return {"seeds": seeds}


def test_comparison_rows_give_each_arm_against_the_base():
    reports = {BASE: fake_report([500.0, 560.0]), "no-shift": fake_report([300.0, 380.0])}
    overrides = {BASE: [], "no-shift": ["--learner.augment-shift", "0"]}
    (base, arm), spread = compare(reports, overrides)
    assert base["mean"] == 530.0 and "delta" not in base and base["trained_min"] == [120.0, 120.0]
    assert arm["delta"] == -190.0 and arm["p"] == pytest.approx(1 / 3)
    table = markdown("x", [base, arm], spread, "sacae bench ablation", {BASE: [], "no-shift": []})
    assert (
        "| no-shift | `--learner.augment-shift 0` | 120, 120 | 114.7, 114.7 | AMD EPYC, AMD EPYC "
        "| 300, 380 | 340 | -190 | 0.33 | 140 | 2 |" in table
    )
    # Seeds spread 30 and 40 about their arms' means: pooled sd sqrt(5000 / 2) = 50.
    assert spread == {"seed_sd": pytest.approx(50.0), "dof": 2} and "seed_sd" not in arm
    assert "pooled over the arms, is 50 (2 degrees of freedom)" in table
    # One seed per arm: a difference, but no test.
    single, no_spread = compare(
        {BASE: fake_report([500.0]), "a": fake_report([400.0])}, {BASE: [], "a": ["-x"]}
    )
    assert single[1]["delta"] == -100.0 and "p" not in single[1] and no_spread is None
    assert "Still to train" not in table
    assert "Still to train (run the same command again): a (seeds 1)." in markdown(
        "x", single, None, "sacae bench ablation", {BASE: [], "a": [1]}
    )


def test_seed_planning_figures_follow_the_two_sample_normal_approximation():
    # (z_0.975 + z_0.8) = 1.95996 + 0.84162 = 2.80158.
    assert detectable_difference(100.0, 2, 2) == pytest.approx(280.158, abs=0.01)
    assert detectable_difference(100.0, 8, 8) == pytest.approx(140.079, abs=0.01)
    # 2 * (2.80158 * 100 / 50) ** 2 = 62.8 -> 63 seeds per arm; 4 times the difference, 1/16.
    assert seeds_needed(100.0, 50.0) == 63 and seeds_needed(100.0, -50.0) == 63
    assert seeds_needed(100.0, 200.0) == 4
    assert seeds_needed(100.0, 1000.0) == 2  # never below the 2 a comparison needs
    assert seeds_needed(100.0, 0.0) is None
    # Each arm about its own mean; an arm of one seed adds nothing.
    sd, dof = pooled_seed_sd([[0.0, 20.0], [100.0, 110.0, 120.0], [5.0]])
    assert dof == 3 and sd == pytest.approx(((200.0 + 200.0) / 3) ** 0.5)
    assert pooled_seed_sd([[1.0], [2.0]]) is None


def test_the_machine_column_names_the_precision_each_seed_learned_in():
    report = fake_report([500.0, 560.0])
    report["seeds"]["1"]["numerics"] = {
        "cpu: fp32, channels-last on": 5,
        "cpu: bf16, channels-last on": 10,  # resumed on a machine with native bf16
    }
    (row,), _ = compare({BASE: report}, {BASE: []})
    # A seed recorded before numerics were kept shows its CPU only.
    assert row["machines"] == ["AMD EPYC", "AMD EPYC (bf16+fp32)"]


@pytest.mark.slow
def test_a_tiny_ablation_writes_each_arm_report_and_the_comparison_and_skips_done_arms(tmp_path):
    out = tmp_path / "out"
    argv = [
        "--preset", "smoke", "--seeds", "0", "--frames", "200", "--serial", "--eval-episodes", "1",
        "--arms", "small-batch: --learner.batch-size 8", "--name", "t",
        "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(out), "--", "--run.no-progress-bar",
    ]  # fmt: skip
    rows = main(argv)
    assert [r["arm"] for r in rows] == [BASE, "small-batch"]
    arm = json.loads((out / "t-small-batch.json").read_text())
    assert arm["config"]["learner"]["batch_size"] == 8
    assert json.loads((out / "t-base.json").read_text())["config"]["learner"]["batch_size"] == 16
    summary = json.loads((out / "ablations" / "t.json").read_text())
    assert summary["arms"] == json.loads(json.dumps(rows))
    assert "| small-batch | `--learner.batch-size 8` |" in (out / "ablations" / "t.md").read_text()
    assert (out / "ablations" / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert "t-base" in (out / "README.md").read_text()  # listed in the learning index
    # Again: both arms have every seed, so nothing trains and their reports stay as they are.
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    (tmp_path / "runs").rename(tmp_path / "moved")  # training would have to start from scratch
    assert main(argv) == rows
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before
    assert not (tmp_path / "runs").exists()
    # An arm whose overrides changed is not read back as done: its report is refused, naming why.
    changed = [a.replace("batch-size 8", "batch-size 4") for a in argv]
    with pytest.raises(SystemExit, match="learner.batch_size"):
        main(changed)
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before


@pytest.mark.slow
def test_max_seeds_trains_the_next_missing_seed_of_every_arm_in_turn(tmp_path):
    out = tmp_path / "out"
    argv = [
        "--preset", "smoke", "--seeds", "0", "1", "--frames", "200", "--serial",
        "--eval-episodes", "1", "--arms", "small-batch: --learner.batch-size 8", "--name", "t",
        "--max-seeds", "1", "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(out),
        "--", "--run.no-progress-bar",
    ]  # fmt: skip
    # First sitting: the base arm's seed 0 only; the comparison says what is still to train.
    rows = main(argv)
    assert [(r["arm"], len(r["seed_means"])) for r in rows] == [(BASE, 1)]
    summary = json.loads((out / "ablations" / "t.json").read_text())
    assert summary["missing"] == {BASE: [1], "small-batch": [0, 1]}
    assert "small-batch (seeds 0, 1)" in (out / "ablations" / "t.md").read_text()
    # Second sitting: seeds run in the outer loop, so the other arm's seed 0 comes next.
    rows = main(argv)
    assert [(r["arm"], len(r["seed_means"])) for r in rows] == [(BASE, 1), ("small-batch", 1)]
    assert rows[1]["delta"] == rows[1]["mean"] - rows[0]["mean"] and "p" not in rows[1]
    assert json.loads((out / "t-small-batch.json").read_text())["seeds"].keys() == {"0"}
    assert json.loads((out / "ablations" / "t.json").read_text())["missing"] == {
        BASE: [1],
        "small-batch": [1],
    }
    # Compare only: the same table and the same missing seeds, and nothing trains.
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    assert main([*argv[: argv.index("--")], "--compare-only", *argv[argv.index("--") :]]) == rows
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before
    summary = json.loads((out / "ablations" / "t.json").read_text())
    assert summary["missing"] == {BASE: [1], "small-batch": [1]}
    assert "--max-seeds 1" in summary["command"] and "--compare-only" not in summary["command"]
    bad = list(argv)
    bad[bad.index("--max-seeds") + 1] = "-1"
    with pytest.raises(SystemExit, match="--max-seeds -1 is negative"):
        main(bad)
