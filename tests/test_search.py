"""End-to-end searches on a tiny model and tiny data, through Ray Tune and Optuna."""

import csv
import json
import sqlite3
import sys
from pathlib import Path

import optuna
import pytest

from autocompress.cli import main
from conftest import use_tiny_project


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_project):
    mp, tiny = use_tiny_project(tiny_project, tmp_path_factory.mktemp("search"))
    yield tiny
    mp.undo()


def _count(db):
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from trials").fetchone()[0]


def test_search_respects_the_budget_and_resumes(tiny, capsys, monkeypatch):
    out = tiny["tmp"] / "run"
    monkeypatch.chdir(tiny["tmp"])  # a relative --out, as in the README: trials run in Ray's own folders
    argv = ["search", *tiny["args"], "--trials", "5", "--budget", "50ms", "--out", "run", "--study-name", "t",
            "--executor", "ray"]  # the default executor, as the README runs it
    assert main(argv + ["--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    for name in ("pareto.json", "recommended.json", "trials.csv", "pareto.png", "report.md", "study.db"):
        assert (out / name).is_file(), name
    assert rec["meets_budget"] is True
    assert rec["candidate"]["latency_ms"] <= 50
    assert rec["candidate"]["fidelity"] == "full"
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["members"] and all(m["fidelity"] == "full" for m in pareto["members"])
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{out / 'study.db'}")
    first = study.trials[0]
    assert first.user_attrs["warm_start"] == "teacher" and first.user_attrs["fidelity"] == "full"
    baseline = study.trials[1]  # inside the space: enqueued by its parameters, so the sampler learns from it
    assert baseline.user_attrs["warm_start"] == "baseline" and "fixed_plan" not in baseline.user_attrs
    assert baseline.params and baseline.user_attrs["plan"]["name"] == "decision-tree-baseline"
    assert {t.user_attrs.get("fidelity") for t in study.trials if t.state.name == "COMPLETE"} <= {"screen", "full"}
    assert all("plan" in t.user_attrs for t in study.trials)
    assert _count(out / "study.db") == 5
    # the front's models are saved in the run folder and measured again there at the end
    assert all((out / "models" / Path(m["model_dir"]).name).is_dir() for m in pareto["members"])
    # (a re-measured member may leave the front and let another in: that one is measured too)
    assert {str(m["number"]) for m in pareto["members"]} <= set(study.user_attrs["remeasured"])
    # every full candidate is timed beside the teacher saved in the run folder, in the run's frame
    frame = json.loads((out / "reference" / "frame.json").read_text())
    assert study.user_attrs["reference"]["p50"] == frame["p50"]
    assert study.user_attrs["teacher"]["latency_ms"] == pytest.approx(frame["p50"], abs=1e-3)
    for t in study.trials:
        if t.user_attrs.get("fidelity") == "full":
            a = t.user_attrs
            assert a["latency_ms"] == pytest.approx(a["latency_raw_ms"] * a["latency_drift"], rel=2e-3, abs=2e-3)
    with open(out / "trials.csv") as fh:  # trials.csv keeps the measured figure and the factor
        assert all(float(r["latency_raw_ms"]) > 0 and float(r["latency_drift"]) > 0
                   for r in csv.DictReader(fh) if r["fidelity"] == "full")

    # the same command again continues the same study, in the same frame
    # (here on the local executor: a study started on Ray continues without it)
    assert main(argv[:argv.index("--trials") + 1] + ["3"] + argv[argv.index("--trials") + 2:]
                + ["--executor", "local"]) == 0
    assert _count(out / "study.db") == 8
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{out / 'study.db'}")
    assert sum(t.user_attrs.get("warm_start") == "teacher" for t in study.trials) == 1  # not warm-started twice
    assert json.loads((out / "reference" / "frame.json").read_text()) == frame
    assert study.user_attrs["reference"]["p50"] == frame["p50"]


def test_an_impossible_budget_is_said_loudly_with_the_closest(tiny, capsys):
    out = tiny["tmp"] / "tight"
    assert main(["search", *tiny["args"], "--trials", "2", "--budget", "0.001ms", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "NO candidate meets" in printed
    rec = json.loads((out / "recommended.json").read_text())
    assert rec["meets_budget"] is False and rec["candidate"] is not None


@pytest.mark.parametrize("budget,message", [("40xs", "unknown unit 'xs'"), ("fast", "cannot parse latency budget"),
                                            ("-3ms", "cannot parse"), ("0ms", "must be > 0")])
def test_bad_budgets_fail_with_one_line(tiny, capsys, budget, message):
    assert main(["search", *tiny["args"], f"--budget={budget}", "--out", str(tiny["tmp"] / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tiny["tmp"] / "bad").exists()


@pytest.mark.parametrize("body,message", [
    ("schema: autocompress.space/v1\nlayers: {heads: [1.0, 2.0]}\n", "fractions in (0, 1]"),
    ("schema: autocompress.space/v1\nlayers: {headz: [1.0]}\n", "unknown key 'headz'"),
    ("schema: autocompress.space/v1\nlayers:\n  heads: [1.0\n", "not valid YAML"),
    ("schema: autocompress.space/v9\n", "expected 'autocompress.space/v1'"),
    ("schema: autocompress.space/v1\ndistill: {kind: [magic]}\n", "one of none, logits"),
])
def test_bad_space_files_fail_with_one_line(tiny, tmp_path, capsys, body, message):
    space = tmp_path / "space.yaml"
    space.write_text(body)
    args = [a if a != tiny["args"][-1] else str(space) for a in tiny["args"]]
    assert main(["search", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_unknown_sampler_and_space(tiny, capsys):
    assert main(["search", *tiny["args"], "--sampler", "bayes"]) == 2
    assert "tpe, nsga2, gp, random" in capsys.readouterr().err
    args = [a if a != tiny["args"][-1] else "nope" for a in tiny["args"]]
    assert main(["search", *args]) == 2
    assert "joint" in capsys.readouterr().err


def test_two_node_ray_cluster_runs_trials_on_both_nodes_and_loses_nothing(tiny):
    """Two workers on two Ray nodes write the default SQLite storage at once: every trial is
    complete, with its figures, and each node ran some."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        out = tiny["tmp"] / "cluster"
        assert main(["search", *tiny["args"], "--trials", "6", "--workers", "2", "--ray-address", cluster.address,
                     "--threads", "1", "--out", str(out), "--no-baseline", "--executor", "ray"]) == 0
        study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'study.db'}")
        trials = study.trials
        assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials), [t.state.name for t in trials]
        assert all(t.user_attrs.get("accuracy") is not None and t.values for t in trials)
        nodes = {t.user_attrs.get("node") for t in trials}
        assert len(nodes) == 2, nodes
        assert len({t.user_attrs["worker_pid"] for t in trials}) == 2  # both workers ran trials
        if sys.platform.startswith("linux"):  # each row says what its worker holds after the trial
            assert all(0 < t.user_attrs["worker_rss_mb"] <= t.user_attrs["worker_peak_rss_mb"] for t in trials)
            with open(out / "trials.csv") as fh:  # and trials.csv shows it
                assert all(float(r["worker_rss_mb"]) > 0 for r in csv.DictReader(fh))
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


ALLOCATED_SPACE = """schema: autocompress.space/v1
kind: allocated
allocation: {target: [0.2, 1.0], depth_bias: [-0.5, 2.5], ffn_groups: 4}
distill: {kind: [logits, logits+hidden], steps: 20, lr: 1.0e-3, batch_size: 16}
fidelity: {screen_steps: 5, screen_examples: 48, min_promote: 2}
"""


def test_allocated_search_with_a_speedup_budget_polishes_its_pick(tiny, capsys):
    space = tiny["tmp"] / "allocated.yaml"
    space.write_text(ALLOCATED_SPACE)
    args = [a if a != tiny["args"][-1] else str(space) for a in tiny["args"]]
    out = tiny["tmp"] / "allocated"
    assert main(["search", *args, "--trials", "7", "--budget", "1.5x", "--polish", "2", "--out", str(out),
                 "--study-name", "a", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    study = optuna.load_study(study_name="a", storage=f"sqlite:///{out / 'study.db'}")
    teacher_ms = study.user_attrs["teacher"]["latency_ms"]
    assert rec["budget"]["speedup"] == 1.5
    assert rec["budget"]["latency_ms"] == pytest.approx(teacher_ms / 1.5, rel=1e-3)  # measured in this run
    warm = [t.user_attrs.get("warm_start") for t in study.trials[:5]]
    assert warm[:2] == ["teacher", "baseline"] and warm[2].startswith("recipe: ")  # the one-minute answers first
    recipes = [t for t in study.trials[2:5] if (t.user_attrs.get("warm_start") or "").startswith("recipe: ")
               and "refit_of" not in t.user_attrs]  # (a recipe timed over the budget is refitted once, after it)
    assert {t.user_attrs["warm_start"] for t in recipes} <= {"recipe: every other layer", "recipe: drop the top layers",
                                                             "recipe: every other layer, FFN cut", "recipe: even FFN cut"}
    plans = [t.user_attrs["plan"]["layers"] for t in recipes]
    assert all(a != b for i, a in enumerate(plans) for b in plans[:i])  # recipes that agree are enqueued once
    assert all("force_full" not in t.user_attrs and t.user_attrs["promotion"] != "warm start" for t in recipes)
    sampled = [t for t in study.trials if not t.user_attrs.get("warm_start") and t.state.name == "COMPLETE"]
    assert sampled and all("allocation" in t.user_attrs for t in sampled)
    teacher = study.trials[0]
    assert teacher.user_attrs["warm_start"] == "teacher" and teacher.user_attrs["plan"]["distill"]["steps"] == 0
    assert all(set(t.params) <= {"target", "depth_bias", "layer_order", "width", "fit", "dtype.attention",
                                 "dtype.ffn", "distill.kind"} for t in sampled)
    fit = study.user_attrs["fit"]  # measured before the first trial: what one candidate costs here
    assert 0 < fit["screen_s"] < fit["full_s"] and "per full candidate" in fit["line"]
    assert 0 <= fit["fits"][1] <= fit["fits"][0] and f"~{fit['fits'][0]} sampled candidates fit" in fit["line"]
    candidate = rec["candidate"]
    polished = study.user_attrs.get("polished", {})
    # every plan with recovery: 20 steps at the whole model's cost, more (up to 3x) for a lighter plan
    recovering = [t.user_attrs["plan"]["distill"]["steps"] for t in study.trials if t.state.name == "COMPLETE"
                  and t.user_attrs["plan"]["distill"]["steps"]]
    assert recovering and all(20 <= s <= 60 for s in recovering)
    if candidate["plan"]["distill"]["steps"]:  # a plan with recovery is rebuilt with twice its KD steps
        searched = (candidate.get("search") or {}).get("kd_steps") or candidate["plan"]["distill"]["steps"]
        assert 20 <= searched <= 60
        assert str(candidate["number"]) in polished and polished[str(candidate["number"])]["kd_steps"] == 2 * searched
        if candidate.get("polished"):  # it validated at least as well: it is the answer now
            assert candidate["plan"]["distill"]["steps"] == 2 * searched
            assert candidate["model_dir"].endswith("-polished")
        else:  # it validated lower: the search's model stays
            assert candidate["polish_rejected"]["kd_steps"] == 2 * searched
            assert candidate["plan"]["distill"]["steps"] == searched
            assert polished[str(candidate["number"])]["accuracy"] < candidate["accuracy"]
        assert (out / "models" / candidate["model_dir"].split("/")[-1]).is_dir()
    report = (out / "report.md").read_text()
    assert "two-stage evaluation:" in report and "promoted to the full run" in report
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["fidelity"]["sampled"] == len([t for t in study.trials if not t.user_attrs.get("warm_start")
                                                 and "screen_accuracy" in t.user_attrs])


def test_a_slow_models_screening_is_sized_to_it_and_a_continued_study_keeps_it(tiny, capsys, monkeypatch):
    """Screening after 80 KD steps of 3 s each would take 4 minutes a candidate: the search screens
    without training, by the linear probe, says so, records it, and a continued study screens the
    same way even when the machine is fast again (its screens stay comparable). The same for the
    recovery scale: the whole model's 20 steps at 3 s exceed the (lowered) line, so no plan gets
    more steps than the space's."""
    from autocompress.search import fit

    space = tiny["tmp"] / "allocated-slow.yaml"
    space.write_text(ALLOCATED_SPACE.replace("screen_steps: 5", "screen_steps: 80"))
    args = [a if a != tiny["args"][-1] else str(space) for a in tiny["args"]]
    out = tiny["tmp"] / "slow"
    argv = ["search", *args, "--polish", "0", "--out", str(out), "--study-name", "slow"]
    with monkeypatch.context() as slow:
        slow.setattr(fit, "time_steps", lambda ctx, **kw: (3.0, 1.0))  # seconds per KD step, per eval batch
        slow.setattr(fit, "RECOVERY_KEEP_BELOW", 30.0)  # the tiny space's 20 steps at 3 s: 60 s
        assert main(argv + ["--trials", "4"]) == 0
    err = capsys.readouterr().err
    assert "screening after 80 KD steps would take ~" in err and "with the untrained linear probe" in err
    assert "every plan recovers for 20 steps, not up to 3x as many" in err
    study = optuna.load_study(study_name="slow", storage=f"sqlite:///{out / 'study.db'}")
    assert study.user_attrs["screening"] == {"screen_steps": 0, "screen_score": "probe", "kd_scale": 1.0}
    screened = [t for t in study.trials if "screen_accuracy" in t.user_attrs and t.user_attrs.get("kd_steps")]
    assert screened and all(t.user_attrs["screen_kd_steps"] == 0 for t in screened)
    recipes = [t for t in study.trials if (t.user_attrs.get("warm_start") or "").startswith("recipe: ")
               and t.state.name == "COMPLETE"]  # a recipe past --trials waits for the continued run
    assert recipes and all(t.user_attrs["force_full"] and t.user_attrs["fidelity"] == "full"
                           and t.user_attrs["promotion"] == "warm start" for t in recipes)  # no budget: all in full
    first = len(study.trials)
    assert main(argv + ["--trials", "6"]) == 0  # continued, at this machine's real (fast) speed
    err = capsys.readouterr().err
    assert "would take ~" not in err and "as this study has screened from its start" in err
    study = optuna.load_study(study_name="slow", storage=f"sqlite:///{out / 'study.db'}")
    steps = [t.user_attrs["plan"]["distill"]["steps"] for t in study.trials
             if ((t.user_attrs.get("plan") or {}).get("distill") or {}).get("steps")]
    assert steps and set(steps) == {20}  # never scaled, in either run (cut plans would get up to 60)
    assert study.user_attrs["screening"] == {"screen_steps": 0, "screen_score": "probe", "kd_scale": 1.0}
    later = [t for t in study.trials[first:] if "screen_accuracy" in t.user_attrs and t.user_attrs.get("kd_steps")]
    assert later and all(t.user_attrs["screen_kd_steps"] == 0 for t in later)


def test_the_recovery_scale_is_kept_for_a_fast_model_and_dropped_for_a_slow_one():
    from autocompress.search.fit import RECOVERY_KEEP_BELOW, recovery_scale_for

    assert recovery_scale_for(3.0, 300, 0.48) == 3.0  # the default model here: ~145 s for the whole model
    assert recovery_scale_for(3.0, 300, 1.92) == 1.0  # a BERT-base-sized model: ~580 s
    assert recovery_scale_for(3.0, 300, RECOVERY_KEEP_BELOW / 300) == 3.0  # at the line: kept
    assert recovery_scale_for(1.0, 300, 0.1) == 1.0 and recovery_scale_for(3.0, 20, 3.0, keep_below=30) == 1.0


def test_screening_is_kept_for_a_fast_model_and_shortened_or_untrained_for_slow_ones():
    from autocompress.search.fit import MIN_SCREEN_STEPS, SCREEN_SECONDS, costs, screening_for
    from autocompress.search.space_file import Fidelity

    shipped = Fidelity(screen_steps=80, screen_examples=400)
    assert screening_for(shipped, 0.35, 0.2) is shipped  # the default model here: ~30 s a screen
    assert screening_for(shipped, 1.4, 0.2) is shipped  # ~115 s: kept (a line near it would move with the drift)
    base = screening_for(shipped, 1.92, 1.0)  # a BERT-base-sized model here: fewer than 40 steps fit in a minute
    assert (base.screen_steps, base.screen_score, base.screen_examples) == (0, "probe", 400)
    long = Fidelity(screen_steps=200, screen_examples=400)  # a space screening long: ~143 s at 0.7 s a step
    cut = screening_for(long, 0.7, 0.2)
    assert cut.screen_score == "accuracy" and MIN_SCREEN_STEPS <= cut.screen_steps < 200
    cost = lambda steps: costs(0.7, 0.2, kd_steps=300, screen_steps=steps, screen_examples=400,  # noqa: E731
                               probe_examples=0, n_eval=0, latency_ms=0.0, seconds=None).screen_s
    assert cost(cut.screen_steps) <= SCREEN_SECONDS < cost(cut.screen_steps + 1)  # as many steps as fit
    steps = [screening_for(long, s, 0.2).screen_steps for s in (0.3, 0.7, 0.9, 1.2, 1.5, 3.0)]
    assert steps == sorted(steps, reverse=True) and steps[0] == 200 and steps[-1] == 0  # slower never screens longer
