"""The compression plan: what to do to each encoder layer, as plain data saved as YAML or JSON.

A plan never touches a model. :meth:`CompressionPlan.resolve` turns it into one concrete
:class:`ResolvedLayer` per layer of a given model (validating it against that model's sizes);
``autocompress.techniques`` applies those. Layer indices always refer to the original model.

An entry in ``layers`` replaces ``defaults`` for that layer entirely (it does not merge with it).
Inside a layer, groups missing from ``rank``/``dtype``/``sparsity`` stay dense/fp32/unpruned.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from autocompress.errors import UserError

SCHEMA = "autocompress.plan/v1"
LINEAR_GROUPS = ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")
DTYPES = ("fp32", "int8")
DISTILL_WEIGHTS = ("logits", "hidden", "attention")
HIDDEN_PROJECTIONS = ("identity", "learned")

Group = Literal["q", "k", "v", "attn_out", "ffn_in", "ffn_out"]
Dtype = Literal["fp32", "int8"]

_PLAN_KEYS = ("schema", "name", "description", "defaults", "layers", "distill", "reconstruct")
_LAYER_KEYS = ("keep", "heads", "ffn", "rank", "dtype", "sparsity")
_DISTILL_KEYS = ("steps", "lr", "batch_size", "temperature", "weights", "layer_map", "hidden_projection")
# Per-group values that mean "leave this linear as it is"; canonical plans omit them.
_NEUTRAL = {"rank": None, "dtype": "fp32", "sparsity": 0}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _canonical_groups(values: Mapping[str, Any], neutral: Any) -> dict[str, Any]:
    """Order entries as in LINEAR_GROUPS (unknown names last) and drop neutral ones."""
    order = {g: i for i, g in enumerate(LINEAR_GROUPS)}
    keys = sorted(values, key=lambda g: order.get(g, len(order)))
    return {
        g: values[g]
        for g in keys
        if not (values[g] is neutral or (type(values[g]) in (int, float, str) and values[g] == neutral))
    }


def _check_keys(d: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
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
        for name, neutral in _NEUTRAL.items():
            values = getattr(self, name)
            if isinstance(values, (str, int, float)) and not isinstance(values, bool):
                values = {g: values for g in LINEAR_GROUPS}  # one value for every group
                object.__setattr__(self, name, values)
            if isinstance(values, Mapping):
                object.__setattr__(self, name, _canonical_groups(values, neutral))

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
        if self.heads is not None and not (_is_int(self.heads) and self.heads >= 1):
            raise UserError(f"{where}.heads = {self.heads!r} but it must be an integer >= 1 (or null for all)")
        if self.ffn is not None and not (
            (_is_int(self.ffn) and self.ffn >= 1) or (isinstance(self.ffn, float) and 0 < self.ffn <= 1)
        ):
            raise UserError(
                f"{where}.ffn = {self.ffn!r} but it must be an integer >= 1 (neurons kept), "
                "a fraction in (0, 1], or null for all"
            )
        for name in _NEUTRAL:
            values = getattr(self, name)
            if not isinstance(values, Mapping):
                raise UserError(f"{where}.{name} must be a mapping from linear group to value, e.g. {{q: ...}}")
            for group, value in values.items():
                if group not in LINEAR_GROUPS:
                    raise UserError(
                        f"{where}.{name} has unknown group {group!r}; groups are: {', '.join(LINEAR_GROUPS)}"
                    )
                at = f"{where}.{name}.{group} = {value!r}"
                if name == "rank" and not (_is_int(value) and value >= 1):
                    raise UserError(f"{at} but a rank must be an integer >= 1 (or null for dense)")
                if name == "dtype" and value not in DTYPES:
                    raise UserError(f"{at} but dtype must be one of: {', '.join(DTYPES)}")
                if name == "sparsity" and not (_is_number(value) and 0 <= value < 1):
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
        _check_keys(d, _LAYER_KEYS, where)
        kwargs = dict(d)
        for name in _NEUTRAL:
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
        if not (_is_int(self.steps) and self.steps >= 0):
            raise UserError(f"{where}.steps = {self.steps!r} but it must be an integer >= 0")
        if not (_is_int(self.batch_size) and self.batch_size >= 1):
            raise UserError(f"{where}.batch_size = {self.batch_size!r} but it must be an integer >= 1")
        for key in ("lr", "temperature"):
            value = getattr(self, key)
            if not (_is_number(value) and value > 0):
                raise UserError(f"{where}.{key} = {value!r} but it must be a number > 0")
        if not isinstance(self.weights, Mapping):
            raise UserError(f"{where}.weights must be a mapping with keys: {', '.join(DISTILL_WEIGHTS)}")
        _check_keys(self.weights, DISTILL_WEIGHTS, f"{where}.weights")
        for key, value in self.weights.items():
            if not (_is_number(value) and value >= 0):
                raise UserError(f"{where}.weights.{key} = {value!r} but it must be a number >= 0")
        if self.steps > 0 and not any(self.weights.values()):
            raise UserError(f"{where}.weights are all 0 but steps = {self.steps}; give some loss a weight > 0")
        if self.layer_map != "auto" and not (
            isinstance(self.layer_map, tuple) and all(_is_int(t) and t >= 0 for t in self.layer_map)
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
        _check_keys(d, _DISTILL_KEYS, where)
        kwargs = dict(d)
        for key in ("lr", "temperature"):
            if key in kwargs:
                kwargs[key] = _maybe_float(kwargs[key])
        if isinstance(kwargs.get("weights"), Mapping):
            kwargs["weights"] = {k: _maybe_float(v) for k, v in kwargs["weights"].items()}
        return cls(**kwargs)


def _maybe_float(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class ResolvedLayer:
    """Concrete settings for one layer of one model. Dropped layers have heads = ffn = 0."""

    index: int
    keep: bool
    heads: int
    ffn: int
    rank: dict[Group, int | None]
    dtype: dict[Group, Dtype]
    sparsity: dict[Group, float]


@dataclass(frozen=True)
class CompressionPlan:
    """A named, serialisable compression recipe: ``defaults`` for every layer not in ``layers``,
    plus a global ``distill`` recovery. Embeddings and the classifier always stay fp32.

    ``source`` (the file it came from) only prefixes error messages; it is not part of the plan.
    """

    name: str
    description: str = ""
    layers: Mapping[int, LayerPlan] = field(default_factory=dict)
    defaults: LayerPlan = field(default_factory=LayerPlan)
    distill: DistillConfig = field(default_factory=DistillConfig)
    reconstruct: bool = False  # refit the projections reading pruned heads/neurons (least squares)
    source: str = field(default="plan", compare=False, repr=False)

    def __post_init__(self) -> None:
        src = self.source
        if not isinstance(self.reconstruct, bool):
            raise UserError(f"{src}: reconstruct = {self.reconstruct!r} but it must be true or false")
        if not isinstance(self.name, str) or not self.name:
            raise UserError(f"{src}: name = {self.name!r} but it must be a non-empty string")
        if not isinstance(self.description, str):
            raise UserError(f"{src}: description must be a string")
        for index, layer in self.layers.items():
            if not (_is_int(index) and index >= 0):
                raise UserError(f"{src}: layers key {index!r} but layer indices are integers >= 0")
            if not isinstance(layer, LayerPlan):
                raise UserError(f"{src}: layers[{index}] must be a LayerPlan, got {type(layer).__name__}")
            layer.check(f"{src}: layers[{index}]")
        object.__setattr__(self, "layers", dict(sorted(self.layers.items())))
        self.defaults.check(f"{src}: defaults")
        self.distill.check(f"{src}: distill")

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def keep_all(cls, name: str = "keep-all") -> CompressionPlan:
        """The identity plan: every layer kept whole, fp32, no recovery."""
        return cls(name=name, description="Keep the model unchanged.")

    def layer(self, index: int) -> LayerPlan:
        """The entry that applies to layer ``index`` (its own, else ``defaults``)."""
        return self.layers.get(index, self.defaults)

    def with_layer(self, index: int, **changes: Any) -> CompressionPlan:
        """A copy whose layer ``index`` is its current entry with ``changes`` applied."""
        return replace(self, layers={**self.layers, index: replace(self.layer(index), **changes)})

    def kept_layers(self, num_layers: int) -> list[int]:
        """Original indices of the layers this plan keeps, for a model with ``num_layers``."""
        return [i for i in range(num_layers) if self.layer(i).keep]

    # -- against a model ----------------------------------------------------------------------

    def resolve(
        self, num_layers: int, num_heads: int, intermediate_size: int, hidden_size: int | None = None
    ) -> list[ResolvedLayer]:
        """Concrete per-layer values for a model of these sizes; UserError if the plan does not fit.

        Ranks are checked against each linear's shape after head/FFN pruning when ``hidden_size``
        is given (otherwise the techniques check them when they are applied).
        """
        src = self.source
        for index in self.layers:
            if index >= num_layers:
                raise UserError(
                    f"{src}: layers[{index}] but the model has {num_layers} layers (0..{num_layers - 1})"
                )
        resolved = []
        for i in range(num_layers):
            where = f"{src}: layers[{i}]" if i in self.layers else f"{src}: defaults"
            resolved.append(self._resolve_layer(i, where, num_heads, intermediate_size, hidden_size))
        kept = sum(r.keep for r in resolved)
        if kept == 0:
            raise UserError(f"{src}: every one of the {num_layers} layers is dropped; keep at least one")
        layer_map = self.distill.layer_map
        if layer_map != "auto":
            if len(layer_map) != kept:
                raise UserError(
                    f"{src}: distill.layer_map has {len(layer_map)} entries but the plan keeps {kept} layers"
                )
            if max(layer_map) >= num_layers:
                raise UserError(
                    f"{src}: distill.layer_map refers to teacher layer {max(layer_map)} "
                    f"but the model has {num_layers} layers"
                )
        return resolved

    def _resolve_layer(
        self, i: int, where: str, num_heads: int, intermediate_size: int, hidden_size: int | None
    ) -> ResolvedLayer:
        lp = self.layer(i)
        if not lp.keep:
            return ResolvedLayer(
                index=i,
                keep=False,
                heads=0,
                ffn=0,
                rank=dict.fromkeys(LINEAR_GROUPS),
                dtype=dict.fromkeys(LINEAR_GROUPS, "fp32"),
                sparsity=dict.fromkeys(LINEAR_GROUPS, 0.0),
            )
        heads = num_heads if lp.heads is None else lp.heads
        if heads > num_heads:
            raise UserError(f"{where}.heads = {heads} but the model has {num_heads} heads per layer")
        if lp.ffn is None:
            ffn = intermediate_size
        elif isinstance(lp.ffn, float):
            ffn = max(1, round(lp.ffn * intermediate_size))
        else:
            ffn = lp.ffn
        if ffn > intermediate_size:
            raise UserError(f"{where}.ffn = {ffn} but the model's FFN has {intermediate_size} neurons per layer")
        rank = {g: lp.rank.get(g) for g in LINEAR_GROUPS}
        if hidden_size is not None:
            width = heads * (hidden_size // num_heads)
            shapes = {"q": (hidden_size, width), "k": (hidden_size, width), "v": (hidden_size, width),
                      "attn_out": (width, hidden_size), "ffn_in": (hidden_size, ffn), "ffn_out": (ffn, hidden_size)}
            for group, r in rank.items():
                n_in, n_out = shapes[group]
                if r is not None and r > min(n_in, n_out):
                    raise UserError(
                        f"{where}.rank.{group} = {r} but that linear is {n_in}->{n_out} after pruning, "
                        f"so its rank can be at most {min(n_in, n_out)}"
                    )
        return ResolvedLayer(
            index=i,
            keep=True,
            heads=heads,
            ffn=ffn,
            rank=rank,
            dtype={g: lp.dtype.get(g, "fp32") for g in LINEAR_GROUPS},
            sparsity={g: float(lp.sparsity.get(g, 0.0)) for g in LINEAR_GROUPS},
        )

    def table(
        self, num_layers: int, num_heads: int, intermediate_size: int, hidden_size: int | None = None
    ) -> str:
        """A per-layer text table of the resolved plan, for ``autocompress plan show``."""
        rows = [("layer", "keep", "heads", "ffn", "rank", "dtype", "sparsity")]
        for r in self.resolve(num_layers, num_heads, intermediate_size, hidden_size):
            if not r.keep:
                rows.append((str(r.index), "no", "-", "-", "-", "-", "-"))
                continue
            rows.append((
                str(r.index),
                "yes",
                f"{r.heads}/{num_heads}",
                f"{r.ffn}/{intermediate_size}",
                _format_groups(r.rank, None, "-"),
                _format_groups(r.dtype, "fp32", "fp32"),
                _format_groups(r.sparsity, 0.0, "-"),
            ))
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        kept = len(self.kept_layers(num_layers))
        recovery = f"KD recovery {self.distill.steps} steps" if self.distill.steps else "no KD recovery"
        return "\n".join([f"plan {self.name!r}: {kept}/{num_layers} layers kept, {recovery}", *lines])

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data in canonical form, ready for YAML/JSON (``schema`` first)."""
        return {
            "schema": SCHEMA,
            "name": self.name,
            "description": self.description,
            "defaults": self.defaults.to_dict(),
            "layers": {i: lp.to_dict() for i, lp in self.layers.items()},
            "distill": self.distill.to_dict(),
            **({"reconstruct": True} if self.reconstruct else {}),
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "plan") -> CompressionPlan:
        """Parse and validate plain data; ``source`` prefixes every error message."""
        if not isinstance(d, Mapping):
            raise UserError(f"{source}: expected a mapping at the top level, got {type(d).__name__}")
        if "schema" not in d:
            raise UserError(f"{source}: missing 'schema: {SCHEMA}'")
        if d["schema"] != SCHEMA:
            raise UserError(f"{source}: schema is {d['schema']!r} but expected {SCHEMA!r}")
        _check_keys(d, _PLAN_KEYS, source)
        if "name" not in d:
            raise UserError(f"{source}: missing 'name'")
        raw_layers = d.get("layers") or {}
        if not isinstance(raw_layers, Mapping):
            raise UserError(
                f"{source}: layers must be a mapping from layer index to settings, e.g. {{3: {{heads: 6}}}}"
            )
        layers = {}
        for key, value in raw_layers.items():
            if isinstance(key, str) and key.isdigit():
                key = int(key)
            if not (_is_int(key) and key >= 0):
                raise UserError(f"{source}: layers key {key!r} but layer indices are integers >= 0")
            layers[key] = LayerPlan.from_dict(value, f"{source}: layers[{key}]")
        return cls(
            name=d["name"],
            description=d.get("description") or "",
            layers=layers,
            defaults=LayerPlan.from_dict(d.get("defaults"), f"{source}: defaults"),
            distill=DistillConfig.from_dict(d.get("distill"), f"{source}: distill"),
            reconstruct=d.get("reconstruct", False),
            source=source,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CompressionPlan:
        """Read a ``.yaml``/``.yml``/``.json`` plan file."""
        path = Path(path)
        fmt = _format_of(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"{path}: no such plan file") from None
        except OSError as e:
            raise UserError(f"{path}: cannot read: {e.strerror}") from None
        try:
            data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise UserError(f"{path}: not valid {fmt.upper()}: {e}") from None
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as YAML or JSON (by suffix), atomically (temp file + ``os.replace``)."""
        path = Path(path)
        data = self.to_dict()
        if _format_of(path) == "json":
            text = json.dumps(data, indent=2) + "\n"
        else:
            text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as e:
            raise UserError(f"{path}: cannot write: {e.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of everything that affects the result (not name/description)."""
        data = self.to_dict()
        del data["name"], data["description"]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    raise UserError(f"{path}: plan files must end in .yaml, .yml or .json")


def _format_groups(values: Mapping[str, Any], neutral: Any, empty: str) -> str:
    """``-``/``fp32`` when nothing is set, ``all=X`` when every group is X, else ``q=X k=Y``."""
    changed = {g: v for g, v in values.items() if v != neutral}
    if not changed:
        return empty
    if len(changed) == len(LINEAR_GROUPS) and len(set(changed.values())) == 1:
        return f"all={next(iter(changed.values()))}"
    return " ".join(f"{g}={v}" for g, v in changed.items())
