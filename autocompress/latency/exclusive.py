"""Measurements never overlap other computation on the same cores.

Two mechanisms, both used by every latency measurement in autocompress:

1. **A readers–writer lock across the processes of one machine** (``fcntl.flock`` on files under
   ``cache.home()/locks/``). Work that computes — training or evaluating a candidate — holds a
   *compute slot* (shared: any number at once); a measurement holds the *measurement slot*
   (exclusive). A measurement waits until no compute slot is held, and while a measurement waits
   or runs, new compute slots wait (writer preference, through a "gate" file taken briefly by
   readers and for the whole measurement by the writer). So locally, measurements are serialised
   and no trial trains during one. The lock files live under ``cache.home()``; processes that set
   different ``AUTOCOMPRESS_HOME`` do not see each other's slots.

   The file lock serialises everything on **one node** only. Under Ray on several machines the
   search additionally requests a custom resource that each node advertises once (e.g.
   ``{"measure_slot": 1}``), so at most one measuring trial is scheduled per node; the file lock
   still orders it against the training trials on that node.

2. **A detector for work that ignores the lock** (another user's job, a process started
   outside autocompress): :class:`CpuMonitor` samples the busy time of the cores this process may
   run on (``/proc/stat``) minus this process's own CPU time (``/proc/self/stat``) over each
   window of timed runs, and how long our own threads waited for a CPU
   (``/proc/self/task/*/schedstat``; spinning thread pools squeeze a competitor's CPU share, yet
   stall whenever it runs). If other processes used more than a threshold (default 0.3 cores on
   average) or our threads waited more than 0.1 threads on average, the window's runs are
   discarded; if too few quiet runs remain, the result is flagged ``contended`` and
   :func:`autocompress.latency.measure` retries.

In-process rules: slots are re-entrant per thread; a thread that holds compute slots and asks
for the measurement slot has its own compute slots suspended for the measurement (it is not
computing while it measures) and restored afterwards; a compute slot requested by a thread that
is measuring is a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import cache

GATE = "latency.gate"
RW = "latency.rw"
#: Other processes may use this many cores on average before a measurement is flagged.
DEFAULT_MAX_OTHER_CPU = 0.3

_local = threading.local()


def lock_dir() -> Path:
    path = cache.home() / "locks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(name: str) -> int:
    return os.open(lock_dir() / name, os.O_RDWR | os.O_CREAT, 0o666)


def _flock(fd: int, op: int, deadline: float | None) -> None:
    """``flock`` that gives up with TimeoutError at ``deadline`` (None: wait forever)."""
    if deadline is None:
        fcntl.flock(fd, op)
        return
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError("timed out waiting for a latency lock") from None
            time.sleep(0.01)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _state():
    if not hasattr(_local, "compute"):
        _local.compute = []  # fds holding a shared lock on RW, one per outermost compute slot
        _local.compute_depth = 0
        _local.measure_depth = 0
    return _local


@contextlib.contextmanager
def compute_slot(*, timeout: float | None = None) -> Iterator[None]:
    """Hold a shared slot while training or evaluating: no measurement runs meanwhile."""
    st = _state()
    if st.measure_depth or st.compute_depth:
        st.compute_depth += 1
        try:
            yield
        finally:
            st.compute_depth -= 1
        return
    deadline = _deadline(timeout)
    gate, rw = _open(GATE), _open(RW)
    try:
        _flock(gate, fcntl.LOCK_EX, deadline)  # queue behind a waiting measurement
        try:
            _flock(rw, fcntl.LOCK_SH, deadline)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        st.compute.append(rw)
        st.compute_depth += 1
        try:
            yield
        finally:
            st.compute_depth -= 1
            st.compute.remove(rw)
            fcntl.flock(rw, fcntl.LOCK_UN)
    finally:
        os.close(gate)
        os.close(rw)


@contextlib.contextmanager
def measurement_slot(*, timeout: float | None = None) -> Iterator[float]:
    """Hold the exclusive slot; yields the seconds spent waiting for it."""
    st = _state()
    if st.measure_depth:
        st.measure_depth += 1
        try:
            yield 0.0
        finally:
            st.measure_depth -= 1
        return
    start = time.monotonic()
    deadline = _deadline(timeout)
    suspended = list(st.compute)
    for fd in suspended:  # our own compute pauses while we measure
        fcntl.flock(fd, fcntl.LOCK_UN)
    gate, rw = _open(GATE), _open(RW)
    try:
        try:
            _flock(gate, fcntl.LOCK_EX, deadline)
        except BaseException:
            _restore(suspended, None)
            raise
        try:
            try:
                _flock(rw, fcntl.LOCK_EX, deadline)
            except BaseException:
                _restore(suspended, None)
                raise
            st.measure_depth += 1
            try:
                yield time.monotonic() - start
            finally:
                st.measure_depth -= 1
                fcntl.flock(rw, fcntl.LOCK_UN)
                _restore(suspended, None)  # we still hold the gate: no writer can cut in
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
    finally:
        os.close(gate)
        os.close(rw)


def _restore(fds: list[int], deadline: float | None) -> None:
    for fd in fds:
        _flock(fd, fcntl.LOCK_SH, deadline)


# ----------------------------------------------------------------------------- contention


def _allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _busy_ticks(cpus: set[int]) -> int | None:
    """Non-idle jiffies summed over ``cpus`` (guest time is already inside user/nice)."""
    try:
        with open("/proc/stat") as fh:
            total = 0
            for line in fh:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                parts = line.split()
                if int(parts[0][3:]) not in cpus:
                    continue
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
                total += user + nice + system + irq + softirq + steal
            return total
    except (OSError, ValueError):
        return None


def _own_ticks() -> int | None:
    """utime + stime of this process (all threads), in clock ticks."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def _run_delays() -> dict[str, int] | None:
    """Nanoseconds each thread of this process has spent runnable but waiting for a CPU."""
    try:
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/schedstat") as fh:
                    out[tid] = int(fh.read().split()[1])
            except (OSError, ValueError, IndexError):
                continue
        return out
    except OSError:
        return None


#: Our threads may wait this long for a CPU (in threads, on average) before a window counts as
#: contended: another process that gets CPU time only because we yield shows up here, not in
#: ``other_cpu`` (spinning thread pools squeeze it, yet lose whole time slices to it).
DEFAULT_MAX_WAIT = 0.1


@dataclass
class CpuMonitor:
    """Between ``start`` and ``stop``: ``other_cpu``, the average number of cores that *other*
    processes kept busy on the cores we may use (``/proc/stat`` minus ``/proc/self/stat``), and
    ``wait``, the average number of our threads that were runnable but waiting for a CPU
    (``/proc/self/task/*/schedstat``). :meth:`stop` returns the larger of ``other_cpu`` and
    ``wait * DEFAULT_MAX_OTHER_CPU / DEFAULT_MAX_WAIT`` (so either crossing its threshold crosses
    ``DEFAULT_MAX_OTHER_CPU``); None where ``/proc`` is unavailable (the detector is then silent).
    """

    other_cpu: float | None = None
    wait: float | None = None

    def start(self) -> "CpuMonitor":
        self._cpus = _allowed_cpus()
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._delay0 = _run_delays()
        self._t0, self._busy0, self._own0 = time.monotonic(), _busy_ticks(self._cpus), _own_ticks()
        return self

    def stop(self) -> float | None:
        wall = time.monotonic() - self._t0
        busy, own, delay = _busy_ticks(self._cpus), _own_ticks(), _run_delays()
        if None in (busy, own, self._busy0, self._own0) or wall <= 0:
            self.other_cpu = None
        else:
            other = (busy - self._busy0) - (own - self._own0)
            self.other_cpu = max(0.0, other / self._tick / wall)
        if delay is None or self._delay0 is None or wall <= 0:
            self.wait = None
        else:
            waited = sum(v - self._delay0.get(tid, 0) for tid, v in delay.items())
            self.wait = max(0.0, waited / 1e9 / wall)
        if self.other_cpu is None:
            return None
        return max(self.other_cpu, (self.wait or 0.0) * DEFAULT_MAX_OTHER_CPU / DEFAULT_MAX_WAIT)


__all__ = ["DEFAULT_MAX_OTHER_CPU", "DEFAULT_MAX_WAIT", "CpuMonitor", "compute_slot", "lock_dir",
           "measurement_slot"]
