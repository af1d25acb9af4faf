"""The measurement protocol: warm-up, then at least 20 timed runs; median, p90 and spread."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per call over ``runs`` timed calls."""

    p50: float
    p90: float
    mean: float
    std: float
    min: float
    max: float
    iqr: float
    runs: int

    @property
    def spread(self) -> float:
        """Relative spread: inter-quartile range over the median."""
        return self.iqr / self.p50 if self.p50 else 0.0

    def to_dict(self) -> dict:
        return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()},
                "spread": round(self.spread, 4)}

    @classmethod
    def from_samples(cls, samples_ms) -> "LatencyStats":
        a = np.asarray(samples_ms, dtype=float)
        q25, q50, q75, q90 = np.percentile(a, [25, 50, 75, 90])
        return cls(p50=float(q50), p90=float(q90), mean=float(a.mean()), std=float(a.std()),
                   min=float(a.min()), max=float(a.max()), iqr=float(q75 - q25), runs=len(a))


def time_callable(fn: Callable[[], object], *, warmup: int = 5, runs: int = 30, min_runs: int = 20) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``max(runs, min_runs)`` times timed."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(runs, min_runs)):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return LatencyStats.from_samples(samples)


def measure(model, target, *, warmup: int = 5, runs: int = 30) -> LatencyStats:
    """Latency of a torch model on ``target`` (torch runtime) with random token ids."""
    import torch

    if target.runtime != "torch":
        raise NotImplementedError("this runtime is measured by autocompress.latency.onnx")
    previous = torch.get_num_threads()
    torch.set_num_threads(target.threads)
    try:
        gen = torch.Generator().manual_seed(0)
        vocab = getattr(model.config, "vocab_size", 1000)
        inputs = {"input_ids": torch.randint(5, vocab, (target.batch_size, target.seq_len), generator=gen),
                  "attention_mask": torch.ones(target.batch_size, target.seq_len, dtype=torch.long)}
        model.eval()
        with torch.inference_mode():
            return time_callable(lambda: model(**inputs), warmup=warmup, runs=runs)
    finally:
        torch.set_num_threads(previous)
