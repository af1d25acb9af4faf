"""Latency on the target runtime: where a model serves (:class:`Target`), how it is timed
(:func:`measure`, serialised against other work by :mod:`~autocompress.latency.exclusive`), the
ONNX Runtime target (:mod:`~autocompress.latency.onnx`) and the latency predictor
(:mod:`~autocompress.latency.predictor`)."""

from .exclusive import compute_slot, measurement_slot
from .measure import LatencyStats, measure, time_callable, timed
from .target import Target, device_fingerprint

__all__ = ["LatencyStats", "Target", "compute_slot", "device_fingerprint", "measure", "measurement_slot",
           "time_callable", "timed"]
