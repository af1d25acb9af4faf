"""The technique seam: a whole-model technique is a frozen config dataclass that names its plan
section and applies itself, registered by subclassing (torchao's config → transform registry).

A subclass sets ``key`` (its section in a plan file, e.g. ``embeddings``) and ``stage``; its
dataclass fields are the section's keys, their defaults mean "leave the model as it is". The plan
parses, checks and writes the section through the registry (:func:`technique_class`), so a plan
that leaves it at its defaults does not mention it (its fingerprint is unchanged); the pipeline
applies every section of a stage in registration order. Contract:

- ``stage = "structure"``: applied to the student before recovery, in place, by :meth:`prepare_`,
  which may read the task (``ctx``: its data, tokenizer); what it makes is part of the fp32
  weights (recovery trains it, the folder saves it). :meth:`rebuild_` gives a model freshly built
  from its config the structure of a saved state (shapes read from ``state``) before the state is
  loaded. E.g. vocabulary trimming.
- ``stage = "finalize"``: applied after recovery, in place, by :meth:`apply_`; again when a saved
  model is loaded (the folder keeps fp32 weights) and on the fp32 copy exported to other runtimes,
  so every runtime runs the same values. Nothing trains after it.
- :meth:`check` raises :class:`~autocompress.errors.UserError` (one line, prefixed ``where``).
- ``choices``: field → values the search may try (a space file narrows them); ``saves``: what it
  makes smaller (``"size"``, ``"latency"``): the search's one-minute recipes use a technique that
  saves size alone only under a size budget.

Per-layer techniques (heads, FFN neurons, layers, low-rank, int8 linears, sparsity) are knobs of
each layer's plan (:class:`~autocompress.plan.LayerPlan`) and keep their functions in their own
files here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from autocompress.errors import UserError

_REGISTRY: dict[str, type["Technique"]] = {}
STAGES = ("structure", "finalize")


@dataclass(frozen=True)
class Technique:
    key: ClassVar[str]
    stage: ClassVar[str] = "finalize"
    choices: ClassVar[Mapping[str, tuple]] = {}
    saves: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "key" in cls.__dict__:
            if cls.stage not in STAGES:
                raise TypeError(f"{cls.__name__}.stage must be one of {STAGES}, not {cls.stage!r}")
            _REGISTRY[cls.key] = cls

    def check(self, where: str) -> None:
        """Raise UserError unless every value is well-formed (default: each field is one of its
        ``choices`` when it has some)."""
        for name, allowed in self.choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(f"{where}.{name} = {value!r} but it must be one of: {', '.join(map(str, allowed))}")

    def apply_(self, model):
        """Apply to ``model`` in place and return it (the ``finalize`` stage)."""
        raise NotImplementedError

    def prepare_(self, model, ctx):
        """Apply to the student ``model`` in place before recovery, reading the task from ``ctx``
        (a :class:`~autocompress.context.TaskContext`) if needed; return it (the ``structure``
        stage)."""
        raise NotImplementedError

    def rebuild_(self, model, state) -> None:
        """Give ``model`` (built from the uncompressed config) the structure ``state`` (a saved
        fp32 state dict) was made with, in place, so that the state loads (the ``structure``
        stage)."""
        raise NotImplementedError

    def is_default(self) -> bool:
        return self == type(self)()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str) -> "Technique":
        kwargs = section(d, [f.name for f in fields(cls)], where)
        if kwargs is None:
            return cls()
        made = cls(**kwargs)
        made.check(where)
        return made


def technique_class(key: str) -> type[Technique] | None:
    return _REGISTRY.get(key)


def technique_keys() -> list[str]:
    """Plan sections of the registered techniques, in registration order."""
    return list(_REGISTRY)


# -- checks shared by every config ------------------------------------------------------------


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_keys(d: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in d:
        if key not in allowed:
            raise UserError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")


def section(d: Any, allowed: Sequence[str], where: str) -> dict[str, Any] | None:
    """A plan section as a new dict with its keys checked; None when it is absent (``d`` is None)."""
    if d is None:
        return None
    if not isinstance(d, Mapping):
        raise UserError(f"{where} must be a mapping with keys: {', '.join(allowed)}")
    check_keys(d, allowed, where)
    return dict(d)


def maybe_float(value: Any) -> Any:
    """Numbers written as strings (YAML reads ``5e-5`` as text) made floats; anything else as is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


__all__ = ["STAGES", "Technique", "check_keys", "is_int", "is_number", "maybe_float", "section", "technique_class",
           "technique_keys"]
