"""Numerics decided once per machine: bf16 autocast, channels-last convs, CUDA backend flags.

`learner.precision` and `learner.channels_last` are `auto` by default and resolved here when the
learner starts. What runs in bf16 when it is on is listed in docs/deviations.md (item 11): the
pixel side only (convs, the encoder's and the decoder's Linear layers); parameters, optimiser
state, the latent-side MLPs (policy, Q heads), targets and every loss stay fp32.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

CPU_CHANNELS_LAST = True
"""What `channels_last=auto` picks on the CPU.

Measured on a 2-core Sapphire Rapids (AMX, torch 2.13 CPU, batch 128, 9x84x84, a loaded machine,
best of several runs): channels-last was faster for the conv trunk (about 1.4x in fp32 and bf16)
and much faster for the decoder's transposed convs in fp32, which in NCHW fall back to a slow
non-oneDNN kernel. An earlier note measured channels-last slower on a 2-core AMD EPYC; there,
pass `--learner.channels-last off`. `sacae bench learner` prints all four variants to check.
"""

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""/proc/cpuinfo flags of x86 CPUs with native bf16 dot products (Cooper Lake, Zen 4, Sapphire
Rapids and later). Without them bf16 is emulated and slower than fp32."""


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The `flags` of the first processor in a /proc/cpuinfo text (empty when there is none)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def _this_cpu_has_native_bf16() -> bool:
    return cpu_has_native_bf16()


def cpu_has_native_bf16(cpuinfo_path: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bf16 natively (avx512_bf16 or AMX), read from /proc/cpuinfo.

    Where that file is missing (macOS, Windows) torch's own CPU probe answers; its public
    `torch.backends.cpu.get_cpu_capability()` only says "AVX512", which does not imply bf16, so
    the private per-feature probes are used when this torch has them, else the answer is False.
    """
    try:
        flags = parse_cpu_flags(Path(cpuinfo_path).read_text())
    except OSError:
        flags = None
    if flags:
        return bool(flags & BF16_CPU_FLAGS)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


@dataclass(frozen=True)
class Numerics:
    """The resolved precision and memory format of one learner."""

    device_type: str
    bf16: bool
    channels_last: bool

    def autocast(self) -> torch.autocast:
        """bf16 autocast for one step's forward and loss (never around an optimiser step).

        cache_enabled=False: the cache keeps bf16 copies of weights until the region exits, so a
        region spanning an optimiser step would use stale weights, and a no_grad forward would
        cache copies without gradient history (pytorch#112583). With one region per forward the
        cache would save nothing anyway.
        """
        return torch.autocast(
            self.device_type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False
        )

    def describe(self) -> str:
        return f"{'bf16' if self.bf16 else 'fp32'}, channels-last {'on' if self.channels_last else 'off'}"


def resolve_numerics(
    device: torch.device,
    precision: str = "auto",
    channels_last: str = "auto",
    native_bf16: bool | None = None,
) -> Numerics:
    """Resolve `auto` once: bf16 on CUDA and on CPUs with native bf16; channels-last on CUDA, and on
    the CPU as `CPU_CHANNELS_LAST` says. `native_bf16` overrides the CPU probe (for tests)."""
    on_cuda = device.type == "cuda"
    if precision == "auto":
        cpu_bf16 = _this_cpu_has_native_bf16() if native_bf16 is None else native_bf16
        bf16 = on_cuda or (device.type == "cpu" and cpu_bf16)
    else:
        bf16 = precision == "bf16"
    if channels_last == "auto":
        memory_cl = on_cuda or (device.type == "cpu" and CPU_CHANNELS_LAST)
    else:
        memory_cl = channels_last == "on"
    return Numerics(device_type=device.type, bf16=bf16, channels_last=memory_cl)


def configure_cuda_backends() -> None:
    """Once at learner start on CUDA: cuDNN autotuning (shapes are fixed) and TF32 matmuls.

    TF32 rounds fp32 matmul inputs to a 10-bit mantissa (fp32 accumulation): it applies to the
    layers kept in fp32 (the policy MLP and the Q heads) on Ampere and later GPUs.
    """
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")


def inference_autocast(device: str | torch.device = "cpu") -> contextlib.AbstractContextManager:
    """For actors' policy inference: bf16 autocast where it is native (CUDA, or a CPU with
    avx512_bf16/AMX), else a no-op context. Same detection as the learner's `precision=auto`.

    Acting under it changes actions by bf16 rounding of the conv trunk (the policy MLP and the
    Gaussian stay fp32, as in the learner).
    """
    device = torch.device(device)
    numerics = resolve_numerics(device, "auto", "off")
    return numerics.autocast() if numerics.bf16 else contextlib.nullcontext()


def compute_dtype(device_type: str) -> torch.dtype:
    """The dtype autocast computes convs in right now on `device_type`: bf16 inside the learner's
    autocast region, else the default float dtype (fp32; the same-math test runs in float64)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type)
    except TypeError:  # torch < 2.4 has per-device functions only
        if device_type == "cpu":
            enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        else:
            enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return dtype if enabled else torch.get_default_dtype()


def full(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in the default float dtype: bf16 activations back to fp32 where bf16 would hurt
    (float64 throughout in the same-math test, tests/test_learner.py)."""
    return tensor.to(torch.get_default_dtype())


def full_precision(tensor: torch.Tensor) -> torch.autocast:
    """A region where autocast is off, on the device of `tensor`: the layers that stay fp32."""
    return torch.autocast(tensor.device.type, enabled=False)
