"""The `actors/*` learning diagnostics of a window of collection, as metric keys (docs/metrics.md).

Serial and distributed runs both merge the `CollectStats` of a log window (`CollectStats.merged`)
and write `diagnostic_metrics(window, spec)` into the row.
"""

from __future__ import annotations

import numpy as np

from actors.collector import CollectStats
from actors.spec import END_REASONS, EnvSpec


def diagnostic_metrics(window: CollectStats, spec: EnvSpec) -> dict[str, float]:
    """Tiles visited, driving the wrong way, the car's speed, episode end reasons and action
    statistics of the window's steps and episodes.

    Episode keys appear only when episodes finished in the window (`actors/tiles_visited_fraction`,
    `actors/wrong_way_fraction` and `actors/speed_mean` only for an env with a track), action
    keys only when steps were taken, gas-brake overlap only for an env with gas and brake.
    """
    row: dict[str, float] = {}
    reasons = window.episode_end_reasons
    if reasons:
        for reason in END_REASONS:
            row[f"actors/end_{reason}_fraction"] = reasons.count(reason) / len(reasons)
    per_episode = (
        ("actors/tiles_visited_fraction", window.episode_tiles_visited),
        ("actors/wrong_way_fraction", window.episode_wrong_way),
        ("actors/speed_mean", window.episode_speed),
    )
    for key, values in per_episode:
        values = np.asarray(values, np.float64)
        if np.isfinite(values).any():  # NaN: an env without a track
            row[key] = float(np.nanmean(values))
    if window.agent_steps and window.action_sums:
        for name, total in zip(spec.action_names, window.action_sums, strict=True):
            row[f"actors/{name}_mean"] = total / window.agent_steps
        if {"gas", "brake"} <= set(spec.action_names):
            row["actors/gas_brake_overlap_fraction"] = (
                window.gas_brake_overlap_steps / window.agent_steps
            )
    return row
