"""Which int8 path is fastest on OpenVINO, and what does it cost in accuracy? (default task:
minilm-l6 on rotten-tomatoes; batch 1, sequence 128, all cores)

The teacher exported to ONNX, then on OpenVINO:

- ``fp32``: as ``--runtime openvino`` times a plan with fp32 linears;
- ``ORT-style dynamic int8``: the ONNX file ONNX Runtime's ``quantize_dynamic`` writes
  (``DynamicQuantizeLinear`` + ``MatMulInteger``), read by OpenVINO as it is;
- ``NNCF weights int8``: ``nncf.compress_weights`` (int8 weights, asymmetric, per channel; data-free;
  activations stay fp32);
- ``NNCF static int8``: ``nncf.quantize`` with ``model_type=TRANSFORMER`` and ``--calibration``
  training examples of the task (weights and activations int8);

and, for comparison, the one-line ONNX Runtime int8 of the same export on ONNX Runtime. Each is
timed in a fresh process under the measurement protocol, ``--rounds`` rounds with the models
interleaved (figures compare only side by side); accuracy (validation / test) is computed by the
runtime itself, sequences padded to the batch's longest as in serving.

    python benchmarks/openvino_int8.py --rounds 3 --out runs/openvino-int8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys
from autocompress.latency import Target
path, target = sys.argv[1], Target(**json.loads(sys.argv[2]))
if path.endswith(".onnx") and sys.argv[3] == "onnxruntime":
    from autocompress.latency.onnx import onnx_session, measure_onnx
    stats = measure_onnx(onnx_session(path, target.threads), target, runs=50)
else:
    from autocompress.latency.runtime_openvino import OpenVINOSession, compile_model
    stats = OpenVINOSession(compile_model(path, target), target, None, 30522).time(runs=50)
print(json.dumps(stats.to_dict()))
"""


def time_child(path: Path, runtime: str, target) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), json.dumps(target.to_dict()), runtime],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def accuracy(run, ctx) -> dict:
    """Validation and test accuracy of ``run(input_ids, attention_mask) -> logits`` (numpy)."""
    from autocompress import training

    out = {}
    for split in ("validation", "test"):
        hits = total = 0
        for batch in training.iterate(ctx.data[split], 64, pad_id=ctx.pad_id):
            logits = run(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
            hits += int((logits.argmax(-1) == batch["labels"].numpy()).sum())
            total += len(batch["labels"])
        out["test" if split == "test" else "validation"] = round(hits / total, 4)
    return out


def ov_runner(path: Path, threads: int):
    import openvino as ov

    from autocompress.latency.runtime_openvino import PRECISION

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, **PRECISION})
    request = compiled.create_infer_request()
    return lambda ids, mask: next(iter(request.infer({"input_ids": ids, "attention_mask": mask}).values()))


def calibration_items(ctx, examples: int) -> list[dict]:
    from autocompress import training

    items = []
    for batch in training.iterate(ctx.data["train"].select(range(examples)), 1, pad_id=ctx.pad_id):
        items.append({"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()})
    return items


def build(ctx, files: Path, calibration: int) -> dict[str, tuple[Path, str, float]]:
    """name -> (model file, runtime, seconds it took to make)."""
    import time

    import nncf
    import openvino as ov
    from onnxruntime.quantization import quantize_dynamic

    from autocompress.latency.onnx import export_onnx

    files.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    fp32 = export_onnx(ctx.teacher_model(), files / "teacher.onnx")
    out = {"OpenVINO fp32": (fp32, "openvino", time.perf_counter() - start)}
    start = time.perf_counter()
    dynamic = files / "teacher-ort-int8.onnx"
    quantize_dynamic(str(fp32), str(dynamic))
    seconds = time.perf_counter() - start
    out["OpenVINO reading ORT-style dynamic int8"] = (dynamic, "openvino", seconds)
    out["ONNX Runtime one-line int8 (peer)"] = (dynamic, "onnxruntime", seconds)
    start = time.perf_counter()
    weights = nncf.compress_weights(ov.Core().read_model(str(fp32)), mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(weights, str(files / "teacher-nncf-weights.xml"), compress_to_fp16=False)
    out["OpenVINO NNCF weights int8"] = (files / "teacher-nncf-weights.xml", "openvino", time.perf_counter() - start)
    start = time.perf_counter()
    items = calibration_items(ctx, calibration)
    static = nncf.quantize(ov.Core().read_model(str(fp32)), nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                           subset_size=len(items))
    ov.save_model(static, str(files / "teacher-nncf-static.xml"), compress_to_fp16=False)
    out["OpenVINO NNCF static int8"] = (files / "teacher-nncf-static.xml", "openvino", time.perf_counter() - start)
    return out


def shipped_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_suffix(".bin")) if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=300, help="training examples for NNCF's static int8")
    parser.add_argument("--out", default="runs/openvino-int8")
    args = parser.parse_args()
    from autocompress.context import TaskContext
    from autocompress.latency import Target
    from autocompress.latency.onnx import onnx_session, run_onnx

    out = Path(args.out)
    ctx = TaskContext.default()
    models = build(ctx, out / "files", args.calibration)
    target = Target()
    rows = {}
    for name, (path, runtime, seconds) in models.items():
        run = (lambda s: (lambda ids, mask: run_onnx(s, ids, mask)))(onnx_session(path, target.threads)) \
            if runtime == "onnxruntime" else ov_runner(path, target.threads)
        rows[name] = {"path": str(path), "runtime": runtime, "make_seconds": round(seconds, 1),
                      "mb": round(shipped_bytes(path) / 1e6, 1), **accuracy(run, ctx), "p50": [], "p90": []}
        print(f"built {name}: {rows[name]}", file=sys.stderr, flush=True)
    for r in range(args.rounds):
        for name, row in rows.items():
            stats = time_child(Path(row["path"]), row["runtime"], target)
            row["p50"].append(stats["p50"])
            row["p90"].append(stats["p90"])
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    (out / "openvino_int8.json").write_text(json.dumps(rows, indent=2))
    print(f"{target.threads} threads, batch {target.batch_size}, seq {target.seq_len}; {args.rounds} rounds, models interleaved; "
          f"NNCF static int8 calibrated on {args.calibration} training examples")
    print("| runtime | model | p50 ms (median of rounds) | rounds | p90 ms | MB shipped | val / test | seconds to make |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {row['runtime']} | {name} | {statistics.median(row['p50']):.2f} | "
              f"{', '.join(f'{v:.2f}' for v in row['p50'])} | {statistics.median(row['p90']):.2f} | {row['mb']:.1f} | "
              f"{row['validation']:.4f} / {row['test']:.4f} | {row['make_seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
