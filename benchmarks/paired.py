"""Which accuracy differences of the planner benchmark are real? A paired test per comparison.

Two models scored on the same examples differ by the examples one gets right and the other does
not; whether that difference is chance is McNemar's exact test on those discordant examples (a
two-sided binomial test at 1/2), far tighter than comparing two accuracies' standard errors when
the models agree on most examples. This script predicts every model of a ``benchmarks/planner.py``
folder's side by side (``side_by_side.json``: the references and the timed search fronts) on the
validation and test splits, checks each against the accuracies recorded when it was built, and
for every reference prints the front member that a dominance claim rests on (the most accurate on
validation whose fastest side-by-side round is no slower than the reference's fastest round, and
the fastest member as accurate on validation), with the discordant counts and p-values.
Torch models only (the fronts and references of ``--runtime``, predicted with torch). The members
were picked on validation, so their validation p-values lean their way; the test ones do not; no
correction is made for the many pairs.
Predictions are kept in ``OUT/predictions/`` (one file per model), so a second run only prints.

    python benchmarks/paired.py --out runs/planner26 --runtime torch
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner import folder_name  # noqa: E402

SPLITS = ("validation", "test")


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: ``only_a`` examples right by A alone, ``only_b`` by B alone."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def predictions(ctx, model) -> dict[str, list[int]]:
    """``model``'s predicted class on every example of each split, in the split's order."""
    from autocompress import training

    out = {}
    for split in SPLITS:
        logits, labels = training.predict(model, training.iterate(ctx.data[split], 64, pad_id=ctx.pad_id,
                                                                  with_index=True))
        out[split] = logits.argmax(-1).tolist()
        out[f"{split}_labels"] = labels.tolist()
    return out


def model_folders(out: Path, rows: list[dict], runtime: str) -> dict[str, Path | str]:
    """Each side-by-side label's saved model folder (``"one-line int8"``: torch's one-line int8
    of the teacher, made here)."""
    folders: dict[str, Path | str] = {}
    members = {}
    for search in (out / "searches").glob(f"{runtime}-*"):
        if (search / "pareto.json").is_file():
            for m in json.loads((search / "pareto.json").read_text())["members"]:
                if m.get("model_dir"):
                    folder = Path(m["model_dir"])  # absolute where the search ran; else under the search
                    members[f"{search.name} #{m['number']}"] = folder if folder.is_dir() else \
                        search / "models" / folder.name
    for r in rows:
        label = r["label"]
        if " #" in label:
            folders[label] = members[label.split(" (")[0].split(" polished")[0]]
        elif label.startswith("one-line int8"):
            folders[label] = "one-line int8"
        else:
            folders[label] = out / "reference-models" / folder_name(label)
    return folders


def load_predictions(out: Path, rows: list[dict], runtime: str) -> dict[str, dict[str, list[int]]]:
    import copy

    import torch

    from autocompress.compressed import load
    from autocompress.context import TaskContext

    cache = out / "predictions"
    cache.mkdir(exist_ok=True)
    ctx = None
    found = {}
    for label, folder in model_folders(out, rows, runtime).items():
        path = cache / f"{runtime}-{folder_name(label).replace('/', '_').replace('#', 'n')}.json"
        if not path.is_file() or json.loads(path.read_text()).get("folder") != str(folder):
            ctx = ctx or TaskContext.default()
            if folder == "one-line int8":
                model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(ctx.teacher_model()), {torch.nn.Linear},
                                                               dtype=torch.qint8)
            elif label == "teacher":
                model = ctx.teacher_model()
            else:
                model = load(folder).model
            print(f"[paired] predicting {label}", file=sys.stderr, flush=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"folder": str(folder), **predictions(ctx, model)}))
            tmp.replace(path)  # a run stopped here leaves no half-written file
        found[label] = json.loads(path.read_text())
    return found


def paired(truth: list[int], a: list[int], b: list[int]) -> tuple[float, int, int, float]:
    """(A's accuracy - B's in points, right by A alone, right by B alone, McNemar p)."""
    only_a = sum(1 for t, x, y in zip(truth, a, b) if x == t != y)
    only_b = sum(1 for t, x, y in zip(truth, a, b) if y == t != x)
    return 100 * (only_a - only_b) / len(truth), only_a, only_b, mcnemar_p(only_a, only_b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/planner")
    parser.add_argument("--runtime", default="torch")
    args = parser.parse_args()
    out = Path(args.out)
    rows = json.loads((out / "side_by_side.json").read_text())[args.runtime]
    preds = load_predictions(out, rows, args.runtime)
    truth = {s: next(iter(preds.values()))[f"{s}_labels"] for s in SPLITS}
    assert all(p[f"{s}_labels"] == truth[s] for p in preds.values() for s in SPLITS), "models scored on other data"
    acc = {label: {s: sum(p == t for p, t in zip(preds[label][s], truth[s])) / len(truth[s]) for s in SPLITS}
           for label in preds}
    print(f"=== {args.runtime}: accuracies recomputed from predictions against those recorded ===")
    off = [(r["label"], acc[r["label"]]["validation"], r["validation_accuracy"], acc[r["label"]]["test"], r["accuracy"])
           for r in rows if abs(acc[r["label"]]["validation"] - r["validation_accuracy"]) > 6e-5
           or abs(acc[r["label"]]["test"] - r["accuracy"]) > 6e-5]
    print(f"  {len(rows) - len(off)} of {len(rows)} agree to the 4th digit" + ("; these do not:" if off else ""))
    for label, v, rv, t, rt in off:
        print(f"    {label}: validation {v:.4f} (recorded {rv:.4f}), test {t:.4f} (recorded {rt:.4f})")
    fastest = {r["label"]: min(r["p50_rounds"]) for r in rows}
    ours = [r["label"] for r in rows if " #" in r["label"]]
    print(f"\n=== {args.runtime}: each reference against the front (fastest side-by-side round; "
          "points A - reference; A alone / reference alone right; McNemar p) ===")
    for r in sorted(rows, key=lambda r: fastest[r["label"]]):
        ref = r["label"]
        if " #" in ref or ref == "teacher":
            continue
        as_fast = [m for m in ours if fastest[m] <= fastest[ref]]
        as_good = [m for m in ours if acc[m]["validation"] >= acc[ref]["validation"]]
        picks = {"most accurate as fast": max(as_fast, key=lambda m: (acc[m]["validation"], -fastest[m]), default=None),
                 "fastest as accurate": min(as_good, key=lambda m: fastest[m], default=None)}
        print(f"  {ref}: {acc[ref]['validation']:.4f} / {acc[ref]['test']:.4f} at {fastest[ref]:.2f} ms")
        for why, m in picks.items():
            if m is None:
                print(f"    {why}: none")
                continue
            cells = []
            for s in SPLITS:
                d, a, b, p = paired(truth[s], preds[m][s], preds[ref][s])
                cells.append(f"{s} {d:+.2f} ({a}/{b}, p={p:.2f})")
            print(f"    {why}: {m} at {fastest[m]:.2f} ms: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
