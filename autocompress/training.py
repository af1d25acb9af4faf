"""The one training loop and the one prediction loop, shared by teacher fine-tuning and KD recovery.

Batches are padded dynamically and grouped by length (shuffled groups of similar-length
examples), which on a CPU roughly halves the padding compared with random batches.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Generator, Iterable, Iterator

import numpy as np
import torch

from .progress import progress_bar

Batch = dict[str, torch.Tensor]


def collate(examples: list[dict], pad_id: int) -> Batch:
    """Pad a list of tokenised examples (lists of ints) into one batch of tensors."""
    width = max(len(e["input_ids"]) for e in examples)
    out: Batch = {}
    for key in examples[0]:
        if key == "labels":
            out[key] = torch.tensor([e[key] for e in examples], dtype=torch.long)
        elif key == "index":
            out[key] = torch.tensor([e[key] for e in examples], dtype=torch.long)
        else:
            fill = pad_id if key == "input_ids" else 0
            rows = [list(e[key]) + [fill] * (width - len(e[key])) for e in examples]
            out[key] = torch.tensor(rows, dtype=torch.long)
    return out


def iterate(dataset, batch_size: int, *, pad_id: int, shuffle: bool = False, seed: int = 0,
            group_by_length: bool = True, with_index: bool = False) -> Iterator[Batch]:
    """Yield padded batches from a tokenised ``datasets.Dataset`` (or list of dicts).

    ``with_index`` adds each example's row index as ``batch["index"]`` (used to look up cached
    teacher outputs).
    """
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    if with_index:
        rows = [{**r, "index": i} for i, r in enumerate(rows)]
    order = np.arange(len(rows))
    rng = np.random.default_rng(seed)
    if shuffle:
        rng.shuffle(order)
    if group_by_length:
        lengths = np.array([len(r["input_ids"]) for r in rows])
        mega = batch_size * 50
        order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, math.ceil(len(order) / mega)))])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    for idx in batches:
        yield collate([rows[i] for i in idx], pad_id)


def model_inputs(batch: Batch) -> Batch:
    """The keys a HF model's forward takes (drops ``labels`` and ``index``)."""
    return {k: v for k, v in batch.items() if k not in ("labels", "index")}


@torch.no_grad()
def predict(model: torch.nn.Module, batches: Iterable[Batch], *, progress: bool = False,
            desc: str = "predict", total: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels for all batches, in order (``index`` order if the batches carry one)."""
    model.eval()
    logits, labels, index = [], [], []
    for batch in progress_bar(batches, desc=desc, enabled=progress, total=total, unit="batch"):
        out = model(**model_inputs(batch))
        logits.append(out.logits.float())
        labels.append(batch["labels"])
        if "index" in batch:
            index.append(batch["index"])
    logits_t, labels_t = torch.cat(logits), torch.cat(labels)
    if index:
        order = torch.argsort(torch.cat(index))
        logits_t, labels_t = logits_t[order], labels_t[order]
    return logits_t, labels_t


def fit(model: torch.nn.Module, batches: Callable[[int], Iterable[Batch]], *, steps: int, lr: float,
        loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor] | None = None, warmup: float = 0.06,
        weight_decay: float = 0.01, extra_params: Iterable[torch.nn.Parameter] = (), progress: bool = True,
        desc: str = "train", after_step: Callable[[], None] | None = None) -> dict:
    """Train ``model`` for ``steps`` optimiser steps with AdamW and linear warm-up/decay.

    ``batches(epoch)`` yields the batches of one pass; passes repeat until ``steps`` are done.
    ``loss_fn(model, batch)`` defaults to the model's own loss; ``after_step()`` runs after every
    optimiser step (e.g. to re-apply sparsity masks). Raises ``FloatingPointError`` on a
    non-finite loss. Returns ``{"steps", "seconds", "final_loss"}``.
    """
    return run_to_end(fit_stages(model, batches, steps=steps, lr=lr, loss_fn=loss_fn, warmup=warmup,
                                 weight_decay=weight_decay, extra_params=extra_params, progress=progress, desc=desc,
                                 after_step=after_step))


def run_to_end(stages: Generator):
    """Drive a staged run (:func:`fit_stages` and the like) through every pause; return its result."""
    while True:
        try:
            next(stages)
        except StopIteration as done:
            return done.value


def fit_stages(model: torch.nn.Module, batches: Callable[[int], Iterable[Batch]], *, steps: int, lr: float,
               loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor] | None = None, warmup: float = 0.06,
               weight_decay: float = 0.01, extra_params: Iterable[torch.nn.Parameter] = (), progress: bool = True,
               desc: str = "train", after_step: Callable[[], None] | None = None,
               pause_at: Iterable[int] = ()) -> Generator[int, None, dict]:
    """:func:`fit` as a generator that pauses before training step ``s`` for each ``s`` in
    ``pause_at`` (``0 <= s < steps``): it yields ``s`` (the model is in eval mode while paused) and,
    asked for the next value, resumes the same run — same optimiser state, schedule and data order.
    Training to step 300 with a pause at 40 therefore gives the same model as training straight.
    Returns :func:`fit`'s summary (time spent paused is not counted)."""
    pauses = sorted(s for s in set(pause_at) if 0 <= s < steps)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warm = max(1, int(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    loss_fn = loss_fn or (lambda m, b: m(**model_inputs(b), labels=b["labels"]).loss)
    model.train()
    start, step, epoch, ema, paused = time.perf_counter(), 0, 0, None, 0.0
    bar = progress_bar(total=steps, desc=desc, enabled=progress)
    try:
        while step < steps:
            for batch in batches(epoch):
                if pauses and step == pauses[0]:
                    pauses.pop(0)
                    model.eval()
                    left = time.perf_counter()
                    yield step
                    paused += time.perf_counter() - left
                    model.train()
                loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if after_step is not None:
                    after_step()
                step += 1
                ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.3f}")
                if step >= steps:
                    break
            epoch += 1
    finally:
        bar.close()
    model.eval()
    return {"steps": step, "seconds": round(time.perf_counter() - start - paused, 2), "final_loss": ema}

