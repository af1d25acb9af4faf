"""Metrics of a compressed model on the task and the target.

- ``accuracy``: on the test split (``validation_accuracy`` too: search selects on validation);
- ``fidelity``: share of test predictions that agree with the teacher's;
- ``params``, ``size_mb`` (serialised weights as they run: int8 linears packed; a search's full
  candidates give the exported artefact on the target instead, :func:`size_figures`), ``gflops``
  (per example at the target sequence length, counted by ``torch.utils.flop_counter``);
- ``latency``: p50/p90/spread in ms on the target (see :mod:`autocompress.latency`), taken in a
  fresh process that loads the model (:mod:`autocompress.latency.isolated`): a process that has
  just trained it runs inference slower than the one that will serve it.
"""

from __future__ import annotations

import torch

from . import training
from .compressed import CompressedModel
from .context import TaskContext
from .latency import Target


def flops_per_example(model: torch.nn.Module, seq_len: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    inputs = {"input_ids": torch.full((1, seq_len), 5, dtype=torch.long),
              "attention_mask": torch.ones(1, seq_len, dtype=torch.long)}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(**inputs)
    return int(counter.get_total_flops())


def task_metrics(model: torch.nn.Module, ctx: TaskContext, splits=("validation", "test"), *,
                 logits_fn=None) -> dict:
    """The task's score (``accuracy``) and agreement with the teacher (``fidelity``) on each split.
    ``logits_fn(input_ids, attention_mask)``: computes the logits instead of ``model`` (a model
    as another runtime runs it: :func:`candidate_metrics`)."""
    out = {}
    task = ctx.task_type
    teacher = ctx.teacher_logits()
    for split in splits:
        batches = training.iterate(ctx.data[split], 64, pad_id=ctx.pad_id, with_index=True)
        if logits_fn is None:
            logits, labels = training.predict(model, batches)
        else:
            logits, labels = _runtime_predict(logits_fn, batches)
        prefix = "" if split == "test" else f"{split}_"
        out[f"{prefix}accuracy"] = round(task.score(logits, labels), 4)
        out[f"{prefix}fidelity"] = round(task.agreement(logits, teacher[split]), 4)
    return out


def _runtime_predict(logits_fn, batches) -> tuple[torch.Tensor, torch.Tensor]:
    logits, labels, index = [], [], []
    for b in batches:
        logits.append(torch.as_tensor(logits_fn(b["input_ids"].numpy(), b["attention_mask"].numpy())).float())
        labels.append(b["labels"])
        index.append(b["index"])
    order = torch.argsort(torch.cat(index))
    return torch.cat(logits)[order], torch.cat(labels)[order]


def candidate_metrics(cm: CompressedModel, ctx: TaskContext, target: Target, folder=None) -> dict:
    """:func:`task_metrics` of ``cm`` as it runs on ``target``: torch's where the runtime computes
    what torch computes; on the runtime itself where it does not (OpenVINO's static int8: its IR,
    calibrated on the task's training examples, is written into the model folder ``folder`` when
    one is given, and timing that folder later times that IR). ``score_source`` says which."""
    import tempfile

    from .latency.runtime import get_runtime

    kind = get_runtime(target.runtime)

    def calibration() -> list[dict]:
        return [{"input_ids": b["input_ids"].numpy(), "attention_mask": b["attention_mask"].numpy()}
                for b in ctx.calibration_batches(n=2, batch_size=32)]

    with tempfile.TemporaryDirectory(prefix="autocompress-score-") as tmp:
        logits_fn = kind.scorer(cm, folder if folder is not None else tmp, calibration, threads=target.threads)
        if logits_fn is None:
            return {**task_metrics(cm.model, ctx), "score_source": "torch"}
        return {**task_metrics(cm.model, ctx, logits_fn=logits_fn), "score_source": target.runtime}


def _probe_features(model: torch.nn.Module, batches, pool: str = "first") -> torch.Tensor:
    """The last hidden state of the first token (``pool="first"``) or the mean over non-padding
    tokens (``"mean"``), with a constant 1 appended, in float64."""
    out = []
    with torch.no_grad():
        for b in batches:
            inputs = {k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            h = model(**inputs, output_hidden_states=True).hidden_states[-1]
            if pool == "mean":
                mask = b["attention_mask"].unsqueeze(-1).to(h.dtype)
                out.append((h * mask).sum(1) / mask.sum(1))
            else:
                out.append(h[:, 0])
    z = torch.cat(out).double()
    return torch.cat([z, z.new_ones(z.shape[0], 1)], dim=1)


def probe_accuracy(model: torch.nn.Module, ctx: TaskContext, examples: int, *, damp: float = 0.01,
                   pool: str = "first") -> float:
    """Screening without training: a linear probe of the encoder's last hidden state (first token)
    fitted by ridge least squares to the teacher's logits on ``ctx.probe_set()`` (training
    examples), then its accuracy on the first ``examples`` validation examples. It measures what
    the compressed encoder still represents whatever its classifier head has become (dropping
    layers leaves the head reading states it was never trained on)."""
    probe, targets = ctx.probe_set()
    z = _probe_features(model, probe, pool)
    gram = z.T @ z
    gram.diagonal()[:-1] += damp * gram.diagonal()[:-1].mean().clamp_min(1e-12)
    weights = torch.linalg.solve(gram, z.T @ torch.cat(targets).double())
    data = ctx.data["validation"]
    subset = list(training.iterate(data.select(range(min(examples, len(data)))), 64, pad_id=ctx.pad_id))
    predicted = (_probe_features(model, subset, pool) @ weights).argmax(-1)
    labels = torch.cat([b["labels"] for b in subset])
    return float((predicted == labels).float().mean())


def size_figures(cm: CompressedModel, stats=None, runtime: str | None = None) -> dict:
    """``size_mb``: the bytes a user ships for the target runtime when the timing process reported
    them (``stats.artefact_bytes``: the exported ONNX file on ONNX Runtime and OpenVINO, the weights
    as they run on torch), else the weights as they run; ``size_source`` says which
    (``artefact:<runtime>`` or ``weights``); ``weights_mb``: the weights as they run, always."""
    weights = round(cm.size_bytes() / 1e6, 3)
    shipped = getattr(stats, "artefact_bytes", None)
    if shipped is None:
        return {"size_mb": weights, "weights_mb": weights, "size_source": "weights"}
    return {"size_mb": round(shipped / 1e6, 3), "weights_mb": weights,
            "size_source": f"artefact:{runtime}" if runtime else "artefact"}


def evaluate(cm: CompressedModel, ctx: TaskContext, target: Target = Target(), *, latency: bool = True,
             runs: int = 30) -> dict:
    metrics = candidate_metrics(cm, ctx, target)
    metrics.update({
        "params": cm.params,
        "size_mb": round(cm.size_bytes() / 1e6, 3),
        "gflops": round(flops_per_example(cm.fp32_model(), target.seq_len) / 1e9, 4),
    })
    if latency:
        from .latency.isolated import measure_isolated

        metrics["latency"] = {**measure_isolated(cm, target, runs=runs).to_dict(), "target": target.to_dict()}
    return metrics
