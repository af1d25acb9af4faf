"""Build a compressed model from a plan: structure → KD recovery → quantization."""

from __future__ import annotations

import time

from .arch import get_adapter
from .compressed import CompressedModel, count_params
from .context import TaskContext
from .plan import CompressionPlan
from .techniques import apply_structure_, quantize_config, quantize_dynamic_
from .techniques.distill import DistillInputs, distill_


def compress(plan: CompressionPlan, ctx: TaskContext, *, progress: bool = True,
             importance: str = "taylor") -> CompressedModel:
    """Apply ``plan`` to a copy of the context's teacher.

    Order: importance scores on calibration batches, structural changes (heads, FFN, layers,
    low-rank, sparsity), knowledge-distillation recovery against the teacher's cached logits,
    then dynamic int8 quantization of the selected linears (quantized linears cannot train).
    """
    start = time.perf_counter()
    student = ctx.fresh_student()
    adapter = get_adapter(student)
    teacher_layers = adapter.num_layers(student)
    resolved = plan.resolve(teacher_layers, adapter.num_heads(student), adapter.intermediate_size(student),
                            adapter.hidden_size(student))
    apply_structure_(student, resolved, batches=ctx.calibration_batches() if importance == "taylor" else None,
                     importance=importance)
    structure_s = time.perf_counter() - start
    weights = plan.distill.weights
    needs_teacher = weights.get("hidden", 0) > 0 or weights.get("attention", 0) > 0
    recovery = distill_(student, DistillInputs(
        train=ctx.data["train"], teacher_logits=ctx.teacher_logits()["train"], pad_id=ctx.pad_id,
        teacher=ctx.teacher_model() if needs_teacher else None, teacher_layers=teacher_layers),
        plan.distill, seed=ctx.seed, progress=progress)
    fp32_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    params = count_params(student)
    quantize_dynamic_(student, quantize_config(resolved))
    return CompressedModel(
        model=student, plan=plan, resolved=resolved, fp32_state=fp32_state,
        base_config=ctx.teacher_model().config.to_dict(), tokenizer=ctx.tokenizer, params=params,
        info={"task": ctx.spec, "teacher": str(ctx.teacher.path), "dataset": ctx.task.name, "data_fingerprint": ctx.task.fingerprint,
              "structure_seconds": round(structure_s, 2), "recovery": recovery,
              "build_seconds": round(time.perf_counter() - start, 2)})
