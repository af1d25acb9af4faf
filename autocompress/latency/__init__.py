"""Latency on the target runtime: where a model serves (:class:`Target`) and how it is timed."""

from .measure import LatencyStats, measure, time_callable
from .target import Target

__all__ = ["LatencyStats", "Target", "measure", "time_callable"]
