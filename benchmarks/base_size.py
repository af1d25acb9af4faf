"""Base-size models within a night: per-stage seconds for a BERT-base-shaped encoder on this machine.

A 12-layer, 768-wide, 12-head, 3072-FFN BERT (110M parameters) with random weights — timing only,
its accuracy means nothing — on the default data (Rotten Tomatoes, the default model's
tokenizer), used as an already fine-tuned model (``no_finetune``). Prints what each stage takes:
loading the task (tokenising, the teacher's logits), the teacher's latency, latency calibration
with the grid sized to the model (and the default grid's estimate), the fit estimate the search
prints, screening by linear probe (no training), a KD step of each recovery kind, and one full
candidate (structure + logits-only KD + full evaluation + fresh-process latency). Then how many
candidates an 8-hour study evaluates at those measured costs. ``--calibration-only`` times what a
search does before it can predict latency (the teacher's latency, calibration with the grid sized
to it, anchoring the table to the machine's speed) without loading the task (minutes for this
model): the teacher is the random model with a 2-class head. ``--night 8h`` measures the count
instead of computing it: ``autocompress search`` on this model under ``--budget 40ms`` for up to
``--piece`` at a time, the same study continued by each run of the command (so a night can be
spread over several sessions, or resume after a crash) until the pieces' measured wall time
reaches the night; each piece's seconds go to ``OUT/night/pieces.json``, and the report counts
the candidates the study holds (screened, full, repeats skipped) against the hours measured.
Every piece pays the search's set-up and the final re-measurement of the front again; only the
last polishes the pick (``--polish 0`` before it), as a night does once at its end. The count is
therefore a lower bound on what one uninterrupted night evaluates.

    python benchmarks/base_size.py [--kd-steps N] [--out runs/base-size] [--calibration-only]
    python benchmarks/base_size.py --night 8h --piece 60m [--out runs/base-size]   # again to continue
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path


def make_model(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    from autocompress import assets

    if (folder / "model.safetensors").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = assets.fetch("minilm-l6", progress=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (tokenizer / name).is_file():
            shutil.copy(tokenizer / name, folder / name)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kd-steps", type=int, default=None,
                        help="KD steps of the full candidate (default: what the allocated space gives its plan, "
                             "300 scaled to about equal recovery time)")
    parser.add_argument("--out", type=Path, default=Path("runs/base-size"))
    parser.add_argument("--calibration-only", action="store_true",
                        help="only the stages before the first prediction: teacher latency, calibration, anchoring")
    parser.add_argument("--night", metavar="HOURS",
                        help="measure what a study of this length evaluates (e.g. 8h), in pieces; run again to continue")
    parser.add_argument("--piece", default="60m", help="the longest piece of --night one run of this command runs")
    parser.add_argument("--report-only", action="store_true", help="with --night: print what the study holds so far")
    args = parser.parse_args()
    if args.calibration_only:
        return calibration_only(args.out)
    if args.night:
        return night(args.out, args.night, args.piece, run=not args.report_only)

    from autocompress.apply import compress
    from autocompress.context import TaskContext
    from autocompress.evaluate import probe_accuracy, task_metrics
    from autocompress.latency import Target
    from autocompress.latency.isolated import measure_isolated, measure_saved
    from autocompress.plan import CompressionPlan, DistillConfig
    from autocompress.search.allocate import Allocation
    from autocompress.search.allocated_space import AllocatedSpace
    from autocompress.search.unit_importance import task_importance
    from autocompress.search.fit import measure as measure_fit
    from autocompress.search.fit import recovery_scale_for, screening_for
    from autocompress.search.spaces import load_space

    times: dict[str, float] = {}

    def stage(name: str, start: float) -> None:
        times[name] = time.perf_counter() - start
        print(f"{name:58s} {times[name]:8.1f} s", flush=True)

    t = time.perf_counter()
    folder = make_model(args.out / "bert-base-random")
    stage("build the random BERT-base folder", t)
    t = time.perf_counter()
    ctx = TaskContext.default(model=str(folder), no_finetune=True)
    stage("load the task (tokenise, the teacher's logits on every split)", t)
    target = Target()
    t = time.perf_counter()
    teacher_ms = measure_isolated(compress(CompressionPlan.keep_all("teacher"), ctx, progress=False), target).p50
    stage(f"teacher latency: {teacher_ms:.1f} ms (torch, b1, seq 128)", t)

    predictor, _, _ = calibrate(ctx.teacher_model(), teacher_ms, target)

    step_s = {}
    for kind, needs in (("logits", False), ("logits+hidden", True)):
        t = time.perf_counter()
        fit = measure_fit(ctx, kd_steps=300 if args.kd_steps is None else args.kd_steps, kd_batch_size=32, screen_steps=0, screen_examples=400,
                          needs_teacher=needs, latency_ms=teacher_ms, seconds=8 * 3600,
                          probe_examples=16 * 64)
        stage(f"fit estimate, {kind} KD: step {fit.step_s:.2f} s (teacher-sized)", t)
        step_s[kind] = fit.step_s
        print(f"   {fit.line()}")
        shipped = load_space("allocated").fidelity
        sized = screening_for(shipped, fit.step_s, fit.forward_s)
        print(f"   the allocated space screens after {shipped.screen_steps} KD steps; on this model the search "
              f"screens " + (f"after {sized.screen_steps} steps" if sized.screen_steps else
                             f"with the untrained linear probe ({sized.screen_score})"))

    t = time.perf_counter()
    importance = task_importance(ctx)
    ctx.importance()
    stage("unit importance (Taylor + layer skip), once per task", t)
    space = AllocatedSpace().prepare(predictor=predictor, importance=importance)
    # what the search's fit estimate does to the space's recovery scale (its kind: logits + hidden)
    space = replace(space, kd_scale=recovery_scale_for(space.kd_scale, space.kd_steps, step_s["logits+hidden"]))
    print(f"   recovery scale on this model: up to x{space.kd_scale:g} the space's {space.kd_steps} KD steps "
          f"(the whole model's recovery ~{space.kd_steps * step_s['logits+hidden']:.0f} s)")
    dims = ctx.dims()
    plans = []
    for frac in (0.25, 0.4, 0.6):
        alloc = Allocation(target=frac, dtype={"attention": "int8", "ffn": "int8"}, depth_bias=1.5)
        plans.append(space.allocate(alloc, "logits", dims, name=f"alloc-{frac}").plan)
    for plan in plans:
        t = time.perf_counter()
        cm = compress(replace(plan, distill=DistillConfig(steps=0)), ctx, progress=False)
        probe = probe_accuracy(cm.model, ctx, 400)
        stage(f"screen {plan.name} (no training, linear probe; {cm.params / 1e6:.0f}M params) acc {probe:.3f}", t)
    steps = plans[0].distill.steps if args.kd_steps is None else args.kd_steps
    print(f"   the allocated space recovers {plans[0].name} for {plans[0].distill.steps} KD steps "
          f"({plans[0].distill.steps / space.kd_steps:.2f}x its {space.kd_steps}; scale up to x{space.kd_scale:g}); "
          f"the full candidate below takes {steps}")
    plan = replace(plans[0], name="full-candidate", distill=replace(space.distill("logits"), steps=steps))
    t = time.perf_counter()
    cm = compress(plan, ctx, progress=False)
    recovery = cm.info["recovery"]["seconds"]
    metrics = task_metrics(cm.model, ctx)
    saved = args.out / "full-candidate"
    cm.save_pretrained(saved)
    stats = measure_saved(saved, target, runs=30)
    stage(f"full candidate: {steps} logits KD steps ({recovery:.0f} s), eval, latency {stats.p50:.1f} ms", t)
    screen = sum(v for k, v in times.items() if k.startswith("screen ")) / len(plans)
    full = times[[k for k in times if k.startswith("full candidate")][0]]
    for rate in (0.5, 0.25):
        n = int(8 * 3600 / ((1 - rate) * screen + rate * (full + screen)))
        print(f"an 8-hour study at these measured costs, {rate:.0%} promoted: ~{n} candidates, ~{int(n * rate)} full")
    print(f"(validation accuracy of the random model's candidate: {metrics['validation_accuracy']:.3f}, meaningless)")


def calibrate(model, teacher_ms: float, target):
    """Calibration as a search runs it: the grid sized to the model and to the tables the default
    space needs (a bf16 table beside the fp32 one where the CPU has bf16 kernels), each table
    rebuilt, never read from the cache, so that it is timed, and anchored; prints each. Returns
    (the target's predictor, seconds calibrating all tables, seconds anchoring them)."""
    from autocompress.compressed import count_params
    from autocompress.latency.features import Grid, calibration_grid, other_precisions
    from autocompress.latency.predictor import anchor, get_predictor
    from autocompress.search.spaces import load_space

    params = count_params(model)
    precisions = load_space("allocated").offered_precisions()
    tables = [target, *(target.with_precision(p) for p in other_precisions(target, precisions))]
    grid = calibration_grid(target, teacher_ms, params, precisions)
    print(f"calibration grid for {len(tables)} table(s) ({', '.join(t.precision for t in tables)}): default "
          f"estimated {Grid().estimated_seconds(teacher_ms, params=params):.0f} s a table; sized "
          f"{grid.estimated_seconds(teacher_ms, params=params):.0f} s a table ({grid.plans}+{grid.structured} plans "
          f"x{grid.torch_scale}, {grid.runs} runs, {grid.passes} pass)", flush=True)
    calibrate_s = anchor_s = 0.0
    predictor = None
    for table_target in tables:
        t = time.perf_counter()
        table = get_predictor(model, table_target, grid=grid, rebuild=True)
        seconds = time.perf_counter() - t
        calibrate_s += seconds
        fit = table.table.get("fit") or {}
        cv = table.table.get("cross_validation") or {}
        print(f"{f'latency calibration, {table_target.precision} table (sized grid)':58s} {seconds:8.1f} s")
        print(f"   fit error {fit.get('mape', float('nan')):.1%} mean relative, worst "
              f"{fit.get('worst', float('nan')):+.1%}; cross-validated {cv.get('mape', float('nan')):.1%}")
        t = time.perf_counter()
        anchor(table, model, table_target, grid=grid)
        anchor_s += time.perf_counter() - t
        predictor = predictor or table
    print(f"{'calibration, all tables':58s} {calibrate_s:8.1f} s (goal: <= 180 s)")
    print(f"{'anchoring each table to the speed now (5 reference plans)':58s} {anchor_s:8.1f} s", flush=True)
    return predictor, calibrate_s, anchor_s


def calibration_only(out: Path) -> None:
    """Teacher latency (in place: nothing trained in this process), calibration with the grid sized
    to it (rebuilt, not read from the cache) and anchoring, each timed, as the search runs them."""
    from transformers import BertForSequenceClassification

    from autocompress.latency import Target
    from autocompress.latency.measure import measure

    start = time.perf_counter()
    model = BertForSequenceClassification.from_pretrained(make_model(out / "bert-base-random"), num_labels=2).eval()
    print(f"{'build and load the random BERT-base':58s} {time.perf_counter() - start:8.1f} s", flush=True)
    target = Target()
    t = time.perf_counter()
    teacher_ms = measure(model, target).p50
    print(f"{f'teacher latency: {teacher_ms:.1f} ms (torch, b1, seq 128)':58s} {time.perf_counter() - t:8.1f} s")
    _, calibrate_s, anchor_s = calibrate(model, teacher_ms, target)
    print(f"before the first prediction: {time.perf_counter() - start:.0f} s in all; calibration and anchoring "
          f"{calibrate_s + anchor_s:.0f} s (goal: calibration <= 180 s)")


def night(out: Path, length: str, piece: str, run: bool = True) -> None:
    """One piece of a measured night: the search continued for min(piece, what the night has left),
    its wall time recorded; then what the study holds against the hours measured."""
    from autocompress.objectives import parse_duration

    model = make_model(out / "bert-base-random")
    folder = out / "night"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "pieces.json"
    pieces = json.loads(log.read_text()) if log.is_file() else []
    left = parse_duration(length) - sum(p["seconds"] for p in pieces)
    if run and left > 60:
        limit = min(parse_duration(piece), left)
        cmd = [sys.executable, "-m", "autocompress.cli", "search", "--model", str(model), "--no-finetune",
               "--budget", "40ms", "--time-limit", f"{limit:.0f}s", "--trials", "100000",
               "--out", str(folder / "search"), "--study-name", "base-size-night"]
        if left - limit > 60:  # a night polishes its pick once, at its end: only the last piece does
            cmd += ["--polish", "0"]
        print("running:", " ".join(cmd[3:]), flush=True)
        start = time.time()
        try:
            rc = subprocess.run(cmd).returncode
        finally:  # a piece stopped by Ctrl-C still counts its wall time
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start))
            pieces.append({"started": started, "limit_s": round(limit), "seconds": round(time.time() - start, 1),
                           **piece_figures(folder / "search" / "study.db", started)})
            log.write_text(json.dumps(pieces, indent=2))
        if rc:
            print(f"the search exited with {rc}", file=sys.stderr)
    night_report(folder, pieces, parse_duration(length))


def piece_figures(db: Path, started: str) -> dict:
    """What a piece's study says of the piece: the teacher's latency measured as it started (the
    machine's speed then; the study's frame is the first piece's) and the seconds before its first
    trial started (set-up: the task, calibration, importance, the fit estimate, Ray)."""
    import sqlite3

    if not db.is_file():
        return {}
    with sqlite3.connect(db) as con:
        ref = con.execute("select value_json from study_user_attributes where key = 'reference'").fetchone()
        first = con.execute("select min(datetime_start) from trials where datetime_start >= ?", (started,)).fetchone()
        ended = con.execute("select value_json from study_user_attributes where key = 'sampling_ended'").fetchone()
    figures = {}
    t0 = time.mktime(time.strptime(started, "%Y-%m-%d %H:%M:%S"))
    if ended and json.loads(ended[0]).get("at", 0) >= t0:  # this piece's, not an earlier one's
        figures["sampling_ended_s_left"] = json.loads(ended[0])["seconds_left"]
    if ref:
        ref = json.loads(ref[0])
        figures.update(teacher_frame_ms=ref.get("p50"), teacher_now_ms=ref.get("now_ms"))
    if first and first[0]:
        figures["setup_s"] = round(time.mktime(time.strptime(first[0][:19], "%Y-%m-%d %H:%M:%S")) - t0)
    return figures


def night_report(folder: Path, pieces: list[dict], length_s: float) -> None:
    for p in pieces:
        print(f"piece {p['started']}: {p['seconds'] / 60:.0f} min (limit {p['limit_s'] / 60:.0f}), set-up before its "
              f"first trial {p.get('setup_s', '?')} s, teacher {p.get('teacher_now_ms', '?')} ms now "
              f"(frame {p.get('teacher_frame_ms', '?')} ms)"
              + (f"; sampling stopped {p['sampling_ended_s_left'] / 60:.1f} min before its end (no full run fitted)"
                 if "sampling_ended_s_left" in p else ""))
    hours = sum(p["seconds"] for p in pieces) / 3600
    print(f"measured: {len(pieces)} piece(s), {hours:.2f} h of the night's {length_s / 3600:g} h "
          f"(each piece pays the search's set-up again)")
    trials = folder / "search" / "trials.csv"
    if not trials.is_file():
        print("the study holds no trial yet")
        return
    with open(trials) as fh:
        rows = list(csv.DictReader(fh))
    done = [r for r in rows if r["state"] == "COMPLETE"]
    full = [r for r in done if r["fidelity"] == "full"]
    warm = [r for r in full if r["warm_start"]]
    repeats = sum(1 for r in rows if r["duplicate_of"])
    print(f"candidates evaluated: {len(done)} ({len(done) - len(full)} screened only, {len(full)} full of which "
          f"{len(warm)} warm starts); {repeats} sampled repeats skipped; {len(rows)} trials in all")
    if hours > 0:
        print(f"per hour measured: {len(done) / hours:.1f} candidates, {len(full) / hours:.1f} full")
    secs = sorted(float(r["seconds"]) for r in full if r["seconds"])
    if secs:
        print(f"seconds per full candidate: median {secs[len(secs) // 2]:.0f} (min {secs[0]:.0f}, max {secs[-1]:.0f})")
    screens = sorted(float(r["seconds"]) for r in done if r["fidelity"] == "screen" and r["seconds"])
    if screens:
        late = sum(1 for r in done if "after the time limit" in r["promotion"])
        print(f"seconds per screen: median {screens[len(screens) // 2]:.1f}; {late} screened only because "
              f"their full run would have ended after a piece's time limit")
    rss = [(int(r["number"]), float(r["worker_rss_mb"]), float(r["worker_peak_rss_mb"]))
           for r in done if r.get("worker_rss_mb")]
    if rss:
        print("worker memory after each trial (number: resident / peak MB): "
              + ", ".join(f"{n}: {a:.0f}/{b:.0f}" for n, a, b in rss))


if __name__ == "__main__":
    main()
