"""Target, measurement protocol, and exclusivity of measurements (lock + contention detector).

No test asserts a timing value: only statistics of given samples, flags and the order of events.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.errors import UserError
from autocompress.latency import LatencyStats, Target, compute_slot, measure, measurement_slot, time_callable
from autocompress.latency import exclusive
from autocompress.latency.exclusive import CpuMonitor
from autocompress.latency.target import device_fingerprint

ROOT = Path(__file__).resolve().parents[1]
measure_mod = importlib.import_module("autocompress.latency.measure")


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(tmp_path / "home"))


# ----------------------------------------------------------------------------- target


def test_target_from_args_and_validation():
    args = argparse.Namespace(runtime="onnxruntime", threads=None, batch_size=4, seq_len=64)
    t = Target.from_args(args)
    assert (t.runtime, t.batch_size, t.seq_len) == ("onnxruntime", 4, 64)
    assert t.threads == len(os.sched_getaffinity(0))
    with pytest.raises(UserError, match="unknown runtime"):
        Target(runtime="tensorrt")
    with pytest.raises(UserError, match="--seq-len"):
        Target(seq_len=0)


def test_device_fingerprint_names_cpu_isa_and_versions():
    fp = device_fingerprint()
    assert {"cpu", "cores", "isa", "versions", "machine"} <= set(fp)
    assert fp["cores"] >= 1 and "torch" in fp["versions"] and "onnxruntime" in fp["versions"]
    assert isinstance(fp["isa"], list)
    assert Target().key()["device"] == fp


# ----------------------------------------------------------------------------- statistics


def test_stats_of_known_samples():
    s = LatencyStats.from_samples(np.arange(1, 101))  # 1..100 ms
    assert s.p50 == pytest.approx(50.5)
    assert s.p90 == pytest.approx(90.1)
    assert s.iqr == pytest.approx(75.25 - 25.75)
    assert s.spread == pytest.approx(49.5 / 50.5)
    assert (s.min, s.max, s.runs) == (1, 100, 100)
    d = s.to_dict()
    assert {"p50", "p90", "mean", "std", "min", "max", "iqr", "runs", "spread", "contended", "other_cpu",
            "discarded"} <= set(d)
    assert d["contended"] is False


def test_stats_flag_other_cpu_above_threshold():
    assert LatencyStats.from_samples([1.0] * 20, other_cpu=0.5).contended
    assert not LatencyStats.from_samples([1.0] * 20, other_cpu=0.1).contended
    assert LatencyStats.from_samples([1.0] * 20, other_cpu=0.1, max_other_cpu=0.05).contended
    odd = LatencyStats.from_samples([3.0, 1.0, 2.0])
    assert odd.p50 == 2.0 and odd.spread == pytest.approx(1.0 / 2.0)


def test_protocol_warms_up_then_times_at_least_20_runs():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.002)

    stats = time_callable(slow, warmup=3, runs=5, max_seconds=1.0)
    assert stats.runs >= 20 and len(calls) == 3 + stats.runs + stats.discarded
    calls.clear()
    stats = time_callable(slow, warmup=0, runs=30, window=0.0, max_seconds=1.0)
    assert stats.runs == 30 and len(calls) == 30 + stats.discarded


def test_runs_of_contended_windows_are_discarded_and_replaced(monkeypatch):
    readings = iter([2.0, 0.0, 2.0] + [0.0] * 1000)  # the 1st and 3rd windows are contended

    class Scripted(CpuMonitor):
        def stop(self):
            return next(readings)

    monkeypatch.setattr(measure_mod, "CpuMonitor", Scripted)
    got = measure_mod.sample_quietly(lambda: 1.0, n=5, window=0.0)  # one step per window
    assert got.quiet[:4] == [False, True, False, True] and not got.contended
    assert got.discarded == 2 and len(got.samples) == 5
    stats = time_callable(lambda: None, runs=20, window=0.0)
    assert not stats.contended and stats.runs == 20


def test_timed_retries_while_contended_then_returns_flagged(monkeypatch):
    attempts = []

    class Busy(CpuMonitor):
        def stop(self):
            attempts.append(1)
            return 1.5

    monkeypatch.setattr(measure_mod, "CpuMonitor", Busy)
    stats = measure_mod.timed(lambda: None, runs=20, retries=2, backoff=0.0, min_seconds=0.0, max_seconds=0.2)
    assert stats.contended and stats.other_cpu == pytest.approx(1.5)
    assert 3 <= len(attempts)  # several windows per attempt, three attempts

    class Quiet(CpuMonitor):
        def stop(self):
            attempts.append(1)
            return 0.0

    attempts.clear()
    monkeypatch.setattr(measure_mod, "CpuMonitor", Quiet)
    assert not measure_mod.timed(lambda: None, runs=20, retries=2, backoff=0.0, min_seconds=0.0).contended
    assert len(attempts) == 1  # one quiet window is enough


def test_cpu_monitor_sees_a_spinning_thread_of_another_process_not_our_own():
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass\n"
    monitor = CpuMonitor().start()
    t = time.time()
    while time.time() - t < 0.5:  # our own spinning does not count
        pass
    own = monitor.stop()
    proc = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.1)
        monitor = CpuMonitor().start()
        time.sleep(0.6)
        other = monitor.stop()
    finally:
        proc.wait()
    assert other > 0.5
    assert own < other


# ----------------------------------------------------------------------------- the lock

_BUSY = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from autocompress.latency.exclusive import compute_slot
    marker, seconds, use_lock = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "lock"

    def spin():
        marker.write_text("started")
        t = time.time()
        while time.time() - t < seconds:
            pass
        marker.write_text("released")

    if use_lock:
        with compute_slot():
            spin()
    else:
        spin()
""")


def _start_busy(tmp_path, seconds: float, use_lock: bool):
    marker = tmp_path / "marker"
    script = tmp_path / "busy.py"
    script.write_text(_BUSY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(marker), str(seconds), "lock" if use_lock else "free"],
                            env=env)
    deadline = time.time() + 60
    while not (marker.exists() and marker.read_text() == "started"):
        assert proc.poll() is None, "busy process died"
        assert time.time() < deadline, "busy process did not start"
        time.sleep(0.02)
    return proc, marker


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    return BertForSequenceClassification(config).eval()


def test_measurement_waits_for_a_busy_process_holding_a_compute_slot(tmp_path):
    model = _tiny_bert()
    seen = []
    model.register_forward_pre_hook(lambda *_: seen.append(marker.read_text()) if not seen else None)
    proc, marker = _start_busy(tmp_path, 1.5, use_lock=True)
    try:
        stats = measure(model, Target(threads=1, seq_len=16), runs=20, retries=0, min_seconds=0.0, max_seconds=1.0)
    finally:
        proc.wait(timeout=60)
    assert seen == ["released"]  # the first timed call came after the busy loop ended
    assert stats.runs >= 20


def test_measurement_beside_a_busy_process_ignoring_the_lock_is_flagged(tmp_path):
    model = _tiny_bert()
    proc, marker = _start_busy(tmp_path, 30, use_lock=False)
    try:
        stats = measure(model, Target(threads=1, seq_len=16), runs=20, retries=1, min_seconds=0.4, max_seconds=0.6)
        still_busy = marker.read_text() == "started"
    finally:
        proc.kill()
        proc.wait()
    assert still_busy
    assert stats.contended
    assert stats.other_cpu > 0.3


_TRY_COMPUTE = textwrap.dedent("""
    import sys
    from autocompress.latency.exclusive import compute_slot
    try:
        with compute_slot(timeout=float(sys.argv[1])):
            print("got")
    except TimeoutError:
        print("timeout")
""")


def _try_compute(tmp_path, timeout: float) -> str:
    script = tmp_path / "try_compute.py"
    script.write_text(_TRY_COMPUTE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(script), str(timeout)], env=env, capture_output=True, text=True,
                         timeout=60)
    return out.stdout.strip()


def test_new_compute_waits_while_a_measurement_runs(tmp_path):
    with measurement_slot():
        assert _try_compute(tmp_path, 0.3) == "timeout"
    assert _try_compute(tmp_path, 5.0) == "got"


def test_compute_slots_are_shared_and_measurement_excludes_them(tmp_path):
    with compute_slot():
        assert _try_compute(tmp_path, 5.0) == "got"  # shared between processes


def test_measuring_inside_own_compute_slot_does_not_deadlock():
    order = []
    with compute_slot():
        with compute_slot():  # re-entrant
            with measurement_slot(timeout=5.0):
                order.append("measure")
                with compute_slot():  # no-op while measuring
                    order.append("inner")
        order.append("after")
    assert order == ["measure", "inner", "after"]
    assert exclusive.lock_dir().is_dir()


def test_measurement_slot_times_out_when_another_process_computes(tmp_path):
    proc, marker = _start_busy(tmp_path, 2.0, use_lock=True)
    try:
        with pytest.raises(TimeoutError):
            with measurement_slot(timeout=0.2):
                pass
    finally:
        proc.wait(timeout=60)
    with measurement_slot(timeout=5.0) as waited:
        assert waited >= 0.0
