"""Side-by-side comparison of search runs and baselines on one accuracy–latency plane.

Every run is reduced to its fully evaluated points; hypervolume uses one reference point shared
by all runs — (teacher accuracy − 10 points, teacher latency) unless given — so the numbers are
comparable across samplers and spaces.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from . import cache
from .errors import UserError
from .pareto import front, hypervolume
from .objectives import REGION_DROP_POINTS
from .report import save_figure


def load_run(path: Path) -> dict:
    """A search run folder (``pareto.json`` + ``trials.csv``) or a baseline folder (``baseline.json``)."""
    path = Path(path)
    if (path / "pareto.json").is_file():
        meta = json.loads((path / "pareto.json").read_text())
        points = []
        with open(path / "trials.csv") as fh:
            for row in csv.DictReader(fh):
                if row["state"] == "COMPLETE" and row["fidelity"] == "full":
                    points.append({"number": int(row["number"]), "accuracy": float(row["accuracy"]),
                                   "latency_ms": float(row["latency_ms"]), "warm_start": row["warm_start"] or None})
        for m in meta["members"]:  # front members carry their re-measured latency
            for p in points:
                if p["number"] == m["number"]:
                    p["latency_ms"] = m["latency_ms"]
        label = f"{meta.get('space')}/{meta.get('sampler')}"
        return {"label": label, "kind": "search", "path": str(path), "points": points, "teacher": meta.get("teacher"),
                "trials": meta.get("trials"), "wall_seconds": meta.get("wall_seconds"), "target": meta.get("target")}
    if (path / "baseline.json").is_file():
        meta = json.loads((path / "baseline.json").read_text())
        m = meta["metrics"]
        return {"label": "decision-tree baseline", "kind": "baseline", "path": str(path),
                "points": [{"number": 0, "accuracy": m["accuracy"], "latency_ms": m["latency_ms"], "warm_start": None}],
                "teacher": meta.get("teacher"), "trials": 1, "wall_seconds": m.get("seconds"),
                "target": meta.get("target")}
    raise UserError(f"{path}: not a search run (no pareto.json) nor a baseline (no baseline.json)")


def compare(paths: list[Path], *, budgets_ms: list[float] = (), reference: tuple[float, float] | None = None) -> dict:
    runs = [load_run(p) for p in paths]
    if reference is None:
        teacher = next((r["teacher"] for r in runs if r.get("teacher")), None)
        if not teacher or "latency_ms" not in teacher:
            raise UserError("no teacher metrics recorded in these runs; pass --reference ACC,MS")
        reference = (teacher["validation_accuracy"] - REGION_DROP_POINTS / 100, teacher["latency_ms"])
    targets = {json.dumps(r["target"], sort_keys=True) for r in runs if r.get("target")}
    rows = []
    for run in runs:
        pts = run["points"]
        best = {}
        for b in budgets_ms:
            ok = [p["accuracy"] for p in pts if p["latency_ms"] <= b]
            best[f"{b:g}ms"] = max(ok) if ok else None
        rows.append({"label": run["label"], "path": run["path"], "trials": run["trials"],
                     "wall_seconds": run["wall_seconds"], "full_points": len(pts),
                     "hypervolume": hypervolume([(p["accuracy"], p["latency_ms"]) for p in pts], reference),
                     "best_under": best, "front": front(pts)})
    return {"reference": reference, "rows": rows, "runs": runs, "same_target": len(targets) <= 1}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _plot(result, out / "compare.png")
    cache.atomic_write_text(out / "compare.md", markdown(result))
    cache.atomic_write_json(out / "compare.json", {k: v for k, v in result.items() if k != "runs"})


def table(result: dict) -> str:
    budgets = list(result["rows"][0]["best_under"]) if result["rows"] else []
    head = f"{'run':<28} {'trials':>6} {'wall s':>7} {'HV':>8}" + "".join(f" {'best@' + b:>11}" for b in budgets)
    lines = [head]
    for r in result["rows"]:
        cells = "".join(f" {v:>11.4f}" if v is not None else f" {'-':>11}" for v in r["best_under"].values())
        wall = f"{r['wall_seconds']:.0f}" if r["wall_seconds"] is not None else "-"
        lines.append(f"{r['label'][:28]:<28} {r['trials'] or '-':>6} {wall:>7} {r['hypervolume']:>8.4f}{cells}")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    ref = result["reference"]
    lines = ["# Comparison", "", f"Hypervolume reference point: accuracy {ref[0]:.4f}, latency {ref[1]:.2f} ms "
             "(shared by every run).", ""]
    if not result["same_target"]:
        lines += ["**Warning: the runs were measured on different targets.**", ""]
    lines += ["```", table(result), "```", "", "![fronts](compare.png)", ""]
    for r in result["rows"]:
        lines.append(f"- {r['label']}: `{r['path']}`")
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for run, row in zip(result["runs"], result["rows"]):
        if run["kind"] == "baseline":
            p = run["points"][0]
            ax.scatter([p["latency_ms"]], [p["accuracy"]], marker="D", s=70, c="#c44e52", label=run["label"], zorder=5)
            continue
        pts = row["front"]
        line = ax.step([p["latency_ms"] for p in pts], [p["accuracy"] for p in pts], where="post",
                       label=f"{run['label']} (HV {row['hypervolume']:.3f})")
        ax.scatter([p["latency_ms"] for p in run["points"]], [p["accuracy"] for p in run["points"]], s=8,
                   alpha=0.35, color=line[0].get_color())
    ref = result["reference"]
    ax.axvline(ref[1], ls=":", c="k", lw=0.8)
    ax.axhline(ref[0], ls=":", c="k", lw=0.8)
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)
