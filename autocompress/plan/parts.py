"""The parts of a compression plan: what to do to one encoder layer (:class:`LayerPlan`) and the
names and checks the plan shares. The recovery (:class:`~autocompress.techniques.distill.DistillConfig`)
and whole-model techniques (:class:`~autocompress.techniques.base.Technique`) define their own
sections where they are implemented."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from autocompress.arch.base import LINEAR_GROUPS
from autocompress.errors import UserError
from autocompress.techniques.base import is_int, is_number, section

SCHEMA = "autocompress.plan/v1"
DTYPES = ("fp32", "int8")

Group = Literal["q", "k", "v", "attn_out", "ffn_in", "ffn_out"]
Dtype = Literal["fp32", "int8"]

_LAYER_KEYS = ("keep", "heads", "ffn", "rank", "dtype", "sparsity")
# Per-group values that mean "leave this linear as it is"; canonical plans omit them.
NEUTRAL = {"rank": None, "dtype": "fp32", "sparsity": 0}


def canonical_groups(values: Mapping[str, Any], neutral: Any) -> dict[str, Any]:
    """Order entries as in LINEAR_GROUPS (unknown names last) and drop neutral ones."""
    order = {g: i for i, g in enumerate(LINEAR_GROUPS)}
    keys = sorted(values, key=lambda g: order.get(g, len(order)))
    return {
        g: values[g]
        for g in keys
        if not (values[g] is neutral or (type(values[g]) in (int, float, str) and values[g] == neutral))
    }


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
        kwargs = section(d, _LAYER_KEYS, where)
        if kwargs is None:
            return cls()
        for name in NEUTRAL:
            value = kwargs.get(name)
            if value is None:
                kwargs.pop(name, None)
            elif not isinstance(value, Mapping):
                kwargs[name] = dict.fromkeys(LINEAR_GROUPS, value)
        return cls(**kwargs)
