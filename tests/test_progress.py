"""Progress bars: drawn in place on a terminal; in a log, lines a reader can follow (a night's log
said nothing for the ~12 minutes of teacher logits and importance on a base-size model)."""

from __future__ import annotations

import io

import autocompress.progress as progress
from autocompress.progress import progress_bar
from autocompress.search.unit_importance import UnitImportance


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_a_bar_is_a_line_at_its_start_and_one_at_its_end_not_one_per_update(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY", 3600.0)
    monkeypatch.setattr(progress, "LOG_AFTER", 0.0)
    log = io.StringIO()
    bar = progress_bar(total=50, desc="kd", stream=log)
    for i in range(50):
        bar.update(1)
        bar.set_postfix(loss=f"{i:.3f}")  # tqdm redraws on every postfix: 50 lines without the change
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in log.getvalue()
    assert lines[0].startswith("kd:") and "0/50" in lines[0]
    assert "50/50" in lines[1] and "loss=49.000" in lines[1]


def test_in_a_log_a_long_stage_writes_a_line_every_interval(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    monkeypatch.setattr(progress, "LOG_AFTER", 0.0)
    log = io.StringIO()
    assert list(progress_bar(range(4), desc="logits", stream=log)) == [0, 1, 2, 3]
    lines = log.getvalue().splitlines()
    assert len(lines) >= 3 and lines[-1].startswith("logits: 100%") and "4/4" in lines[-1]


def test_on_a_terminal_the_bar_is_drawn_in_place_and_disabled_it_writes_nothing():
    term = Terminal()
    bar = progress_bar(total=3, desc="search", stream=term)
    bar.update(3)
    bar.close()
    assert "\r" in term.getvalue() and "search" in term.getvalue()
    quiet = io.StringIO()
    assert list(progress_bar(range(3), desc="quiet", stream=quiet, enabled=False)) == [0, 1, 2]
    assert quiet.getvalue() == ""


def test_a_short_stage_writes_nothing_to_a_log_and_a_bar_pickles():
    import cloudpickle

    log = io.StringIO()
    bar = progress_bar(total=3, desc="short", stream=log)  # LOG_AFTER: 10 s
    bar.update(3)
    bar.close()
    assert log.getvalue() == ""
    held = progress_bar(total=3, desc="held")  # to sys.stderr: pytest's capture, which does not pickle
    # Ray pickles the search's callback, which holds its bar: a bar class made in a function was
    # pickled by value, with tqdm's multiprocessing lock ("RLock objects should only be shared ...")
    assert cloudpickle.dumps(held)
    held.close()


def test_importance_shows_its_progress_over_every_edited_model(tiny_model, make_batch, capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY", 3600.0)
    monkeypatch.setattr(progress, "LOG_AFTER", 0.0)
    model = tiny_model("bert")
    batches = [make_batch(model, seed=s) for s in range(2)]
    UnitImportance.measure(model, batches)
    assert "importance" not in capsys.readouterr().err
    UnitImportance.measure(model, batches, progress=True)
    err = capsys.readouterr().err  # pytest's stderr is not a terminal: the log form
    assert "importance" in err and "12/12" in err  # 4 layers skipped, 4 heads halves, 4 FFN halves


def test_under_a_time_limit_the_search_bar_counts_to_what_fits_not_to_the_trial_cap():
    import time
    from types import SimpleNamespace

    from autocompress.objectives import Budget
    from autocompress.search.fit import FitEstimate
    from autocompress.search.workers import progress_callback

    fit = FitEstimate(step_s=1.0, forward_s=0.1, screen_s=10.0, full_s=100.0, seconds=1000.0, queued=2,
                      queued_s=200.0)  # 800 s after the warm starts at 55 s a candidate: 14
    stop_at = time.time() + 1000.0
    search = SimpleNamespace(trials=100000)
    callback = progress_callback(search, True, 0.8, Budget(), fit, lambda: stop_at)
    assert callback.bar.total == 2 + 14
    for _ in range(2):  # the warm starts finish (100 s each, as estimated); ~1000 s are left for sampling
        callback.on_trial_complete(0, [], SimpleNamespace(last_result={"fidelity": "full", "seconds": 100.0,
                                                                       "kd_steps": 300, "accuracy": 0.8,
                                                                       "latency_ms": 5.0, "size_mb": 9.0}))
    assert callback.bar.n == 2 and callback.bar.total == 2 + 18  # int(~999.9 / 55)
    uncapped = progress_callback(search, True, 0.8, Budget(), None, None)
    assert uncapped.bar.total == 100000
    callback.close()
    uncapped.close()
