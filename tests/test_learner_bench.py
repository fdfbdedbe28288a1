"""`sacae bench learner`: which rows it measures, and a failing optional row that does not cost the others."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from common.validation import ConfigError
from launch.config import PRESETS, learner_presets
from learner.bench import (
    BASELINE,
    LearnerBenchArgs,
    bench_learner_config,
    bench_variants,
    learner_bench,
    print_table,
)


def test_cuda_adds_compile_and_graph_rows_of_the_auto_variant():
    variants, auto_name = bench_variants(LearnerBenchArgs(), torch.device("cuda"))
    names = [v.name for v in variants]
    assert auto_name == "bf16 cl-on"
    assert names[0] == "baseline fp32 cl-off" and len(names) == 1 + 4 + 3
    assert names[-3:] == ["bf16 cl-on compile", "bf16 cl-on graphs", "bf16 cl-on compile graphs"]
    graphs = variants[-1]
    assert graphs.compile and graphs.cuda_graphs and graphs.optional


def test_cpu_measures_the_four_variants_and_baseline_only():
    variants, _ = bench_variants(LearnerBenchArgs(), torch.device("cpu"))
    assert len(variants) == 5
    assert not any(v.compile or v.cuda_graphs for v in variants)


def test_a_failing_optional_row_reports_its_error_and_the_others_still_measure(capsys):
    # CUDA graphs asked for on the CPU: the learner refuses, the row says why, the rest is measured.
    args = LearnerBenchArgs(
        batch_size=4,
        image_size=(48,),
        seconds=0.01,
        variants="auto",
        baseline=False,
        device="cpu",
        cuda_graphs="on",
        threads=1,
    )
    streamed = []
    rows = learner_bench(args, on_row=streamed.append)
    assert streamed == rows  # each row is handed out as soon as it is measured
    print_table(rows)
    measured, failed = rows
    assert measured["updates_per_s"] > 0 and measured["error"] is None and measured["auto"]
    assert failed["variant"].endswith(" graphs") and failed["updates_per_s"] is None
    assert "learner.cuda_graphs" in failed["error"]
    assert "failed" in capsys.readouterr().out


def test_preset_learner_at_several_sizes_each_against_its_own_baseline(capsys):
    args = LearnerBenchArgs(
        preset="carracing-cpu",
        image_size=(40, 32),
        seconds=0.01,
        variants="auto",
        device="cpu",
        threads=1,
    )
    presets = learner_presets()
    rows = learner_bench(args, presets=presets)
    print_table(rows)
    assert [(r["obs_shape"][-1], r["variant"] == BASELINE) for r in rows] == [
        (40, True),
        (40, False),
        (32, True),
        (32, False),
    ]
    preset = PRESETS["carracing-cpu"]().learner
    assert all(
        r["batch_size"] == preset.batch_size == 64 and r["preset"] == "carracing-cpu" for r in rows
    )
    for baseline, auto in (rows[:2], rows[2:]):
        # Both rates are rounded to 3 decimals in the row, the ratio from the unrounded ones.
        ratio = auto["updates_per_s"] / baseline["updates_per_s"]
        assert auto["vs_baseline"] == pytest.approx(ratio, abs=0.005)
    # The preset's networks are what is measured: the learner built for a row has its widths.
    cfg = bench_learner_config(args, torch.device("cpu"), presets)
    assert (cfg.num_filters, cfg.hidden_dim, cfg.augment_shift) == (16, 512, 4)
    smaller = dataclasses.replace(args, batch_size=8)
    assert bench_learner_config(smaller, torch.device("cpu"), presets).batch_size == 8
    assert " 32 " in capsys.readouterr().out


def test_an_unknown_preset_is_named_with_the_known_ones():
    with pytest.raises(ConfigError, match="carracing-cpu"):  # only the recipe without launch's
        bench_learner_config(LearnerBenchArgs(preset="carracing-cpu"), torch.device("cpu"))
