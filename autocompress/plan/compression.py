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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from autocompress.arch.base import LINEAR_GROUPS
from autocompress.errors import UserError
from autocompress.plan.parts import SCHEMA, Dtype, Group, LayerPlan
from autocompress.techniques.base import Technique, check_keys, is_int, technique_class, technique_keys
from autocompress.techniques.distill import DistillConfig

_PLAN_KEYS = ("schema", "name", "description", "defaults", "layers", "distill", "reconstruct")


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
    plus a global ``distill`` recovery and whole-model ``techniques`` (each a section of the plan
    file named by its key, e.g. ``embeddings: {dtype: int8}``; those left at their defaults are
    not stored). The classifier always stays fp32.

    ``source`` (the file it came from) only prefixes error messages; it is not part of the plan.
    """

    name: str
    description: str = ""
    layers: Mapping[int, LayerPlan] = field(default_factory=dict)
    defaults: LayerPlan = field(default_factory=LayerPlan)
    distill: DistillConfig = field(default_factory=DistillConfig)
    techniques: Mapping[str, Technique] = field(default_factory=dict)
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
            if not (is_int(index) and index >= 0):
                raise UserError(f"{src}: layers key {index!r} but layer indices are integers >= 0")
            if not isinstance(layer, LayerPlan):
                raise UserError(f"{src}: layers[{index}] must be a LayerPlan, got {type(layer).__name__}")
            layer.check(f"{src}: layers[{index}]")
        object.__setattr__(self, "layers", dict(sorted(self.layers.items())))
        self.defaults.check(f"{src}: defaults")
        self.distill.check(f"{src}: distill")
        techniques = {}
        for key, technique in self.techniques.items():
            if not isinstance(technique, Technique) or technique.key != key:
                raise UserError(f"{src}: techniques[{key!r}] must be the technique registered as {key!r}, "
                                f"got {type(technique).__name__}")
            technique.check(f"{src}: {key}")
            if not technique.is_default():  # canonical: a technique left as is is not stored
                techniques[key] = technique
        order = {k: i for i, k in enumerate(technique_keys())}
        object.__setattr__(self, "techniques", dict(sorted(techniques.items(), key=lambda kv: order[kv[0]])))

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def keep_all(cls, name: str = "keep-all") -> CompressionPlan:
        """The identity plan: every layer kept whole, fp32, no recovery."""
        return cls(name=name, description="Keep the model unchanged.")

    def technique(self, key: str) -> Technique:
        """The plan's whole-model technique ``key`` (its defaults when the plan leaves it alone)."""
        cls = technique_class(key)
        if cls is None:
            raise UserError(f"no technique {key!r}; techniques: {', '.join(technique_keys())}")
        return self.techniques.get(key) or cls()

    def techniques_at(self, stage: str) -> list[Technique]:
        """The plan's whole-model techniques of ``stage``, in registration order."""
        return [t for t in self.techniques.values() if t.stage == stage]

    def with_techniques(self, *techniques: Technique) -> CompressionPlan:
        """A copy with these whole-model techniques set (replacing the same keys)."""
        return replace(self, techniques={**self.techniques, **{t.key: t for t in techniques}})

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
        whole = "".join(f", {key} " + " ".join(f"{k}={v}" for k, v in t.to_dict().items())
                        for key, t in self.techniques.items())
        return "\n".join([f"plan {self.name!r}: {kept}/{num_layers} layers kept, {recovery}{whole}", *lines])

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
            # only those that change the model: a plan that leaves them alone keeps its fingerprint
            **{key: t.to_dict() for key, t in self.techniques.items()},
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
        check_keys(d, (*_PLAN_KEYS, *technique_keys()), source)
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
            if not (is_int(key) and key >= 0):
                raise UserError(f"{source}: layers key {key!r} but layer indices are integers >= 0")
            layers[key] = LayerPlan.from_dict(value, f"{source}: layers[{key}]")
        return cls(
            name=d["name"],
            description=d.get("description") or "",
            layers=layers,
            defaults=LayerPlan.from_dict(d.get("defaults"), f"{source}: defaults"),
            distill=DistillConfig.from_dict(d.get("distill"), f"{source}: distill"),
            techniques={key: technique_class(key).from_dict(d[key], f"{source}: {key}")
                        for key in technique_keys() if key in d},
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
