"""`sacae bench learner`: which rows it measures, and a failing optional row that does not cost the others."""

from __future__ import annotations

import torch

from learner.bench import LearnerBenchArgs, bench_variants, learner_bench, print_table


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
        image_size=48,
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
