"""`sacae bench learner --profile`: where an update's time goes, from torch.profiler.

Forward time is attributed to the module that ran it (labelled with record_function regions opened
by forward hooks); backward time to the module of the forward op that created its autograd node
(matched by sequence number); optimiser time to torch's own `Optimizer.step` regions; the
host-to-device copy to a region around `learner.to_device`. Self times, so nothing is counted twice.
On CUDA the times are GPU kernel times, on the CPU CPU times. Runs eager (the hooks would break
torch.compile's graphs), by default the variant `auto` picks. Sampling is not part of this bench: the replay
sampler runs beside the learner (see `sacae bench feed` where it exists).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from learner.learning import SacAeLearner, pick_device
from learner.networks import ConvTrunk, Decoder, QFunction

if TYPE_CHECKING:
    from collections.abc import Mapping

    from learner.bench import LearnerBenchArgs
    from learner.config import LearnerConfig

PREFIX = "sacae:"
COMPONENTS = (
    "encoder convs",
    "encoder Linear+LayerNorm",
    "decoder",
    "policy and Q MLPs",
    "optimisers",
    "target soft update",
    "host-to-device",
    "other",
)


def _label_modules(learner: SacAeLearner) -> list:
    """Forward hooks that open and close a record_function region around each labelled module."""
    nets = learner.nets
    labelled: list[tuple[nn.Module, str]] = []
    for module in nets.modules():
        if isinstance(module, ConvTrunk):
            labelled.append((module, "encoder convs"))
        elif isinstance(module, Decoder):
            labelled.append((module, "decoder"))
        elif isinstance(module, QFunction):
            labelled.append((module, "policy and Q MLPs"))
    for encoder in (nets.critic.encoder, nets.policy.encoder, nets.critic_target.encoder):
        labelled += [
            (encoder.fc, "encoder Linear+LayerNorm"),
            (encoder.ln, "encoder Linear+LayerNorm"),
        ]
    labelled.append((nets.policy.trunk, "policy and Q MLPs"))
    handles, stack = [], []

    def enter(name):
        def hook(module, args):
            region = record_function(PREFIX + name)
            region.__enter__()
            stack.append(region)

        return hook

    def leave(module, args, output):
        stack.pop().__exit__(None, None, None)

    for module, name in labelled:
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    return handles


def _region(event) -> str | None:
    """The innermost labelled region, or optimiser step, that `event` ran inside."""
    while event is not None:
        if event.name.startswith(PREFIX):
            return event.name[len(PREFIX) :]
        if event.name.startswith("Optimizer."):
            return "optimisers"
        event = event.cpu_parent
    return None


def _backward_node(event):
    while event is not None:
        if event.name.startswith("autograd::engine::evaluate_function:"):
            return event
        event = event.cpu_parent
    return None


def split_times(events, on_cuda: bool) -> dict[str, float]:
    """Self time (us) per component over all profiled events."""
    forward_by_seq = {}
    for event in events:
        if event.sequence_nr >= 0 and not _backward_node(event) and "Backward" not in event.name:
            forward_by_seq.setdefault(event.sequence_nr, event)
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        t = event.self_device_time_total if on_cuda else event.self_cpu_time_total
        if not t or event.name.startswith(PREFIX):
            continue
        component = _region(event)
        if component is None and (node := _backward_node(event)) is not None:
            forward = forward_by_seq.get(node.sequence_nr)
            component = _region(forward) if forward is not None else None
            component = None if component in (None, "optimisers") else component
        if component is None and "foreach_lerp" in event.name:
            component = "target soft update"
        totals[component or "other"] += t
    return dict(totals)


def profile_update(args: LearnerBenchArgs, presets: Mapping[str, LearnerConfig]) -> dict:
    """Profile `args.profile_updates` updates (eager); print and return the split."""
    from learner.bench import bench_learner_config, random_batch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    obs_shape = (9, args.image_size[0], args.image_size[0])
    cfg = dataclasses.replace(
        bench_learner_config(args, device, presets),
        precision=args.profile_precision,
        channels_last=args.profile_channels_last,
    )
    learner = SacAeLearner(obs_shape, 3, cfg)
    batch = random_batch(cfg.batch_size, obs_shape, n_step=cfg.n_step)
    for _ in range(2):
        learner.update(batch)
    to_device = learner.to_device

    def labelled_to_device(b):
        with record_function(PREFIX + "host-to-device"):
            return to_device(b)

    learner.to_device = labelled_to_device
    handles = _label_modules(learner)
    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    updates = max(2, args.profile_updates)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(updates):
            metrics = learner.update(batch)
        float(metrics["learner/critic_loss"])
    wall_s = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    learner.to_device = to_device
    totals = split_times(prof.events(), on_cuda)
    total = sum(totals.values())
    print(
        f"learner update time split ({learner.numerics.describe()}, {updates} updates, "
        f"{'GPU kernel' if on_cuda else 'CPU'} self time; wall {1000 * wall_s / updates:.1f} "
        "ms/update under the profiler)"
    )
    print(f"{'component':<26} {'ms/update':>10} {'share':>7}")
    for name in COMPONENTS:
        ms = totals.get(name, 0.0) / 1000 / updates
        print(f"{name:<26} {ms:>10.2f} {totals.get(name, 0.0) / max(total, 1e-9):>7.1%}")
    row = {
        "bench": "learner_profile",
        "numerics": learner.numerics.describe(),
        "device": torch.cuda.get_device_name() if on_cuda else f"cpu x{torch.get_num_threads()}",
        "batch_size": cfg.batch_size,
        "updates": updates,
        "wall_ms_per_update": round(1000 * wall_s / updates, 2),
        "ms_per_update": {k: round(totals.get(k, 0.0) / 1000 / updates, 3) for k in COMPONENTS},
    }
    print(json.dumps(row), flush=True)
    return row
