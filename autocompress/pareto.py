"""Pareto fronts on the accuracy–latency plane, hypervolume, and the pick under a budget."""

from __future__ import annotations

from typing import Iterable, Sequence


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = False
    for x, y, d in zip(a, b, directions):
        if d == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


def front(rows: list[dict], keys: Sequence[str] = ("accuracy", "latency_ms"),
          directions: Sequence[str] = ("maximize", "minimize")) -> list[dict]:
    """The non-dominated rows (duplicates of a point are kept once), sorted by the second key."""
    points = [[r[k] for k in keys] for r in rows]
    out, seen = [], set()
    for i, p in enumerate(points):
        if tuple(p) in seen:
            continue
        if not any(dominates(q, p, directions) for j, q in enumerate(points) if j != i):
            out.append(rows[i])
            seen.add(tuple(p))
    return sorted(out, key=lambda r: r[keys[1]])


def hypervolume(points: Iterable[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by (accuracy ↑, latency ↓) points and bounded by ``reference`` = (worst
    accuracy, worst latency). Points not better than the reference in both count for nothing."""
    ref_acc, ref_lat = reference
    pts = sorted({(a, l) for a, l in points if a > ref_acc and l < ref_lat}, key=lambda p: p[1])
    area, best_acc = 0.0, ref_acc
    for i, (acc, lat) in enumerate(pts):
        best_acc = max(best_acc, acc)
        next_lat = pts[i + 1][1] if i + 1 < len(pts) else ref_lat
        area += (best_acc - ref_acc) * (next_lat - lat)
    return area


def pick(rows: list[dict], budget, teacher_accuracy: float) -> tuple[dict | None, bool, str]:
    """The most accurate row that meets every budget; when none does, the closest one (smallest
    total relative violation) with ``meets=False``. Returns ``(row, meets, why)``."""
    from .objectives import constraint_values, feasible

    if not rows:
        return None, False, "no completed candidate"
    scored = [(r, constraint_values(r, budget, teacher_accuracy)) for r in rows]
    ok = [r for r, c in scored if feasible(c)]
    if ok:
        best = max(ok, key=lambda r: (r["accuracy"], -r["latency_ms"]))
        return best, True, f"most accurate of {len(ok)} candidates meeting {budget.describe()}"

    def violation(r, c):
        scale = [budget.latency_ms or 1.0, budget.size_mb or 1.0, budget.max_drop or 1.0]
        return sum(max(0.0, v) / s for v, s in zip(c, scale))

    best, _ = min(scored, key=lambda rc: violation(*rc))
    return best, False, f"NO candidate meets {budget.describe()}; this is the closest"
