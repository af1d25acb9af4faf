"""What the search optimises and which limits a candidate must meet.

Objectives: maximise accuracy, minimise latency p50 on the target, and (when a size budget is
given or asked for) minimise size. Budgets are constraints handed to the sampler (Optuna's
``Trial.set_constraint``), never folded into a weighted sum.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from .errors import UserError

_TIME = {"ms": 1.0, "s": 1000.0, "us": 1e-3}
_SIZE = {"b": 1e-6, "kb": 1e-3, "mb": 1.0, "gb": 1e3, "kib": 1024 / 1e6, "mib": 1024**2 / 1e6, "gib": 1024**3 / 1e6}


def _parse(text: str, units: dict[str, float], what: str, example: str) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match:
        raise UserError(f"cannot parse {what} {text!r}; write e.g. {example}")
    value, unit = float(match.group(1)), match.group(2).lower()
    if unit not in units:
        raise UserError(f"unknown unit {match.group(2)!r} in {what} {text!r}; use one of "
                        f"{', '.join(units)} (e.g. {example})")
    if value <= 0:
        raise UserError(f"{what} must be > 0, got {text!r}")
    return value * units[unit]


def parse_latency(text: str) -> float:
    """'40ms', '0.04s', '40 ms' → milliseconds."""
    return _parse(text, _TIME, "latency budget", "40ms, 0.04s or a speed-up such as 3x")


_SPEEDUP = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*[x×]\s*", re.IGNORECASE)


def parse_budget(text: str) -> tuple[float | None, float | None]:
    """A latency budget: ``(milliseconds, None)`` for '40ms' or '0.04s', ``(None, speed-up)`` for
    '3x' (3 times faster than the teacher on the target, measured in the same run)."""
    match = _SPEEDUP.fullmatch(str(text))
    if match:
        speedup = float(match.group(1))
        if speedup < 1:
            raise UserError(f"speed-up budget {text!r} must be at least 1x (e.g. 3x: three times faster than the teacher)")
        return None, speedup
    return parse_latency(text), None


def parse_duration(text: str) -> float:
    """'20m', '6h', '90s', '1.5h' → seconds."""
    return _parse(text, {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}, "time limit", "20m, 6h or 90s")


def parse_size(text: str) -> float:
    """'30MB', '28.6MiB', '512KB', '1GB' → megabytes (10^6 bytes)."""
    return _parse(text, _SIZE, "size budget", "30MB, 28MiB or 512KB")


@dataclass(frozen=True)
class Budget:
    """The user's limits. ``max_drop`` is in accuracy points (percent) below the teacher."""

    latency_ms: float | None = None
    size_mb: float | None = None
    max_drop: float | None = None
    speedup: float | None = None  # '3x': latency_ms is the teacher's latency / speedup (see resolve)

    @classmethod
    def from_args(cls, args) -> "Budget":
        max_drop = getattr(args, "max_drop", None)
        if max_drop is not None and max_drop < 0:
            raise UserError(f"--max-drop must be >= 0 accuracy points, got {max_drop}")
        latency, speedup = parse_budget(args.budget) if getattr(args, "budget", None) else (None, None)
        return cls(latency_ms=latency, speedup=speedup,
                   size_mb=parse_size(args.size_budget) if getattr(args, "size_budget", None) else None,
                   max_drop=max_drop)

    def resolve(self, teacher_latency_ms: float) -> "Budget":
        """A speed-up budget made a latency in ms, from the teacher's latency measured on the
        target in this run (unchanged when the budget is in ms)."""
        if self.speedup is None:
            return self
        return replace(self, latency_ms=round(teacher_latency_ms / self.speedup, 4))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        parts = []
        if self.latency_ms is not None:
            parts.append(f"p50 <= {self.latency_ms:g} ms" + (f" ({self.speedup:g}x the teacher)" if self.speedup else ""))
        elif self.speedup is not None:
            parts.append(f"{self.speedup:g}x faster than the teacher")
        if self.size_mb is not None:
            parts.append(f"size <= {self.size_mb:g} MB")
        if self.max_drop is not None:
            parts.append(f"accuracy drop <= {self.max_drop:g} points")
        return ", ".join(parts) or "no budget"


@dataclass(frozen=True)
class Objectives:
    """Names and directions of the study's values, and the constraint values of a result."""

    with_size: bool = False

    @property
    def names(self) -> list[str]:
        return ["accuracy", "latency_ms"] + (["size_mb"] if self.with_size else [])

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"] + (["minimize"] if self.with_size else [])

    def values(self, result: dict) -> list[float]:
        return [result[name] for name in self.names]


def constraint_values(result: dict, budget: Budget, teacher_accuracy: float) -> list[float]:
    """Optuna's convention: each value <= 0 means satisfied. Always three entries (latency, size,
    accuracy drop) so every trial of a study has the same shape; an absent budget gives -1."""
    lat = result["latency_ms"] - budget.latency_ms if budget.latency_ms is not None else -1.0
    size = result["size_mb"] - budget.size_mb if budget.size_mb is not None else -1.0
    drop = (teacher_accuracy - result["accuracy"]) * 100 - budget.max_drop if budget.max_drop is not None else -1.0
    return [float(lat), float(size), float(drop)]


#: The region of interest: candidates more than this many accuracy points below the teacher help no
#: one. It is the accuracy of the hypervolume reference point (:mod:`autocompress.compare`), and,
#: when the user gives no ``--max-drop``, the sampler is told to stay inside it.
REGION_DROP_POINTS = 10.0


def sampler_constraints(result: dict, budget: Budget, teacher_accuracy: float) -> list[float]:
    """The constraint values the sampler sees: the budgets (:func:`constraint_values`), with the
    region of interest (a drop of at most :data:`REGION_DROP_POINTS`) in the accuracy slot when no
    ``max_drop`` is given. Without it, multi-objective samplers spend trials on the far end of the
    latency axis, where accuracy has collapsed. Feasibility in reports and the pick under budget
    use the user's budgets only."""
    lat, size, drop = constraint_values(result, budget, teacher_accuracy)
    if budget.max_drop is None:
        drop = float((teacher_accuracy - result["accuracy"]) * 100 - REGION_DROP_POINTS)
    return [lat, size, drop]


def feasible(constraints: list[float]) -> bool:
    return all(c <= 0 for c in constraints)
