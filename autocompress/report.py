"""Search outputs, all derived from the study storage (so they can be rebuilt at any time):
``pareto.json``, ``recommended.json``, ``trials.csv``, ``pareto.png``, ``report.md``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import optuna

from . import cache
from .latency.runtime import describe_size_source
from .pareto import front, hypervolume, pick
from .objectives import Budget, constraint_values, feasible
from .search.polish import apply_polished

ROW_FIELDS = ("number", "state", "fidelity", "accuracy", "test_accuracy", "agreement", "latency_ms", "latency_p90_ms",
              "latency_raw_ms", "latency_drift",
              "size_mb", "size_source", "weights_mb", "score_source", "params", "feasible", "warm_start", "polished", "search_accuracy", "search_test_accuracy",
              "search_latency_ms", "screen_accuracy", "screen_latency_ms", "promotion", "kd_steps", "seconds",
              "overhead_seconds", "node", "worker_rss_mb", "worker_peak_rss_mb", "error", "duplicate_of")


def study_rows(study: optuna.Study) -> list[dict]:
    """One row per trial: the stored metrics and the plan. A full candidate's latency is the median
    of its timings (:func:`pooled_latency`)."""
    meta = study.user_attrs
    budget = Budget(**meta.get("budget", {}))
    teacher_acc = meta.get("teacher", {}).get("validation_accuracy", 0.0)
    remeasured = meta.get("remeasured", {})
    polished = meta.get("polished", {})
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name, **t.user_attrs}
        if str(t.number) in remeasured:  # front members are measured again, alone, at the end
            final = remeasured[str(t.number)]
            row.update(latency_ms=final["p50"], latency_p90_ms=final["p90"], remeasured=True)
        if str(t.number) in polished:  # rebuilt with a longer recovery after the search
            row = apply_polished(row, polished[str(t.number)])
            if row.get("search"):
                row.update(search_accuracy=row["search"]["accuracy"],
                           search_test_accuracy=row["search"]["test_accuracy"],
                           search_latency_ms=row["search"]["latency_ms"])
        row.update(pooled_latency(t.user_attrs, remeasured.get(str(t.number)), polished.get(str(t.number))))
        if t.state == optuna.trial.TrialState.COMPLETE and "accuracy" in row:
            row["feasible"] = feasible(constraint_values(row, budget, teacher_acc))
        rows.append(row)
    return rows


def pooled_latency(attrs: dict, remeasured: dict | None, polished: dict | None) -> dict:
    """A full candidate's latency figures as the median of every timing of its structure: the
    search's, the final re-measurement's, the polished model's (polishing changes only the KD
    steps, so it is the same network). Each was taken in a fresh process beside the reference
    and put in the run's frame; on this 2-core machine one timing still moves by ±10% (runs/planner19,
    ONNX Runtime s0: the decision tree's plan read 8.84 ms in the search, 8.07 re-measured and 8.98
    polished, against a budget of 8.43 ms; whichever came last decided). Empty when there is a
    single timing; else ``latency_ms``, ``latency_p90_ms`` and the timings behind them
    (``latency_timings_ms``). The ``search`` figures of a polished row stay the single timing
    the search's model had when it was replaced."""
    import statistics

    if attrs.get("fidelity") != "full" or "latency_ms" not in attrs:
        return {}
    p50s, p90s = [attrs["latency_ms"]], [attrs.get("latency_p90_ms")]
    if remeasured:
        p50s.append(remeasured["p50"])
        p90s.append(remeasured.get("p90"))
    if polished and polished.get("latency_ms") is not None:
        p50s.append(polished["latency_ms"])
        p90s.append(polished.get("latency_p90_ms"))
    if len(p50s) < 2:
        return {}
    p90s = [v for v in p90s if v is not None]
    out = {"latency_ms": round(statistics.median(p50s), 3), "latency_timings_ms": p50s}
    if p90s:
        out["latency_p90_ms"] = round(statistics.median(p90s), 3)
    return out


def summarise(study: optuna.Study) -> dict:
    """Front, hypervolume and recommendation of a study (full-fidelity trials only)."""
    meta = study.user_attrs
    budget = Budget(**meta.get("budget", {}))
    teacher = meta.get("teacher", {})
    rows = study_rows(study)
    full = [r for r in rows if r["state"] == "COMPLETE" and r.get("fidelity") == "full"]
    members = front(full)
    ref = reference_point(meta)
    chosen, meets, why = pick(full, budget, teacher.get("validation_accuracy", 0.0))
    return {"rows": rows, "full": full, "front": members, "reference": ref,
            "hypervolume": hypervolume([(r["accuracy"], r["latency_ms"]) for r in members], ref),
            "recommended": chosen, "meets_budget": meets, "why": why, "budget": budget, "meta": meta,
            "fidelity": fidelity_stats(rows)}


def fidelity_stats(rows: list[dict]) -> dict:
    """How the two-stage evaluation did: sampled candidates (warm starts excluded) and how many were
    promoted to the full run; the Spearman rank correlation of screened with full validation
    accuracy (search figures, before polishing) over the promoted ones."""
    sampled = [r for r in rows if "screen_accuracy" in r and not r.get("warm_start")
               and r.get("state", "COMPLETE") == "COMPLETE"]  # a killed driver leaves some figures on a running one
    promoted = [r for r in sampled if r.get("fidelity") == "full"]
    stats = {"sampled": len(sampled), "promoted": len(promoted),
             "promotion_rate": round(len(promoted) / len(sampled), 3) if sampled else None, "spearman": None,
             "duplicates": sum(r.get("duplicate_of") is not None for r in rows)}
    pairs = [(r["screen_accuracy"], (r.get("search") or r)["accuracy"]) for r in promoted]
    if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
        from scipy.stats import spearmanr

        stats["spearman"] = round(float(spearmanr(*zip(*pairs)).statistic), 3)
    return stats


def reference_point(meta: dict) -> tuple[float, float]:
    """Shared reference: (teacher accuracy − 10 points, teacher latency)."""
    teacher = meta.get("teacher", {})
    return (teacher.get("validation_accuracy", 0.0) - 0.10, teacher.get("latency_ms", float("inf")))


def member_record(row: dict) -> dict:
    keys = ("number", "fidelity", "accuracy", "test_accuracy", "agreement", "latency_ms", "latency_p90_ms",
            "size_mb", "size_source", "weights_mb", "score_source", "params", "feasible", "warm_start", "model_dir", "plan", "polished",
            "search", "polish_rejected", "latency_timings_ms")
    return {k: row.get(k) for k in keys}


def write_outputs(study: optuna.Study, out: Path) -> dict:
    s = summarise(study)
    meta = s["meta"]
    common = {"study": study.study_name, "space": meta.get("space"), "sampler": meta.get("sampler"),
              "target": meta.get("target"), "budget": s["budget"].to_dict(), "teacher": meta.get("teacher"),
              "reference_point": s["reference"], "hypervolume": s["hypervolume"],
              "trials": sum(r.get("duplicate_of") is None for r in s["rows"]), "full_trials": len(s["full"]), "wall_seconds": meta.get("wall_seconds", 0.0),
              "fidelity": s["fidelity"], "space_dropped": meta.get("space_dropped", [])}
    cache.atomic_write_json(out / "pareto.json", {**common, "members": [member_record(r) for r in s["front"]]})
    recommended = {"meets_budget": s["meets_budget"], "why": s["why"], "budget": s["budget"].to_dict(),
                   "teacher": meta.get("teacher"), "target": meta.get("target"),
                   "candidate": member_record(s["recommended"]) if s["recommended"] else None}
    cache.atomic_write_json(out / "recommended.json", recommended)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in s["rows"]:
        writer.writerow(row)
    cache.atomic_write_text(out / "trials.csv", buffer.getvalue())
    plot(s, out / "pareto.png")
    cache.atomic_write_text(out / "report.md", markdown(s, common))
    return {**s, "recommended_json": recommended}


def plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    screen = [r for r in s["rows"] if r.get("fidelity") == "screen" and "accuracy" in r]
    if screen:
        ax.scatter([r["latency_ms"] for r in screen], [r["accuracy"] for r in screen], s=12, c="#bbbbbb",
                   label="screened only (short recovery, subset)")
    ax.scatter([r["latency_ms"] for r in s["full"]], [r["accuracy"] for r in s["full"]], s=18, c="#4c72b0",
               label="fully evaluated")
    if s["front"]:
        ax.step([r["latency_ms"] for r in s["front"]], [r["accuracy"] for r in s["front"]], where="post", c="#dd8452",
                lw=1.5, label="Pareto front")
    teacher = s["meta"].get("teacher", {})
    if "latency_ms" in teacher:
        ax.scatter([teacher["latency_ms"]], [teacher["validation_accuracy"]], marker="*", s=160, c="k", label="teacher")
    baseline = [r for r in s["full"] if r.get("warm_start") == "baseline"]
    if baseline:
        ax.scatter([r["latency_ms"] for r in baseline], [r["accuracy"] for r in baseline], marker="D", s=60,
                   c="#c44e52", label="decision-tree baseline")
    if s["budget"].latency_ms is not None:
        ax.axvline(s["budget"].latency_ms, ls="--", c="#55a868", label=f"budget {s['budget'].latency_ms:g} ms")
    if s["recommended"]:
        r = s["recommended"]
        ax.scatter([r["latency_ms"]], [r["accuracy"]], s=140, facecolors="none", edgecolors="#55a868", lw=2,
                   label="recommended")
    target = s["meta"].get("target", {})
    ax.set_xlabel(f"latency p50 (ms) — {target.get('runtime', '?')}, batch {target.get('batch_size', '?')}, "
                  f"seq {target.get('seq_len', '?')}, {target.get('threads', '?')} threads")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"study {s['meta'].get('study_name', '')}".strip())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def front_table(front_rows: list[dict]) -> str:
    """The front, one row per member; a polished member also shows its search figures."""
    lines = [f"{'trial':>5}  {'val acc':>7}  {'test acc':>8}  {'agree':>6}  {'p50 ms':>7}  {'p90 ms':>7}  "
             f"{'MB':>6}  {'params':>7}  budget"]
    for r in front_rows:
        note = [r["warm_start"]] if r.get("warm_start") else []
        if r.get("search"):
            was = r["search"]
            note.append(f"polished; search: {was['accuracy']:.4f} / {was.get('test_accuracy') or float('nan'):.4f} "
                        f"at {was['latency_ms']:.2f} ms, {was.get('kd_steps')} KD steps")
        elif r.get("polish_rejected"):
            lost = r["polish_rejected"]
            note.append(f"polishing to {lost.get('kd_steps')} KD steps validated lower ({lost['accuracy']:.4f} / "
                        f"{lost.get('test_accuracy') or float('nan'):.4f}): the search's model is kept")
        lines.append(f"{r['number']:>5}  {r['accuracy']:>7.4f}  {r.get('test_accuracy') or float('nan'):>8.4f}  "
                     f"{r.get('agreement') or float('nan'):>6.3f}  {r['latency_ms']:>7.2f}  "
                     f"{r.get('latency_p90_ms') or float('nan'):>7.2f}  {r['size_mb']:>6.1f}  "
                     f"{r['params'] / 1e6:>6.2f}M  {'ok' if r.get('feasible') else 'over'}"
                     + (f"  ({'; '.join(note)})" if note else ""))
    sources = sorted({r.get("size_source") or "weights" for r in front_rows})
    if front_rows:
        lines.append("MB: " + "; ".join(describe_size_source(s) for s in sources))
    scored = sorted({r["score_source"] for r in front_rows if r.get("score_source") not in (None, "torch")})
    if scored:
        lines.append(f"Accuracy of int8 plans scored on {', '.join(scored)} itself (its static int8, calibrated on "
                     "training examples); the others in torch, which computes what that runtime computes")
    return "\n".join(lines)


def _fidelity_line(stats: dict) -> str:
    if not stats.get("sampled"):
        return "- two-stage evaluation: no sampled candidate yet"
    rho = "n/a" if stats["spearman"] is None else f"{stats['spearman']:.2f}"
    return (f"- two-stage evaluation: {stats['promoted']} of {stats['sampled']} sampled candidates promoted to the "
            f"full run ({stats['promotion_rate']:.0%}); screened vs full validation accuracy, Spearman {rho}"
            + (f"; {stats['duplicates']} samples repeated an evaluated plan (not run)" if stats.get("duplicates") else ""))


def markdown(s: dict, common: dict) -> str:
    meta, rec = s["meta"], s["recommended"]
    teacher = meta.get("teacher", {})
    lines = [f"# Search report: {common['study']}", "",
             f"- model `{meta.get('model')}` on `{meta.get('dataset')}`; space `{common['space']}`, "
             f"sampler `{common['sampler']}`",
             f"- target: {json.dumps(common['target'])}",
             f"- budget: {s['budget'].describe()}",
             f"- teacher: validation accuracy {teacher.get('validation_accuracy')}, "
             f"latency p50 {teacher.get('latency_ms')} ms",
             f"- trials: {common['trials']} ({common['full_trials']} fully evaluated), "
             f"wall time {common['wall_seconds']:.0f} s",
             f"- hypervolume (accuracy × ms, reference {s['reference'][0]:.4f} / {s['reference'][1]:.2f} ms): "
             f"{s['hypervolume']:.4f}",
             _fidelity_line(s["fidelity"])]
    if common.get("space_dropped"):
        lines.append("- knobs dropped before the search (they cannot pay on this target): "
                     + "; ".join(common["space_dropped"]))
    lines += ["", "## Recommendation", ""]
    if rec:
        flag = "" if s["meets_budget"] else "**NO CANDIDATE MEETS THE BUDGET.** "
        lines += [f"{flag}{s['why']}: trial {rec['number']} — validation accuracy {rec['accuracy']:.4f}, "
                  f"test accuracy {rec.get('test_accuracy')}, p50 {rec['latency_ms']:.2f} ms, "
                  f"{rec['size_mb']:.1f} MB.", ""]
    else:
        lines += ["No candidate completed.", ""]
    lines += ["## Pareto front (fully evaluated trials)", "", "```", front_table(s["front"]), "```", "",
              "![Pareto front](pareto.png)", ""]
    return "\n".join(lines)
