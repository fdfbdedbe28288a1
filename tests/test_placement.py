"""Placement over nodes, without Ray: spread by free CPUs, pinned demands, replacements."""

from __future__ import annotations

import pytest

from launch.placement import Demand, NodeInfo, plan_placement


def nodes(*cpus: float) -> list[NodeInfo]:
    return [NodeInfo(f"n{i}", f"10.0.0.{i}", c) for i, c in enumerate(cpus)]


def test_processes_spread_by_free_cpus_and_ties_go_to_the_first_node():
    plan = plan_placement(
        nodes(2, 2, 2, 2),
        [Demand("learner", 1, "n0")]
        + [Demand(f"shard{i}", 1) for i in range(2)]
        + [Demand(f"actor{i}", 1) for i in range(3)],
    )
    assert plan.assigned == {
        "learner": "n0",
        "shard0": "n1",
        "shard1": "n2",
        "actor0": "n3",
        "actor1": "n0",
        "actor2": "n1",
    }
    assert [plan.free_cpus(n) for n in ("n0", "n1", "n2", "n3")] == [0, 0, 1, 1]


def test_one_node_takes_everything_even_past_its_cpus():
    plan = plan_placement(nodes(2), [Demand(f"actor{i}", 1) for i in range(4)])
    assert set(plan.assigned.values()) == {"n0"} and plan.free_cpus("n0") == -2


def test_a_replacement_goes_to_a_node_that_joined_and_never_to_a_dead_one():
    plan = plan_placement(nodes(2, 2), [Demand(f"actor{i}", 1) for i in range(4)])
    assert plan.assigned["actor1"] == "n1"
    plan.update_nodes(nodes(2) + [NodeInfo("n9", "10.0.0.9", 4)])  # n1 died, n9 joined
    assert "actor1" not in plan.assigned and "actor3" not in plan.assigned
    assert plan.place(Demand("actor1", 1)) == "n9"
    assert plan.place(Demand("actor3", 1)) == "n9"


def test_a_replacement_avoids_the_node_its_predecessor_died_on_among_equals():
    plan = plan_placement(nodes(2, 2), [Demand("actor0", 1)])
    assert plan.assigned == {"actor0": "n0"}
    assert plan.place(Demand("actor0", 1), avoid="n0") == "n1"  # equal room: not where it died
    # With more room there, the node it died on is still the right place.
    plan = plan_placement(nodes(4, 2), [Demand("actor0", 1)])
    assert plan.place(Demand("actor0", 1), avoid="n0") == "n0"


def test_no_node_is_a_clear_error():
    with pytest.raises(RuntimeError, match="ray status"):
        plan_placement([], [Demand("actor0", 1)])
