"""Whole-update CUDA graphs (learner/graphs.py): the bookkeeping around the capture, on the CPU.

A real capture needs CUDA. What does not is checked here with an eager stand-in for the graph
whose replay reruns the recorded function and writes into the same output tensor every time, as a
graph's static output is overwritten: the warm-up count, one graph per phase of the schedule, each
batch copied into the graph's static inputs, metrics that outlive the next replay, and the graphs
dropped when a checkpoint replaces the optimisers' state. The graph path must give the same
parameters and metrics as the plain update, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch

from learner.config import ConfigError, LearnerConfig
from learner.graphs import warmup_updates
from learner.learning import SacAeLearner
from tests.test_learner import TINY, make_batch

CFG = dataclasses.replace(TINY, augment_shift=2)  # the shift draws random numbers in the update
OBS = (9, 48, 48)


class EagerGraphs:
    """Stand-in for `cuda_capture`: records how often it captured; replays by rerunning."""

    def __init__(self):
        self.captures = 0

    def __call__(self, fn):
        self.captures += 1
        static = None

        def replay():
            nonlocal static
            out = fn()
            if static is None:
                static = out
            else:
                static.copy_(out)  # a graph's output tensor is the same one at every replay
            return static

        return replay


def paired_learners(cfg: LearnerConfig = CFG):
    plain = SacAeLearner(OBS, 3, cfg, seed=3)
    graphed = SacAeLearner(OBS, 3, cfg, seed=3)
    capture = EagerGraphs()
    graphs = graphed.capture_updates(capture=capture, warmup_context=contextlib.nullcontext)
    return plain, graphed, graphs, capture


def batches(count: int):
    # Distinct batches: a graph that kept reading its first batch would drift from the plain update.
    return [make_batch(OBS, seed=i) for i in range(count)]


def assert_same_parameters(a: SacAeLearner, b: SacAeLearner) -> None:
    for (name, pa), pb in zip(
        a.nets.state_dict().items(), b.nets.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
    assert torch.equal(a.log_alpha, b.log_alpha)


def test_graph_updates_match_plain_updates_bit_for_bit():
    plain, graphed, graphs, capture = paired_learners()
    plain_metrics, graphed_metrics = [], []
    for batch in batches(9):
        torch.manual_seed(100 + plain.updates)  # the same random draws for both learners
        plain_metrics.append(plain.update(batch))
        torch.manual_seed(100 + graphed.updates)
        graphed_metrics.append(graphed.update(batch))
    assert_same_parameters(plain, graphed)
    # Checked only now: a metric that was a view of the graph's output would have been overwritten.
    for step, (p, g) in enumerate(zip(plain_metrics, graphed_metrics, strict=True)):
        assert p.keys() == g.keys(), step
        for key in p:
            assert torch.equal(p[key].float(), g[key]), (step, key)


def test_warmup_then_one_graph_per_phase():
    cfg = dataclasses.replace(CFG, policy_update_every=2, target_update_every=2)
    _, graphed, graphs, capture = paired_learners(cfg)
    assert graphs.warmup == warmup_updates(2, 2, 1) == 4
    for batch in batches(graphs.warmup):
        graphed.update(batch)
    assert capture.captures == 0  # warm-up runs eagerly
    for batch in batches(6):
        graphed.update(batch)
    # Two phases: (policy, targets, decoder) on even updates, the decoder alone on odd ones.
    assert capture.captures == 2
    assert set(graphs.graphs) == {(True, True, True), (False, False, True)}


def test_loading_a_checkpoint_drops_the_graphs():
    _, graphed, graphs, capture = paired_learners()
    for batch in batches(graphs.warmup + 2):
        graphed.update(batch)
    assert graphs.graphs and graphs.eager_left == 0
    graphed.load_state_dict(graphed.state_dict())
    assert not graphs.graphs and graphs.eager_left == graphs.warmup


def test_cuda_graphs_on_the_cpu_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="learner.cuda_graphs"):
        dataclasses.replace(TINY, cuda_graphs=True, device="cpu")
    # device auto on a machine without CUDA: the learner refuses when it lands on the CPU.
    cfg = dataclasses.replace(TINY, cuda_graphs=True, device="auto")
    with pytest.raises(ConfigError, match="learner.cuda_graphs.*drop --learner.cuda-graphs"):
        SacAeLearner(OBS, 3, cfg, device=torch.device("cpu"))
