"""Relative budgets ('3x'), the command-wide time limit, and what polishing may change."""

import time

import pytest

from autocompress.cli import main
from autocompress.errors import UserError
from autocompress.report import fidelity_stats
from autocompress.objectives import Budget, parse_budget
from autocompress.search.polish import (OVERHEAD_S, RECOVERY_MARGIN, REPLACED, apply_polished, candidates,
                                       estimate_seconds, fitting_factor, polished_plan)
from autocompress.runner import SearchConfig
from autocompress.plan import CompressionPlan, DistillConfig


@pytest.mark.parametrize("text, expected", [("3x", (None, 3.0)), ("2.5X", (None, 2.5)), (" 4 x", (None, 4.0)),
                                            ("1x", (None, 1.0)), ("40ms", (40.0, None)), ("0.02s", (20.0, None))])
def test_budgets_parse(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["3xx", "0x", "0.5x", "x", "-3x", "3 ms x"])
def test_bad_budgets_fail(text):
    with pytest.raises(UserError):
        parse_budget(text)


def test_a_speedup_budget_resolves_against_the_measured_teacher():
    budget = Budget(speedup=3.0, max_drop=1.0)
    assert budget.latency_ms is None and "3x faster" in budget.describe()
    resolved = budget.resolve(24.0)
    assert resolved.latency_ms == pytest.approx(8.0) and resolved.speedup == 3.0 and resolved.max_drop == 1.0
    assert "p50 <= 8 ms (3x the teacher)" in resolved.describe()
    assert Budget(latency_ms=10.0).resolve(24.0) == Budget(latency_ms=10.0)
    assert Budget(**resolved.to_dict()) == resolved  # round-trips through the study's user attributes


@pytest.mark.parametrize("argv", [["--budget", "3xx"], ["--budget", "0x"], ["--polish", "-1"],
                                  ["--space", "nope"]])
def test_bad_search_options_exit_2_and_write_nothing(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["search", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autocompress: error:")
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_the_time_limit_counts_from_the_start_of_the_command():
    config = SearchConfig(time_limit_s=1200, started_at=1000.0)
    assert config.deadline() == 2200.0
    assert SearchConfig(time_limit_s=None).deadline() is None


def test_sampling_stops_early_enough_to_re_measure_the_front(monkeypatch):
    from types import SimpleNamespace

    import autocompress.report
    from autocompress.runner import REMEASURE_TIMINGS, _search_stop

    front = [{"model_dir": "m1"}, {"model_dir": "m2"}, {"model_dir": None}]  # one was never saved: not re-measured
    monkeypatch.setattr(autocompress.report, "summarise", lambda study: {"front": front})
    study = SimpleNamespace(trials=[object()], get_trials=lambda **kw: [])
    ctx = SimpleNamespace(teacher=SimpleNamespace(info={}))
    stop = _search_stop(2200.0, study, SearchConfig(polish=0), SimpleNamespace(kd_steps=300), ctx, measure_s=7.0)
    assert stop() == pytest.approx(2200.0 - REMEASURE_TIMINGS * 7.0 * 2)
    front.append({"model_dir": "m3"})  # a bigger front keeps more time back
    assert stop() == pytest.approx(2200.0 - REMEASURE_TIMINGS * 7.0 * 3)
    assert _search_stop(2200.0, study, SearchConfig(polish=0), SimpleNamespace(kd_steps=300), ctx)() == 2200.0


def test_sampling_keeps_back_the_time_to_polish_the_pick_so_far(monkeypatch):
    from types import SimpleNamespace

    import autocompress.report
    from autocompress.runner import _search_stop
    from autocompress.search.polish import OVERHEAD_S, RECOVERY_MARGIN as M

    # the pick keeps every layer (160 s per recovery); the other candidate is small (40 s for 300 steps)
    pick = {"recovery_seconds": 160.0, "plan": {"distill": {"steps": 300}}}
    small = SimpleNamespace(user_attrs={"fidelity": "full", "kd_steps": 300, "recovery_seconds": 40.0})
    summary = {"front": [], "recommended": pick}
    monkeypatch.setattr(autocompress.report, "summarise", lambda study: summary)
    study = SimpleNamespace(trials=[object()], get_trials=lambda **kw: [small])
    ctx = SimpleNamespace(teacher=SimpleNamespace(info={}))
    deadline = time.time() + 6 * 3600  # an overnight limit: the third-of-the-time cap does not bind
    stop = _search_stop(deadline, study, SearchConfig(polish=4.0), SimpleNamespace(kd_steps=300), ctx)
    assert stop() == pytest.approx(deadline - (M * 4 * 160.0 + OVERHEAD_S))  # the pick's own recovery, not the median
    summary["recommended"] = {"recovery_seconds": 0.0, "plan": {"distill": {"steps": 0}}}  # an int8-only pick
    assert stop() == pytest.approx(deadline - (M * 4 * 40.0 + OVERHEAD_S))  # the candidates' median speed
    summary["recommended"] = pick
    twenty = _search_stop(time.time() + 1200, study, SearchConfig(polish=4.0), SimpleNamespace(kd_steps=300), ctx)
    assert M * 1.5 * 160.0 + OVERHEAD_S <= 400  # a 1.5x polish fits in a third of 20 minutes ...
    assert twenty() == pytest.approx(time.time() + 800, abs=2)  # ... so a third is kept back, not all 754 s
    ten = _search_stop(time.time() + 600, study, SearchConfig(polish=4.0), SimpleNamespace(kd_steps=300), ctx)
    assert M * 1.5 * 160.0 + OVERHEAD_S > 200  # not even a 1.5x polish fits in a third of 10 minutes:
    assert ten() == pytest.approx(time.time() + 600, abs=2)  # nothing is kept back, the search samples on
    summary["recommended"] = {**pick, "recovery_seconds": 60.0}  # a lighter pick: a 1.5x polish fits again
    assert ten() == pytest.approx(time.time() + 400, abs=2)
    # the warm starts ran past the stop (they run whatever it says) and left less than a 1.5x polish
    # of the pick (149 s): the rest of the time is the search's, not kept back for a polish that cannot run
    now = time.time()
    late = _search_stop(now + 1200, study, SearchConfig(polish=4.0), SimpleNamespace(kd_steps=300), ctx)
    assert late() == pytest.approx(now + 1200 - (M * 4 * 60.0 + OVERHEAD_S), abs=2)  # kept back while it can be used
    monkeypatch.setattr(time, "time", lambda: now + 1100)  # 100 s left
    assert M * 1.5 * 60.0 + OVERHEAD_S > 100
    assert late() == pytest.approx(now + 1200, abs=2)


def _row(number, acc, lat, feasible=True, steps=300, polished=None):
    plan = CompressionPlan(name=f"t{number}", distill=DistillConfig(steps=steps, weights={"logits": 1.0})
                           if steps else DistillConfig())
    row = {"number": number, "accuracy": acc, "test_accuracy": acc - 0.01, "latency_ms": lat, "latency_p90_ms": lat,
           "agreement": 0.9, "size_mb": 50.0, "params": 10, "kd_steps": steps, "model_dir": f"m{number}",
           "plan": plan.to_dict(), "feasible": feasible, "recovery_seconds": 60.0}
    if polished:
        row["search"] = {"accuracy": acc}
    return row


def test_polish_candidates_recommended_first_then_feasible_front():
    rec = _row(3, 0.84, 8.0)
    front = [_row(1, 0.80, 5.0), rec, _row(4, 0.85, 12.0, feasible=False), _row(5, 0.82, 7.0),
             _row(6, 0.83, 7.5, steps=0), _row(7, 0.81, 6.0, polished=True)]
    got = [r["number"] for r in candidates({"recommended": rec, "meets_budget": True, "front": front})]
    # over-budget members, plans without recovery (int8 only) and polished ones are left alone
    assert got == [3, 5, 1]


def test_polishing_changes_only_the_figures_it_claims():
    row = {**_row(3, 0.80, 8.0), "screen_accuracy": 0.78, "promotion": "on the screened front", "seconds": 50.0}
    plan = polished_plan(CompressionPlan.from_dict(row["plan"]), 4.0)
    assert plan.distill.steps == 1200 and plan.name.endswith("-polished")
    record = {"accuracy": 0.83, "test_accuracy": 0.84, "agreement": 0.95, "validation_agreement": 0.94,
              "latency_ms": 8.2, "latency_p90_ms": 8.5, "size_mb": 50.0, "params": 10, "kd_steps": 1200,
              "model_dir": "m3-polished", "plan": plan.to_dict(), "seconds": 200.0, "recovery_seconds": 190.0}
    out = apply_polished(row, record)
    changed = {k for k in out if out.get(k) != row.get(k)}
    assert changed <= set(REPLACED) | {"search", "polished", "polish_seconds"}
    assert out["accuracy"] == 0.83 and out["search"]["accuracy"] == 0.80
    assert out["search"]["latency_ms"] == 8.0 and out["search"]["model_dir"] == "m3"
    assert out["screen_accuracy"] == 0.78 and out["promotion"] == row["promotion"]
    assert estimate_seconds(row, 4.0) == pytest.approx(RECOVERY_MARGIN * 4 * 60.0 + OVERHEAD_S)


def test_a_candidates_latency_is_the_median_of_its_timings():
    from autocompress.report import pooled_latency

    search = {"fidelity": "full", "latency_ms": 8.07, "latency_p90_ms": 9.0}
    assert pooled_latency(search, None, None) == {}  # one timing: the row's own figure stands
    assert pooled_latency({"fidelity": "screen", "latency_ms": 5.0}, {"p50": 6.0, "p90": 7.0}, None) == {}
    two = pooled_latency(search, None, {"latency_ms": 8.98, "latency_p90_ms": 10.0})  # polished: the same network
    assert two["latency_ms"] == pytest.approx(8.525) and two["latency_p90_ms"] == pytest.approx(9.5)
    assert two["latency_timings_ms"] == [8.07, 8.98]
    three = pooled_latency(search, {"p50": 8.2, "p90": 9.1}, {"latency_ms": 8.98, "latency_p90_ms": 10.0})
    assert three["latency_ms"] == 8.2 and three["latency_p90_ms"] == 9.1  # one slow reading no longer decides
    assert pooled_latency(search, {"p50": 8.4, "p90": 9.3}, None)["latency_ms"] == pytest.approx(8.235)


def test_a_polished_model_that_validates_lower_does_not_replace_the_search_model():
    row = {**_row(3, 0.80, 8.0), "test_accuracy": 0.81, "screen_accuracy": 0.78}
    record = {"accuracy": 0.79, "test_accuracy": 0.83, "latency_ms": 8.1, "kd_steps": 1200,
              "model_dir": "m3-polished", "plan": row["plan"], "seconds": 200.0}
    out = apply_polished(row, record)
    assert {k: out[k] for k in row} == row  # the search's model and figures stay the answer
    assert out["polish_rejected"]["accuracy"] == 0.79 and out["polish_rejected"]["model_dir"] == "m3-polished"
    assert not out.get("polished") and not out.get("search")
    assert out["number"] not in [r["number"] for r in candidates({"recommended": out, "meets_budget": True,
                                                                   "front": [out]})]  # not polished again
    tie = apply_polished(row, {**record, "accuracy": 0.80})
    assert tie["polished"] is True and tie["model_dir"] == "m3-polished"  # as good on validation: the longer recovery


def test_fidelity_stats_count_promotions_and_rank_agreement():
    rows = [{"screen_accuracy": 0.7, "warm_start": "teacher", "fidelity": "full", "accuracy": 0.8}]
    rows += [{"screen_accuracy": s, "fidelity": "full", "accuracy": a} for s, a in
             [(0.60, 0.70), (0.65, 0.74), (0.70, 0.78), (0.72, 0.77)]]
    rows += [{"screen_accuracy": 0.5, "fidelity": "screen", "accuracy": 0.5}] * 4
    stats = fidelity_stats(rows)
    assert stats["sampled"] == 8 and stats["promoted"] == 4 and stats["promotion_rate"] == 0.5
    assert stats["spearman"] == pytest.approx(0.8)


def test_a_driver_killed_while_writing_a_trials_figures_leaves_them_out_of_the_rule_and_the_stats():
    """Optuna writes a trial's attributes one at a time: kill -9 between two of them leaves a running
    trial with ``screen_accuracy`` and no ``screen_latency_ms`` (CI, stop 29). A continued study
    reads only finished trials."""
    import optuna

    from autocompress.report import study_rows
    from autocompress.search.fidelity import study_points

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"])
    done = study.ask()
    for key, value in {"screen_accuracy": 0.7, "screen_latency_ms": 5.0, "fidelity": "full",
                       "accuracy": 0.75, "latency_ms": 5.5}.items():
        done.set_user_attr(key, value)
    study.tell(done, [0.75, 5.5])
    partial = study.ask()
    partial.set_user_attr("screen_accuracy", 0.6)  # killed here
    assert study_points(study) == ([(0.7, 5.0)], [(0.7, 5.0, 5.5)])
    assert fidelity_stats(study_rows(study))["sampled"] == 1

def test_polish_shortens_to_the_time_left_or_skips():
    row = _row(3, 0.8, 8.0)  # its recovery took 60 s
    assert fitting_factor(row, 4.0, 1000.0) == 4.0
    one = RECOVERY_MARGIN * 60  # what one search recovery's worth of polishing is expected to take
    assert fitting_factor(row, 4.0, OVERHEAD_S + one * 2.6) == 2.5  # the largest quarter that fits
    assert fitting_factor(row, 4.0, OVERHEAD_S + one * 1.2) is None  # less than 1.5x is not worth it


def test_the_fit_estimate_counts_candidates_and_warns_when_few_full_ones_fit():
    from dataclasses import replace

    from autocompress.search.fit import FEW_FULL, FitEstimate

    fast = FitEstimate(step_s=0.3, forward_s=0.1, screen_s=20.0, full_s=100.0, seconds=1200.0)
    assert fast.fits() == (20, 10) and fast.warning() is None  # 60 s per candidate at half promoted
    assert "~20 sampled candidates fit in 20 min, ~10 of them full" in fast.line()
    queued = replace(fast, queued_s=300.0)  # warm starts run first
    assert queued.fits() == (15, 7) and "after the warm starts (~5.0 min)" in queued.line() and queued.warning()
    # a warm start without recovery (the teacher) costs the full run less its KD steps
    assert replace(fast, kd_steps=300).full_run_s(0) == 100.0 - 300 * 0.3 and fast.full_run_s(0) == 100.0
    # a base-size model: a KD step of seconds, a full candidate of an hour, 25 minutes
    slow = FitEstimate(step_s=12.0, forward_s=3.0, screen_s=1000.0, full_s=3700.0, seconds=1500.0)
    assert slow.fits() == (0, 0)
    assert slow.warning() is not None and f"fewer than {FEW_FULL}" in slow.warning() and "--time-limit" in slow.warning()
    assert FitEstimate(step_s=1, forward_s=1, screen_s=1, full_s=1, seconds=None).fits() is None
    # finished trials replace the measured bounds and the assumed promotion rate
    rows = [{"fidelity": "screen", "seconds": 10.0}] * 3 + [{"fidelity": "full", "seconds": 50.0, "kd_steps": 300},
                                                          {"fidelity": "full", "seconds": 5.0, "kd_steps": 0},
                                                          {"fidelity": "full", "seconds": 9.0, "promotion": "warm start"}]
    seen = fast.observed(rows)
    assert (seen.screen_s, seen.full_s, seen.promote_rate) == (10.0, 50.0, 0.4)  # the untrained teacher row aside
    assert seen.fits() == (int(1200 / (0.6 * 10 + 0.4 * 50)), int(int(1200 / 26.0) * 0.4))
