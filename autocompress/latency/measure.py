"""The measurement protocol: warm-up, then at least 20 timed runs; median, p90 and spread.

Every measurement holds the exclusive measurement slot (:mod:`autocompress.latency.exclusive`),
and the CPU time other processes used on our cores is recorded per window of runs (>= 0.1 s):
runs of windows where others used more than a threshold (0.3 cores) are discarded and replaced.
If too few quiet runs come within ``max_seconds``, the result is flagged ``contended`` and
:func:`timed` retries (up to ``retries`` more times, backing off in between) before returning
the flagged result.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

from .exclusive import DEFAULT_MAX_OTHER_CPU, CpuMonitor, measurement_slot

MIN_RUNS = 20


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per call over ``runs`` timed calls.

    ``other_cpu``: cores other processes kept busy on average during the timed runs;
    ``contended``: it exceeded the threshold, so the figures are not trustworthy;
    ``discarded``: runs thrown away because other processes computed during them;
    ``raw_p50`` / ``drift``: set when the figures were scaled to a reference's frame
    (:func:`autocompress.latency.isolated.scaled`): the measured median and the factor applied;
    ``artefact_bytes``: the size of what was timed, as a user ships it for the runtime (set by the
    timing process, :func:`autocompress.latency.isolated.figures`).
    """

    p50: float
    p90: float
    mean: float
    std: float
    min: float
    max: float
    iqr: float
    runs: int
    contended: bool = False
    other_cpu: float = 0.0
    discarded: int = 0
    raw_p50: float | None = None
    drift: float = 1.0
    artefact_bytes: int | None = None  # what was timed, as shipped for the runtime (Session.artefact_bytes)

    @property
    def spread(self) -> float:
        """Relative spread: inter-quartile range over the median."""
        return self.iqr / self.p50 if self.p50 else 0.0

    def to_dict(self) -> dict:
        return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()},
                "spread": round(self.spread, 4)}

    @classmethod
    def from_samples(cls, samples_ms, *, other_cpu: float | None = None,
                     max_other_cpu: float = DEFAULT_MAX_OTHER_CPU) -> "LatencyStats":
        a = np.asarray(samples_ms, dtype=float)
        if a.size == 0:
            raise ValueError("no samples")
        q25, q50, q75, q90 = np.percentile(a, [25, 50, 75, 90])
        other = float(other_cpu) if other_cpu is not None else 0.0
        return cls(p50=float(q50), p90=float(q90), mean=float(a.mean()), std=float(a.std()),
                   min=float(a.min()), max=float(a.max()), iqr=float(q75 - q25), runs=int(a.size),
                   contended=other > max_other_cpu, other_cpu=other)


@dataclass
class Sampling:
    """What :func:`sample_quietly` collected."""

    samples: list            # kept samples (quiet windows; all samples, in order, if too few were quiet)
    quiet: list[bool]         # per step (warm-up excluded): was its window quiet?
    other_cpu: float          # other processes' cores, averaged over the kept windows
    contended: bool           # fewer than ``n`` quiet samples within ``max_seconds``
    discarded: int            # samples thrown away because their window was not quiet


def sample_quietly(step: Callable[[], object], *, n: int, warmup: int = 0, window: float = 0.1,
                   min_seconds: float = 0.0, max_seconds: float = 5.0, max_steps: int = 1_000_000,
                   max_other_cpu: float = DEFAULT_MAX_OTHER_CPU) -> Sampling:
    """Call ``step`` (which returns a sample) ``warmup`` times, then in windows of at least
    ``window`` seconds, each watched by a :class:`CpuMonitor`. Samples of windows where other
    processes used more than ``max_other_cpu`` cores are discarded; stop once ``n`` quiet samples
    (and ``min_seconds``) are collected, or after ``max_seconds`` (then flagged ``contended`` and
    all samples are returned)."""
    for _ in range(warmup):
        step()
    kept, noisy, quiet, steps = [], [], [], []
    quiet_cpu = quiet_time = all_cpu = all_time = 0.0
    begin = time.perf_counter()
    while True:
        monitor = CpuMonitor().start()
        w0 = time.perf_counter()
        batch = []
        while not batch or (time.perf_counter() - w0 < window and len(quiet) + len(batch) < max_steps):
            batch.append(step())
        duration = time.perf_counter() - w0
        other = monitor.stop()
        other = 0.0 if other is None else other
        all_cpu, all_time = all_cpu + other * duration, all_time + duration
        ok = other <= max_other_cpu
        (kept if ok else noisy).extend(batch)
        steps.extend(batch)
        quiet.extend([ok] * len(batch))
        if ok:
            quiet_cpu, quiet_time = quiet_cpu + other * duration, quiet_time + duration
        elapsed = time.perf_counter() - begin
        if (len(kept) >= n and elapsed >= min_seconds) or elapsed >= max_seconds or len(quiet) >= max_steps:
            break
    if len(kept) >= n:
        return Sampling(kept, quiet, quiet_cpu / quiet_time if quiet_time else 0.0, False, len(noisy))
    return Sampling(steps, quiet, all_cpu / all_time if all_time else 0.0, True, 0)


def time_callable(fn: Callable[[], object], *, warmup: int = 5, runs: int = 30, min_runs: int = MIN_RUNS,
                  min_seconds: float = 0.0, max_seconds: float = 5.0, window: float = 0.1,
                  max_other_cpu: float = DEFAULT_MAX_OTHER_CPU) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then time at least ``max(runs, min_runs)`` calls taken
    while no other process used our cores (windows of ``window`` s where others did are
    discarded; see :func:`sample_quietly`). Takes no lock: see :func:`timed`."""

    def step():
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    got = sample_quietly(step, n=max(runs, min_runs), warmup=warmup, window=window, min_seconds=min_seconds,
                         max_seconds=max_seconds, max_other_cpu=max_other_cpu)
    stats = LatencyStats.from_samples(got.samples, other_cpu=got.other_cpu, max_other_cpu=max_other_cpu)
    return replace(stats, contended=got.contended or stats.contended, discarded=got.discarded)


def timed(fn: Callable[[], object], *, warmup: int = 5, runs: int = 30, min_seconds: float = 0.3,
          retries: int = 3, backoff: float = 1.0, max_other_cpu: float = DEFAULT_MAX_OTHER_CPU,
          max_seconds: float = 5.0, slot_timeout: float | None = None) -> LatencyStats:
    """The full protocol: in the measurement slot, :func:`time_callable`; if other processes
    used our cores, wait ``backoff * attempt`` seconds (outside the slot) and try again, at most
    ``retries`` more times, then return the last (flagged) result."""
    stats = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * attempt)
        with measurement_slot(timeout=slot_timeout):
            stats = time_callable(fn, warmup=warmup, runs=runs, min_seconds=min_seconds,
                                  max_seconds=max_seconds, max_other_cpu=max_other_cpu)
        if not stats.contended:
            break
    return stats


def random_inputs(target, vocab_size: int = 1000, *, seed: int = 0) -> dict:
    """``input_ids`` (token ids in ``[5, vocab_size)``) and an all-ones ``attention_mask``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(5, max(6, vocab_size), (target.batch_size, target.seq_len), generator=gen),
            "attention_mask": torch.ones(target.batch_size, target.seq_len, dtype=torch.long)}


class torch_threads:
    """Context manager: ``torch.set_num_threads(n)``, restored on exit."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import torch

        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.previous)


def measure(model, target, *, warmup: int = 5, runs: int = 30, retries: int = 3, min_seconds: float = 0.3,
            max_seconds: float = 5.0, max_other_cpu: float = DEFAULT_MAX_OTHER_CPU) -> LatencyStats:
    """Latency of a torch model (as it is: fp32, or with torch int8 linears) on ``target``'s runtime
    with random token ids: timed in place on torch, built by the runtime
    (:mod:`~autocompress.latency.runtime`) elsewhere."""
    if target.runtime == "torch":
        return time_torch(model, target, warmup=warmup, runs=runs, retries=retries, min_seconds=min_seconds,
                          max_seconds=max_seconds, max_other_cpu=max_other_cpu)
    from .runtime import get_runtime

    session = get_runtime(target.runtime).build(model, target)
    try:
        return session.time(warmup=warmup, runs=runs, retries=retries, min_seconds=min_seconds,
                            max_seconds=max_seconds)
    finally:
        session.close()


def time_torch(model, target, *, warmup: int = 5, runs: int = 30, retries: int = 3, min_seconds: float = 0.3,
               max_seconds: float = 5.0, max_other_cpu: float = DEFAULT_MAX_OTHER_CPU) -> LatencyStats:
    """Latency of a torch model in eager PyTorch with ``target.threads`` threads."""
    import torch

    inputs = random_inputs(target, getattr(model.config, "vocab_size", 1000))
    model.eval()
    with torch_threads(target.threads), torch.inference_mode():
        return timed(lambda: model(**inputs), warmup=warmup, runs=runs, retries=retries,
                     min_seconds=min_seconds, max_seconds=max_seconds, max_other_cpu=max_other_cpu)


#: Passes of one plan that disagree by more than this (median over the plans) mean the machine's
#: speed varied during calibration, and the fit is off by about as much: on a shared 2-core
#: machine the bf16 table's passes disagreed by a median 16.5% (fit error 16.4%) in a slow phase,
#: the fp32 table's by 9.2% (10.6%); on a steady one the fit error was 2.8%.
NOISY_PASSES = 0.10


def pass_spread(stats: Sequence[Sequence[LatencyStats]]) -> float | None:
    """The median over plans of how far a plan's passes disagree (slowest / fastest - 1);
    ``None`` with fewer than two passes."""
    spreads = [max(s.p50 for s in got) / min(s.p50 for s in got) - 1 for got in stats if len(got) >= 2]
    return round(float(statistics.median(spreads)), 4) if spreads else None
