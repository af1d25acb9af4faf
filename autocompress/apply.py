"""Build a compressed model from a plan: structure → KD recovery → quantization."""

from __future__ import annotations

import copy
import time
from typing import Iterator

import torch

from .arch import get_adapter
from .compressed import CompressedModel, count_params
from .context import TaskContext
from .plan import CompressionPlan
from .transform import apply_structure_, finalize_
from .techniques.distill import DistillInputs, distill_stages, reads_cached_hidden


def compress(plan: CompressionPlan, ctx: TaskContext, *, progress: bool = True,
             importance: str = "taylor") -> CompressedModel:
    """Apply ``plan`` to a copy of the context's teacher.

    Order: importance scores on calibration batches (the teacher's, computed once per context),
    structural changes (heads, FFN — refitted by least squares when ``plan.reconstruct`` —, layers,
    low-rank, sparsity), knowledge-distillation recovery against the teacher's cached logits,
    then dynamic int8 quantization of the selected linears and of the embeddings when the plan
    says so (:func:`~autocompress.transform.finalize_`; quantized modules cannot train).
    """
    return list(compress_stages(plan, ctx, progress=progress, importance=importance))[-1]


def compress_stages(plan: CompressionPlan, ctx: TaskContext, *, pause_at: tuple[int, ...] = (),
                    progress: bool = True, importance: str = "taylor") -> Iterator[CompressedModel]:
    """:func:`compress` in stages: yields a snapshot (a quantized copy, ``info["final"]`` false)
    after each KD step in ``pause_at`` that is below ``plan.distill.steps``, then the finished
    model. Asking for the next stage resumes the same recovery run, so the finished model is the
    one :func:`compress` builds; stopping early (closing the iterator) skips the rest. The search
    screens candidates on the first snapshot and finishes only those it promotes."""
    start = time.perf_counter()
    student = ctx.fresh_student()
    adapter = get_adapter(student)
    teacher_layers = adapter.num_layers(student)
    resolved = plan.resolve(teacher_layers, adapter.num_heads(student), adapter.intermediate_size(student),
                            adapter.hidden_size(student))
    taylor = importance == "taylor"
    apply_structure_(student, resolved, batches=ctx.calibration_batches() if taylor else None,
                     importance=importance, scores=ctx.importance() if taylor else None,
                     grams=ctx.input_grams() if plan.reconstruct else None)
    for technique in plan.techniques_at("structure"):  # e.g. vocabulary trimming: trained and saved as it is
        technique.prepare_(student, ctx)
    structure_s = time.perf_counter() - start
    weights = plan.distill.weights
    needs_teacher = weights.get("hidden", 0) > 0 or weights.get("attention", 0) > 0
    cached = ctx.teacher_hidden() if reads_cached_hidden(plan.distill) else None
    run = distill_stages(student, DistillInputs(
        train=ctx.data["train"], teacher_logits=ctx.teacher_logits()["train"], pad_id=ctx.pad_id,
        teacher=ctx.teacher_model() if needs_teacher and cached is None else None, teacher_layers=teacher_layers,
        teacher_hidden=cached, task=ctx.task_type), plan.distill, seed=ctx.seed, progress=progress, pause_at=pause_at)

    def finish(model: torch.nn.Module, recovery: dict, final: bool) -> CompressedModel:
        fp32_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        params = count_params(model)
        finalize_(model, plan, resolved)
        return CompressedModel(
            model=model, plan=plan, resolved=resolved, fp32_state=fp32_state,
            base_config=ctx.teacher_model().config.to_dict(), tokenizer=ctx.tokenizer, params=params,
            info={"task": ctx.spec, "teacher": str(ctx.teacher.path), "dataset": ctx.task.name,
                  "data_fingerprint": ctx.task.fingerprint, "structure_seconds": round(structure_s, 2),
                  "recovery": recovery, "final": final, "build_seconds": round(time.perf_counter() - start, 2)},
            task=ctx.task_type.name)

    while True:
        begin = time.perf_counter()
        try:
            step = next(run)
        except StopIteration as done:
            yield finish(student, done.value, True)
            return
        snapshot = copy.deepcopy(student)
        if weights.get("attention", 0) > 0:  # recovery runs eager attention; serve as the finished model does
            snapshot.set_attn_implementation("sdpa")
        yield finish(snapshot, {"steps": step, "of": plan.distill.steps,
                                "seconds": round(time.perf_counter() - begin, 2)}, False)
