"""The parts of a compression plan: what to do to one encoder layer (:class:`LayerPlan`), the
knowledge-distillation recovery (:class:`DistillConfig`), and the names and checks they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from autocompress.errors import UserError

SCHEMA = "autocompress.plan/v1"
LINEAR_GROUPS = ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")
DTYPES = ("fp32", "int8")
DISTILL_WEIGHTS = ("logits", "hidden", "attention")
HIDDEN_PROJECTIONS = ("identity", "learned")

Group = Literal["q", "k", "v", "attn_out", "ffn_in", "ffn_out"]
Dtype = Literal["fp32", "int8"]

_LAYER_KEYS = ("keep", "heads", "ffn", "rank", "dtype", "sparsity")
_DISTILL_KEYS = ("steps", "lr", "batch_size", "temperature", "weights", "layer_map", "hidden_projection")
# Per-group values that mean "leave this linear as it is"; canonical plans omit them.
NEUTRAL = {"rank": None, "dtype": "fp32", "sparsity": 0}


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def canonical_groups(values: Mapping[str, Any], neutral: Any) -> dict[str, Any]:
    """Order entries as in LINEAR_GROUPS (unknown names last) and drop neutral ones."""
    order = {g: i for i, g in enumerate(LINEAR_GROUPS)}
    keys = sorted(values, key=lambda g: order.get(g, len(order)))
    return {
        g: values[g]
        for g in keys
        if not (values[g] is neutral or (type(values[g]) in (int, float, str) and values[g] == neutral))
    }


def check_keys(d: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in d:
        if key not in allowed:
            raise UserError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")


@dataclass(frozen=True)
class LayerPlan:
    """What to do to one encoder layer; every default means "leave it as it is".

    ``heads``: attention heads kept (None = all). ``ffn``: FFN neurons kept, an int count or a
    float fraction in (0, 1] (None = all). ``rank``/``dtype``/``sparsity`` map a linear group
    (see ``LINEAR_GROUPS``) to a low-rank rank, ``"fp32"``/``"int8"``, or the fraction of
    weights zeroed; a single value applies to every group. ``keep=False`` drops the layer, and then no other knob may be set.
    """

    keep: bool = True
    heads: int | None = None
    ffn: int | float | None = None
    rank: Mapping[Group, int | None] = field(default_factory=dict)
    dtype: Mapping[Group, Dtype] = field(default_factory=dict)
    sparsity: Mapping[Group, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, neutral in NEUTRAL.items():
            values = getattr(self, name)
            if isinstance(values, (str, int, float)) and not isinstance(values, bool):
                values = {g: values for g in LINEAR_GROUPS}  # one value for every group
                object.__setattr__(self, name, values)
            if isinstance(values, Mapping):
                object.__setattr__(self, name, canonical_groups(values, neutral))

    def knobs(self) -> list[str]:
        """Names of the knobs this entry sets besides ``keep``."""
        return [k for k in _LAYER_KEYS[1:] if getattr(self, k) not in (None, {})]

    def check(self, where: str) -> None:
        """Raise UserError unless every value is well-formed (model-independent checks)."""
        if not isinstance(self.keep, bool):
            raise UserError(f"{where}.keep = {self.keep!r} but it must be true or false")
        if not self.keep and self.knobs():
            raise UserError(
                f"{where} is dropped (keep: false) but also sets {', '.join(self.knobs())}; "
                "a dropped layer takes no other keys"
            )
        if self.heads is not None and not (is_int(self.heads) and self.heads >= 1):
            raise UserError(f"{where}.heads = {self.heads!r} but it must be an integer >= 1 (or null for all)")
        if self.ffn is not None and not (
            (is_int(self.ffn) and self.ffn >= 1) or (isinstance(self.ffn, float) and 0 < self.ffn <= 1)
        ):
            raise UserError(
                f"{where}.ffn = {self.ffn!r} but it must be an integer >= 1 (neurons kept), "
                "a fraction in (0, 1], or null for all"
            )
        for name in NEUTRAL:
            values = getattr(self, name)
            if not isinstance(values, Mapping):
                raise UserError(f"{where}.{name} must be a mapping from linear group to value, e.g. {{q: ...}}")
            for group, value in values.items():
                if group not in LINEAR_GROUPS:
                    raise UserError(
                        f"{where}.{name} has unknown group {group!r}; groups are: {', '.join(LINEAR_GROUPS)}"
                    )
                at = f"{where}.{name}.{group} = {value!r}"
                if name == "rank" and not (is_int(value) and value >= 1):
                    raise UserError(f"{at} but a rank must be an integer >= 1 (or null for dense)")
                if name == "dtype" and value not in DTYPES:
                    raise UserError(f"{at} but dtype must be one of: {', '.join(DTYPES)}")
                if name == "sparsity" and not (is_number(value) and 0 <= value < 1):
                    raise UserError(f"{at} but sparsity must be a fraction in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """Only the knobs that differ from "leave as is"."""
        d: dict[str, Any] = {} if self.keep else {"keep": False}
        for key in _LAYER_KEYS[1:]:
            value = getattr(self, key)
            if value not in (None, {}):
                d[key] = dict(value) if isinstance(value, Mapping) else value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str) -> LayerPlan:
        """Parse one layer entry. A scalar ``rank``/``dtype``/``sparsity`` applies to all groups."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise UserError(f"{where} must be a mapping with keys: {', '.join(_LAYER_KEYS)}")
        check_keys(d, _LAYER_KEYS, where)
        kwargs = dict(d)
        for name in NEUTRAL:
            value = kwargs.get(name)
            if value is None:
                kwargs.pop(name, None)
            elif not isinstance(value, Mapping):
                kwargs[name] = dict.fromkeys(LINEAR_GROUPS, value)
        return cls(**kwargs)


@dataclass(frozen=True)
class DistillConfig:
    """Global knowledge-distillation recovery after the structural changes (``steps=0``: none).

    ``weights`` keys missing from a plan take their defaults (logits 1.0, hidden 0.0,
    attention 0.0). ``layer_map`` maps kept student layer i to a teacher layer index.
    """

    steps: int = 0
    lr: float = 5e-5
    batch_size: int = 32
    temperature: float = 2.0
    weights: Mapping[str, float] = field(default_factory=dict)
    layer_map: Literal["auto"] | tuple[int, ...] = "auto"
    hidden_projection: Literal["identity", "learned"] = "identity"

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "temperature": self.temperature,
            "weights": dict(self.weights),
            "layer_map": self.layer_map if self.layer_map == "auto" else list(self.layer_map),
            "hidden_projection": self.hidden_projection,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str) -> DistillConfig:
        """Parse the ``distill`` section; numbers written as strings (YAML ``5e-5``) are accepted."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise UserError(f"{where} must be a mapping with keys: {', '.join(_DISTILL_KEYS)}")
        check_keys(d, _DISTILL_KEYS, where)
        kwargs = dict(d)
        for key in ("lr", "temperature"):
            if key in kwargs:
                kwargs[key] = maybe_float(kwargs[key])
        if isinstance(kwargs.get("weights"), Mapping):
            kwargs["weights"] = {k: maybe_float(v) for k, v in kwargs["weights"].items()}
        return cls(**kwargs)


@dataclass(frozen=True)
class EmbeddingPlan:
    """What to do to the input embeddings. ``dtype``: the word-embedding table's storage, ``fp32``
    or ``int8`` (per-row scales, dequantized on lookup). In MiniLM-L6 the word embeddings are
    11.7M of 22.7M parameters, so int8 linears alone leave a model of ~50 MB."""

    dtype: Dtype = "fp32"

    def check(self, where: str) -> None:
        if self.dtype not in DTYPES:
            raise UserError(f"{where}.dtype = {self.dtype!r} but it must be one of: {', '.join(DTYPES)}")

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str) -> EmbeddingPlan:
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise UserError(f"{where} must be a mapping with keys: {', '.join(_EMBEDDING_KEYS)}")
        check_keys(d, _EMBEDDING_KEYS, where)
        plan = cls(**d)
        plan.check(where)
        return plan


_EMBEDDING_KEYS = ("dtype",)


def maybe_float(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
