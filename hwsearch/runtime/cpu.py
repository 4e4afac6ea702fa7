"""What this machine's CPU is, as far as ONNX Runtime's kernels care: its model name, its SIMD flags,
and whether its int8 kernels saturate.

ORT's x86 int8 convolutions and matrix products multiply uint8 activations by int8 weights. On a
CPU without VNNI instructions (AVX2, or AVX-512 without VNNI) they add pairs of products in int16
(``vpmaddubsw``), which can saturate when weights use the full int8 range: accuracy drops by
points (a digits ResNet, measured on an AVX2 AMD EPYC: 0.975 -> 0.944). 7-bit weights (ORT's
``reduce_range``) cannot saturate, but are coarser, so ``runtime.quantize`` tries both there; with
VNNI (or on ARM) products accumulate in int32 and 8-bit weights are used.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, list[str]]:
    """CPU model name and the SIMD flags that decide ORT's kernels (from /proc/cpuinfo where present)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "sse4", "fma", "amx", "vnni")))
                break
    except OSError:
        pass
    return model, flags


def int8_saturates(machine: str | None = None, flags: list[str] | None = None) -> bool:
    """Whether ORT's uint8 x int8 kernels on this CPU (or on ``machine`` with ``flags``) add products
    in int16 and so saturate with full-range int8 weights: an x86 CPU without VNNI. Where the flags
    cannot be read (no /proc/cpuinfo) an x86 CPU is assumed to lack VNNI, the safe side."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    flags = cpu_info()[1] if flags is None else flags
    return not any(f in flags for f in VNNI_FLAGS)
