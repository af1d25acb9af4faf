"""Knowledge-distillation recovery: a short fine-tuning of the compressed student against the teacher.

Losses (weighted by :class:`~autocompress.plan.DistillConfig.weights`):

- ``logits``: the task's distillation loss (:meth:`~autocompress.tasks.Task.distill_loss`; for
  classification KL(teacher ‖ student) on temperature-softened distributions, × T², Hinton et al.).
  Reads the teacher's **cached** logits by example index — the teacher is not run.
- ``hidden``: MSE between student layer outputs and the mapped teacher layer outputs (padding
  masked), through an identity or a learned (identity-initialised) projection.
- ``attention``: MSE between head-averaged attention maps of mapped layers (averaged over heads
  so that students with pruned heads compare with the full teacher).

The hidden and attention losses need the teacher's inner states. Hidden states are cached once per
task when they fit in :data:`HIDDEN_CACHE_BYTES` (:func:`teacher_hidden_states`: every training
example's layer outputs, unpadded, in fp16; rotten-tomatoes on MiniLM: ~1 GB), so the teacher does
not run during recovery; otherwise, and always for the attention loss, the teacher runs alongside
the student (no grad), about a third more time per step.

Quantization is applied after recovery; sparsity masks are kept during it (zeroed weights stay
zero: masks are re-applied after every step).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from autocompress import training
from autocompress.arch import get_adapter
from autocompress.errors import UserError
from autocompress.tasks import Task, get_task
from autocompress.techniques.base import check_keys, is_int, is_number, maybe_float, section

DISTILL_WEIGHTS = ("logits", "hidden", "attention")
HIDDEN_PROJECTIONS = ("identity", "learned")
#: Precisions a recovery's forward passes may run in: ``bf16`` runs the student's forward under
#: CPU autocast (weights, gradients and the optimiser stay fp32; the losses are computed in fp32),
#: which pays on CPUs with bf16 matrix units and is slow on others.
RECOVERY_PRECISIONS = ("fp32", "bf16")
_DISTILL_KEYS = ("steps", "lr", "batch_size", "temperature", "weights", "layer_map", "hidden_projection",
                 "precision")


#: The learning rate of KD recovery. Measured on the default task (MiniLM-L6, int8, 300 steps of
#: logits + hidden KD, batch 32), validation / test: layers 0, 2, 4 kept with FFNs at a quarter
#: .8039 / .8243 at 1e-4, .8188 / .8337 at 3e-4, .8047 / .8227 at 1e-3 (900 steps at 1e-4:
#: .8212 / .8392, three times the cost); every FFN cut to half .8486 / .8533 at 1e-4,
#: .8525 / .8533 at 3e-4; layers 0, 1, 2, 4 kept .8345 / .8361 at 1e-4, .8322 / .8463 at 3e-4.
#: A heavily cut model needs the larger steps; a lightly cut one does not lose by them.
KD_LR = 3e-4
#: Warm-up of KD recovery: a tenth of its steps, at most this many. Longer recoveries (polishing,
#: equal-time steps in the allocated space) warm up as the 300-step default does, so a screen
#: taken after its first 80 steps compares across plans of any length (a tenth of 900 steps would
#: still be warming up there).
WARMUP_STEPS = 30


@dataclass(frozen=True)
class DistillConfig:
    """Global knowledge-distillation recovery after the structural changes (``steps=0``: none).

    ``weights`` keys missing from a plan take their defaults (logits 1.0, hidden 0.0,
    attention 0.0). ``layer_map`` maps kept student layer i to a teacher layer index.
    ``precision``: of the student's forward passes during recovery (:data:`RECOVERY_PRECISIONS`).
    """

    steps: int = 0
    lr: float = KD_LR
    batch_size: int = 32
    temperature: float = 2.0
    weights: Mapping[str, float] = field(default_factory=dict)
    layer_map: Literal["auto"] | tuple[int, ...] = "auto"
    hidden_projection: Literal["identity", "learned"] = "identity"
    precision: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        if isinstance(self.weights, Mapping):
            defaults = {"logits": 1.0, "hidden": 0.0, "attention": 0.0}
            object.__setattr__(self, "weights", {**defaults, **self.weights})
        if isinstance(self.layer_map, list):
            object.__setattr__(self, "layer_map", tuple(self.layer_map))

    def check(self, where: str) -> None:
        """Raise UserError unless every value is well-formed."""
        if not (is_int(self.steps) and self.steps >= 0):
            raise UserError(f"{where}.steps = {self.steps!r} but it must be an integer >= 0")
        if not (is_int(self.batch_size) and self.batch_size >= 1):
            raise UserError(f"{where}.batch_size = {self.batch_size!r} but it must be an integer >= 1")
        for key in ("lr", "temperature"):
            value = getattr(self, key)
            if not (is_number(value) and value > 0):
                raise UserError(f"{where}.{key} = {value!r} but it must be a number > 0")
        if not isinstance(self.weights, Mapping):
            raise UserError(f"{where}.weights must be a mapping with keys: {', '.join(DISTILL_WEIGHTS)}")
        check_keys(self.weights, DISTILL_WEIGHTS, f"{where}.weights")
        for key, value in self.weights.items():
            if not (is_number(value) and value >= 0):
                raise UserError(f"{where}.weights.{key} = {value!r} but it must be a number >= 0")
        if self.steps > 0 and not any(self.weights.values()):
            raise UserError(f"{where}.weights are all 0 but steps = {self.steps}; give some loss a weight > 0")
        if self.layer_map != "auto" and not (
            isinstance(self.layer_map, tuple) and all(is_int(t) and t >= 0 for t in self.layer_map)
        ):
            raise UserError(
                f"{where}.layer_map = {self.layer_map!r} but it must be 'auto' or a list of layer indices"
            )
        if self.hidden_projection not in HIDDEN_PROJECTIONS:
            raise UserError(
                f"{where}.hidden_projection = {self.hidden_projection!r} "
                f"but it must be one of: {', '.join(HIDDEN_PROJECTIONS)}"
            )
        if self.precision not in RECOVERY_PRECISIONS:
            raise UserError(f"{where}.precision = {self.precision!r} but it must be one of: "
                            f"{', '.join(RECOVERY_PRECISIONS)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "temperature": self.temperature,
            "weights": dict(self.weights),
            "layer_map": self.layer_map if self.layer_map == "auto" else list(self.layer_map),
            "hidden_projection": self.hidden_projection,
            # written only when not the default: plans saved before it keep their fingerprints
            **({"precision": self.precision} if self.precision != "fp32" else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str) -> DistillConfig:
        """Parse the ``distill`` section; numbers written as strings (YAML ``5e-5``) are accepted."""
        kwargs = section(d, _DISTILL_KEYS, where)
        if kwargs is None:
            return cls()
        for key in ("lr", "temperature"):
            if key in kwargs:
                kwargs[key] = maybe_float(kwargs[key])
        if isinstance(kwargs.get("weights"), Mapping):
            kwargs["weights"] = {k: maybe_float(v) for k, v in kwargs["weights"].items()}
        return cls(**kwargs)




@dataclass(frozen=True)
class DistillInputs:
    """What recovery reads besides the student: the tokenised training split, the teacher's cached
    logits on it (row-aligned), and — only for hidden/attention losses — the teacher model."""

    train: object
    teacher_logits: torch.Tensor
    pad_id: int
    teacher: nn.Module | None = None
    teacher_layers: int | None = None
    teacher_hidden: Sequence[torch.Tensor] | None = None  # teacher_hidden_states(...) of ``train``
    task: Task = field(default_factory=get_task)  # what the logits mean (autocompress.tasks)


#: Largest cache of teacher hidden states kept for recovery (bytes); ``AUTOCOMPRESS_KD_CACHE_GB``
#: overrides it (0 turns the cache off).
HIDDEN_CACHE_BYTES = int(float(os.environ.get("AUTOCOMPRESS_KD_CACHE_GB", "3")) * 2**30)


def reads_cached_hidden(config: DistillConfig) -> bool:
    """Whether recovery under ``config`` reads the cached teacher states (hidden-state loss without
    the attention loss, which needs the running teacher)."""
    w = config.weights
    return config.steps > 0 and w.get("hidden", 0) > 0 and not w.get("attention", 0) > 0


def hidden_cache_bytes(train, num_layers: int, hidden_size: int) -> int:
    """What :func:`teacher_hidden_states` would keep for ``train`` (fp16, unpadded)."""
    tokens = sum(len(ids) for ids in train["input_ids"]) if hasattr(train, "column_names") else \
        sum(len(r["input_ids"]) for r in train)
    return tokens * num_layers * hidden_size * 2


@torch.no_grad()
def teacher_hidden_states(teacher: nn.Module, train, pad_id: int, *, batch_size: int = 64) -> list[torch.Tensor]:
    """The teacher's layer outputs (``hidden_states[1:]``) on every example of ``train``, row
    order: one fp16 tensor (layers, tokens, hidden) per example, without its padding."""
    teacher.eval()
    out: list[torch.Tensor | None] = [None] * len(train)
    for batch in training.iterate(train, batch_size, pad_id=pad_id, with_index=True):
        states = torch.stack(teacher(**training.model_inputs(batch), output_hidden_states=True).hidden_states[1:], 1)
        lengths = batch["attention_mask"].sum(-1).tolist()
        for row, (index, length) in enumerate(zip(batch["index"].tolist(), lengths)):
            out[index] = states[row, :, :length].to(torch.float16).clone()
    return out  # type: ignore[return-value]


def _cached_hidden(cache: Sequence[torch.Tensor], batch: training.Batch, layers: list[int]) -> torch.Tensor:
    """(len(layers), batch, tokens, hidden) float32 teacher states for a (right-padded) batch."""
    rows = [cache[i] for i in batch["index"].tolist()]
    width = batch["input_ids"].shape[1]
    out = torch.zeros(len(layers), len(rows), width, rows[0].shape[-1])
    for b, states in enumerate(rows):
        out[:, b, :states.shape[1]] = states[layers].float()
    return out


def layer_map(config: DistillConfig, student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer for each student layer. ``auto`` spreads the student uniformly over the
    teacher and ends on its last layer (TinyBERT's g(m) = m·N/M); identity when depths match."""
    if config.layer_map != "auto":
        mapping = list(config.layer_map)
        if len(mapping) != student_layers or max(mapping) >= teacher_layers:
            raise UserError(f"distill.layer_map {mapping} must list {student_layers} teacher layers < {teacher_layers}")
        return mapping
    return [round((j + 1) * teacher_layers / student_layers) - 1 for j in range(student_layers)]


def sparsity_masks(model: nn.Module) -> dict[nn.Parameter, torch.Tensor]:
    """Masks of the weight matrices that are partly zero (unstructured sparsity to keep)."""
    masks = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            zero = module.weight == 0
            if zero.any():
                masks[module.weight] = ~zero
    return masks


def distill_(student: nn.Module, inputs: DistillInputs, config: DistillConfig, *, seed: int = 0,
             progress: bool = True) -> dict:
    """Recover ``student`` in place for ``config.steps`` steps. Returns the training summary."""
    return training.run_to_end(distill_stages(student, inputs, config, seed=seed, progress=progress))


def distill_stages(student: nn.Module, inputs: DistillInputs, config: DistillConfig, *, seed: int = 0,
                   progress: bool = True, pause_at: tuple[int, ...] = ()):
    """:func:`distill_` as a generator that pauses before each step in ``pause_at`` (yielding the
    step; the student is in eval mode, possibly with eager attention) and returns the training
    summary when done. Pausing does not change the result (see :func:`training.fit_stages`)."""
    if config.steps <= 0:
        return {"steps": 0, "seconds": 0.0, "final_loss": None}
    w = config.weights
    need_inner = (w.get("hidden", 0) > 0 or w.get("attention", 0) > 0)
    cached = inputs.teacher_hidden if reads_cached_hidden(config) else None
    if need_inner and inputs.teacher is None and cached is None:
        raise ValueError("hidden/attention distillation needs the teacher model (or its cached states) in DistillInputs")
    adapter = get_adapter(student)
    student_layers = adapter.num_layers(student)
    mapping = layer_map(config, student_layers, inputs.teacher_layers or student_layers) if need_inner else []
    projection = None
    if w.get("hidden", 0) > 0 and config.hidden_projection == "learned":
        hidden = adapter.hidden_size(student)
        projection = nn.Linear(hidden, hidden)
        nn.init.eye_(projection.weight)
        nn.init.zeros_(projection.bias)
    if w.get("attention", 0) > 0:
        for model in (student, inputs.teacher):
            model.set_attn_implementation("eager")  # sdpa does not return attention maps

    masks = sparsity_masks(student)
    temperature = config.temperature
    torch.manual_seed(seed)  # dropout: the same plan and seed give the same model

    def loss_fn(model: nn.Module, batch: training.Batch) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            out = model(**training.model_inputs(batch), output_hidden_states=w.get("hidden", 0) > 0,
                        output_attentions=w.get("attention", 0) > 0)
        if config.precision != "fp32":  # the losses in fp32, whatever the forward ran in
            out = type(out)(**{k: v.float() if torch.is_tensor(v) else tuple(t.float() for t in v)
                               for k, v in out.items() if v is not None})
        t_logits = inputs.teacher_logits[batch["index"]]
        loss = torch.zeros(())
        if w.get("logits", 0) > 0:
            loss = loss + w["logits"] * inputs.task.distill_loss(out.logits, t_logits, temperature)
        if need_inner:
            if cached is not None:
                t_hidden = _cached_hidden(cached, batch, mapping)
            else:
                with torch.no_grad():
                    t_out = inputs.teacher(**training.model_inputs(batch), output_hidden_states=w.get("hidden", 0) > 0,
                                           output_attentions=w.get("attention", 0) > 0)
                t_hidden = [t_out.hidden_states[t + 1] for t in mapping] if w.get("hidden", 0) > 0 else []
            mask = batch["attention_mask"].unsqueeze(-1).float()
            if w.get("hidden", 0) > 0:
                terms = []
                for j, t in enumerate(mapping):
                    s_h = out.hidden_states[j + 1]
                    s_h = projection(s_h) if projection is not None else s_h
                    diff = (s_h - t_hidden[j]) ** 2 * mask
                    terms.append(diff.sum() / (mask.sum() * s_h.shape[-1]))
                loss = loss + w["hidden"] * torch.stack(terms).mean()
            if w.get("attention", 0) > 0:
                pair = mask * mask.transpose(1, 2)
                terms = [((out.attentions[j].mean(1) - t_out.attentions[t].mean(1)) ** 2 * pair).sum() / pair.sum()
                         for j, t in enumerate(mapping)]
                loss = loss + w["attention"] * torch.stack(terms).mean()
        return loss

    def reapply_masks() -> None:
        with torch.no_grad():
            for param, keep in masks.items():
                param.mul_(keep)

    run = training.fit_stages(
        student,
        lambda epoch: training.iterate(inputs.train, config.batch_size, pad_id=inputs.pad_id, shuffle=True,
                                       seed=seed + epoch, with_index=True),
        steps=config.steps, lr=config.lr, loss_fn=loss_fn, warmup=min(0.1, WARMUP_STEPS / max(1, config.steps)),
        extra_params=list(projection.parameters()) if projection is not None else (),
        after_step=reapply_masks if masks else None, progress=progress, desc="KD recovery", pause_at=pause_at)
    try:
        return (yield from run)
    finally:
        if w.get("attention", 0) > 0:
            student.set_attn_implementation("sdpa")
            inputs.teacher.set_attn_implementation("sdpa")
