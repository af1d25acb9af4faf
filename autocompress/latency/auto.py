"""``--runtime auto``: the runtime on which the teacher runs fastest here, measured now.

Each installed runtime times the teacher as it runs it best without changing its structure: with
every linear int8 where the runtime has int8 kernels (the one-line answer there), else fp32. A
runtime whose fp32 teacher is fastest can lose to one whose int8 teacher is, and the search's plans
start from int8, so that is the fair comparison (measured here, docs/runtimes.md, same rounds:
OpenVINO's NNCF int8 teacher 7.38 ms, ONNX Runtime's int8 11.92 ms, OpenVINO fp32 16.22 ms). Models are timed in fresh processes, interleaved over ``rounds`` rounds (the
machine's speed drifts), and the medians compared.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from .runtime import runtime_class, runtime_names
from .target import Target


def fastest_runtime(ctx, target: Target, *, rounds: int = 2, progress: bool = True) -> tuple[Target, dict]:
    """``target`` on the fastest installed runtime for ``ctx``'s teacher, and the figures:
    ``{runtime: {"model": "int8"|"fp32", "p50_ms": median, "rounds": [...]}}``."""
    from dataclasses import replace

    from ..apply import compress
    from ..plan import LINEAR_GROUPS, CompressionPlan, LayerPlan
    from .isolated import measure_saved

    installed = [name for name in runtime_names() if runtime_class(name).missing() is None]
    int8 = CompressionPlan(name="int8", defaults=LayerPlan(dtype=dict.fromkeys(LINEAR_GROUPS, "int8")))
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="autocompress-auto-") as tmp:
        folders = {}
        for kind, plan in (("int8", int8), ("fp32", CompressionPlan.keep_all("teacher"))):
            if any((kind == "int8") == runtime_class(n).int8 for n in installed):
                folders[kind] = compress(plan, ctx, progress=False).save_pretrained(Path(tmp) / kind)
        for name in installed:
            kind = "int8" if runtime_class(name).int8 else "fp32"
            figures[name] = {"model": kind, "rounds": []}
        for _ in range(rounds):
            for name, row in figures.items():
                stats = measure_saved(folders[row["model"]], replace(target, runtime=name), runs=30)
                row["rounds"].append(round(stats.p50, 3))
    for row in figures.values():
        row["p50_ms"] = round(statistics.median(row["rounds"]), 3)
    best = min(figures, key=lambda name: figures[name]["p50_ms"])
    if progress:
        said = ", ".join(f"{n} {r['p50_ms']:.2f} ms ({r['model']} teacher)" for n, r in figures.items())
        print(f"--runtime auto: {said} -> {best}", flush=True)
    return replace(target, runtime=best), figures


__all__ = ["fastest_runtime"]
