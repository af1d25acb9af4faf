"""What does vocabulary trimming cost and save? (default task: minilm-l6 on rotten-tomatoes)

The teacher and the quantize-only plan (every linear int8, int8 embeddings), each with and without
``vocabulary: {keep: train}``, none recovered: validation and test accuracy, the weights as torch
runs them (``torch.save`` of the state dict) and the ONNX file. Accuracy is deterministic; no
timing (trimming adds one ``Gather``; see benchmarks/runtimes.py for latency).

    python benchmarks/vocabulary.py
"""
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from autocompress.apply import compress
from autocompress.context import TaskContext
from autocompress.evaluate import task_metrics
from autocompress.latency.onnx import build_onnx
from autocompress.plan import CompressionPlan
from autocompress.techniques import Embeddings, Vocabulary

ctx = TaskContext.default()
int8 = CompressionPlan.load(Path(__file__).resolve().parent.parent / "examples" / "plans" / "minilm-int8-all.yaml")
int8_nokd = replace(int8, distill=replace(int8.distill, steps=0))
plans = {
    "teacher": CompressionPlan.keep_all("teacher"),
    "teacher + trim": CompressionPlan.keep_all("teacher").with_techniques(Vocabulary("train")),
    "int8 linears + int8 emb": int8_nokd.with_techniques(Embeddings("int8")),
    "int8 linears + int8 emb + trim": int8_nokd.with_techniques(Embeddings("int8"), Vocabulary("train")),
}
with tempfile.TemporaryDirectory() as folder:
    tmp = Path(folder)
    for name, plan in plans.items():
        cm = compress(plan, ctx, progress=False)
        m = task_metrics(cm.model, ctx)
        onnx = build_onnx(cm.fp32_model(), tmp / f"{plan.name}-{len(name)}.onnx", resolved=cm.resolved, plan=plan)
        print(json.dumps({"model": name, "val": round(m["validation_accuracy"], 4), "test": round(m["accuracy"], 4),
                          "torch_MB": round(cm.size_bytes() / 1e6, 2), "onnx_MB": round(onnx.stat().st_size / 1e6, 2),
                          "kd_steps": plan.distill.steps}), flush=True)
