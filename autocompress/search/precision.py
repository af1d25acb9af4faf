"""The precision knob of the allocated space (``techniques.precision.dtype``, plans'
:class:`~autocompress.techniques.precision.Precision`): which precisions can pay on the target,
and which arithmetic the one-minute recipes use. Both read the latency predictor (a table per
precision), not constants, so they hold on any CPU and runtime."""

from __future__ import annotations

from dataclasses import replace

from .allocate import teacher_latency, uniform_latency
from .space_file import GROUPS

#: A precision other than fp32 stays in the space only when the predictor says it makes the whole
#: model at least this much faster (torch bf16 on an Intel Xeon with AMX: about half the time).
PAYING_PRECISION = 0.10


def paying_precisions(space):
    """``space`` without the precisions that cannot pay on the target: those the predictor has no
    table for (the runtime has no such kernels on this CPU: the search calibrates one only where it
    has) and those whose teacher is predicted less than :data:`PAYING_PRECISION` faster than in
    fp32. What it leaves out is added to ``space.dropped``, with why."""
    offered = space.offered_precisions()
    if offered in ((), ("fp32",)):
        return space
    predictor, dims = space.predictor, space.predictor.dims
    fp32_ms = teacher_latency(predictor.predict, dims)
    keep, dropped = [], []
    for p in offered:
        if p == "fp32":
            keep.append(p)
        elif p not in predictor.precisions():
            dropped.append(f"precision {p}: {predictor.target.runtime} has no {p} kernels here")
        else:
            ms = teacher_latency(predictor.in_precision(p).predict, dims)
            if ms <= (1 - PAYING_PRECISION) * fp32_ms:
                keep.append(p)
            else:
                dropped.append(f"precision {p}: the teacher is predicted at {ms:.2f} ms against {fp32_ms:.2f} ms in "
                               f"fp32 (it needs {PAYING_PRECISION:.0%} less)")
    if not dropped:
        return space
    techniques = {k: v for k, v in space.techniques.items() if k != "precision"}
    if tuple(keep) not in ((), ("fp32",)):
        techniques["precision"] = {"dtype": tuple(keep)}
    return replace(space, techniques=techniques, dropped=space.dropped + tuple(dropped))


def fastest_arithmetic(space) -> tuple[dict[str, str], str]:
    """The linear dtypes and the precision the recipes use: of int8 linears (wherever ``space``
    allows them) or fp32 ones, in each precision the space offers, what the predictor says runs
    the whole model fastest. On torch (an Intel Xeon with AMX) that is bf16 with fp32 linears: int8
    linears inside a bf16 model cast their inputs and are slower than either; on OpenVINO the mix
    was the fastest measured (docs/runtimes.md)."""
    offered = space.offered_precisions() or ("fp32",)
    int8 = {g: "int8" if "int8" in space.dtype[g] else space.dtype[g][0] for g in GROUPS}
    floats = dict.fromkeys(GROUPS, "fp32")
    if space.predictor is None:
        return int8, ("fp32" if "fp32" in offered else offered[0])
    predictor, dims = space.predictor, space.predictor.dims
    options = [(int8, p) for p in offered] + [(floats, p) for p in offered if p != "fp32"]
    options = [(d, p) for d, p in options if p in predictor.precisions()
               and all(d[g] in space.dtype[g] for g in GROUPS)] or [(int8, offered[0])]
    return min(options, key=lambda o: uniform_latency(predictor.in_precision(o[1]).predict, dims, o[0]))
