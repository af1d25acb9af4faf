"""What this CPU can do: its ISA flags, which decide which kernels a technique runs on (int8
activations' range, bf16). Importing it costs nothing (no torch), so runtimes declare their
capabilities from it at registration."""

from __future__ import annotations


def cpu_flags() -> set[str]:
    """This CPU's ISA flags (``/proc/cpuinfo``; empty where unreadable)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return set(next((line for line in fh if line.startswith("flags")), "").split())
    except OSError:
        return set()


def has_vnni() -> bool:
    """int8 dot products (AVX512-VNNI or AVX-VNNI)."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def has_bf16() -> bool:
    """bf16 matrix instructions (AVX512-BF16 or AMX-BF16); without them torch emulates bf16 and
    runs it slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


__all__ = ["cpu_flags", "has_bf16", "has_vnni"]
