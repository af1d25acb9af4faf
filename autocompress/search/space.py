"""Search spaces: YAML files describing which knobs the search may turn, per layer, and how.

A space samples a :class:`~autocompress.plan.CompressionPlan` from an Optuna trial, define-by-run
and conditional: a dropped layer has no other knobs; low-rank rank and int8 are chosen per linear
group (``attention`` = q, k, v, attn_out; ``ffn`` = ffn_in, ffn_out). ``tie_layers: true`` shares
one set of knobs across all layers (for deep models), while depth stays per layer.

Fractions are of the model's own sizes (heads, FFN width, ``min(in, out)`` of the pruned linear
for ranks), so one space file fits any model of the family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ..errors import UserError
from ..plan import KD_LR, CompressionPlan, DistillConfig, LayerPlan
from .space_file import (BUILTIN, GROUPS, KD_KINDS, PROMOTE_RULES, SCHEMA, SCREEN_SCORES, Fidelity,  # noqa: F401
                         builtin_names, check_keys, choice_list, grouped_choices, int_at_least, is_fraction,
                         read_sections, read_space_file, recovery_options, suggest)

_TOP = ("schema", "name", "kind", "description", "tie_layers", "layers", "distill", "fidelity", "only_paying_knobs")
_LAYERS = ("keep", "min_kept", "always_keep", "heads", "ffn", "rank", "dtype", "sparsity")


@dataclass(frozen=True)
class SearchSpace:
    """A per-layer space: every knob of every layer is the sampler's (see the module docstring)."""

    name: str
    description: str = ""
    tie_layers: bool = False
    keep: tuple = (True, False)
    min_kept: int = 1
    always_keep: tuple[int, ...] = ()
    heads: tuple[float, ...] = (1.0,)
    ffn: tuple[float, ...] = (1.0,)
    rank: dict[str, tuple] = field(default_factory=lambda: {g: (None,) for g in GROUPS})
    dtype: dict[str, tuple] = field(default_factory=lambda: {g: ("fp32",) for g in GROUPS})
    sparsity: dict[str, tuple] = field(default_factory=lambda: {g: (0.0,) for g in GROUPS})
    kd_kinds: tuple[str, ...] = ("none",)
    kd_steps: int = 300
    kd_lr: float = KD_LR
    kd_temperature: float = 2.0
    kd_batch_size: int = 32
    fidelity: Fidelity = Fidelity()
    source: str = "space"
    only_paying_knobs: bool = True  # prepare() drops rank/sparsity choices that save < PAYING of a layer
    dropped: tuple[str, ...] = ()   # what prepare() dropped, and why

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, spec: str | Path) -> "SearchSpace":
        """A per-layer space file, or the name of a built-in one (``joint``, ``structured``,
        ``quant_only``, ``diagnostic``); :func:`autocompress.search.spaces.load_space` loads any kind."""
        data, source = read_space_file(spec)
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "space") -> "SearchSpace":
        layers, distill, fidelity = read_sections(data, source, _TOP, "layers", _LAYERS)
        where = f"{source}: layers"
        if data.get("kind", "per_layer") != "per_layer":
            raise UserError(f"{source}: kind is {data.get('kind')!r}; this loader reads per_layer spaces "
                            "(autocompress.search.spaces.load_space reads every kind)")
        return cls(
            name=str(data.get("name") or Path(source).stem),
            description=str(data.get("description", "")),
            tie_layers=bool(data.get("tie_layers", False)),
            keep=choice_list(layers, "keep", (True,), where, lambda v: isinstance(v, bool), "true or false"),
            min_kept=int_at_least(layers.get("min_kept", 1), f"{where}.min_kept", 1),
            always_keep=tuple(int_at_least(i, f"{where}.always_keep", 0) for i in layers.get("always_keep", ())),
            heads=choice_list(layers, "heads", (1.0,), where, is_fraction, "fractions in (0, 1]"),
            ffn=choice_list(layers, "ffn", (1.0,), where, is_fraction, "fractions in (0, 1]"),
            rank=grouped_choices(layers, "rank", None, where, lambda v: v is None or is_fraction(v), "null or fractions in (0, 1]"),
            dtype=grouped_choices(layers, "dtype", "fp32", where, lambda v: v in ("fp32", "int8"), "fp32 or int8"),
            sparsity=grouped_choices(layers, "sparsity", 0.0, where,
                              lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "numbers in [0, 1)"),
            **recovery_options(distill, source, ("none",), tuple(KD_KINDS), min_steps=0),
            fidelity=Fidelity.from_dict(fidelity, source, screen_steps=40),
            source=source,
            only_paying_knobs=bool(data.get("only_paying_knobs", True)),
        )

    def check_model(self, num_layers: int) -> None:
        bad = [i for i in self.always_keep if i >= num_layers]
        if bad:
            raise UserError(f"{self.source}: layers.always_keep {bad} but the model has {num_layers} layers")
        if self.min_kept > num_layers:
            raise UserError(f"{self.source}: layers.min_kept = {self.min_kept} but the model has {num_layers} layers")

    def prepare(self, *, ctx=None, predictor=None, importance=None, budget_ms=None, size_mb=None,
                progress=False) -> "SearchSpace":
        """This space for one target: with ``only_paying_knobs``, the low-rank and sparsity choices
        that the target's latency predictor says cut a layer's cost by less than :data:`PAYING`
        are dropped (:attr:`dropped` says which and why). Unstructured sparsity never pays on dense
        kernels, so the predictor ignores it and it is always dropped; a rank pays only when its two
        factors cost well under the dense linear."""
        from dataclasses import replace

        if predictor is not None:
            self = fp32_on(self, predictor.target.runtime)
        if not self.only_paying_knobs or predictor is None:
            return self
        dims, dropped = predictor.dims, []
        rank, sparsity = {}, {}
        for group, members in GROUPS.items():
            for knob, values, kept in (("rank", self.rank[group], rank), ("sparsity", self.sparsity[group], sparsity)):
                neutral = None if knob == "rank" else 0.0
                kept[group] = tuple(v for v in values if v == neutral or _pays(
                    predictor, dims, members, knob, v, self.dtype[group], dropped, f"{knob}.{group}={v}"))
        return replace(self, rank=rank, sparsity=sparsity, dropped=tuple(dropped))

    # ---------------------------------------------------------------- sampling

    def sample(self, trial, dims: dict[str, int]) -> CompressionPlan:
        """Sample a plan from an Optuna trial (define-by-run; conditional knobs)."""
        n, heads_total = dims["num_layers"], dims["num_heads"]
        width, hidden = dims["intermediate_size"], dims["hidden_size"]
        head_dim = hidden // heads_total
        layers: dict[int, LayerPlan] = {}
        kept = 0
        for i in range(n):
            must_keep = i in self.always_keep or (n - i) <= self.min_kept - kept
            keep = True if must_keep else suggest(trial, f"layer{i}.keep", self.keep)
            if not keep:
                layers[i] = LayerPlan(keep=False)
                continue
            kept += 1
            scope = "all" if self.tie_layers else f"layer{i}"
            h = max(1, round(suggest(trial, f"{scope}.heads", self.heads) * heads_total))
            w = max(1, round(suggest(trial, f"{scope}.ffn", self.ffn) * width))
            rank, dtype, sparsity = {}, {}, {}
            for group, members in GROUPS.items():
                r = suggest(trial, f"{scope}.rank.{group}", self.rank[group])
                d = suggest(trial, f"{scope}.dtype.{group}", self.dtype[group])
                s = suggest(trial, f"{scope}.sparsity.{group}", self.sparsity[group])
                for g in members:
                    if r is not None:
                        inner = {"q": h * head_dim, "k": h * head_dim, "v": h * head_dim,
                                 "attn_out": h * head_dim, "ffn_in": w, "ffn_out": w}[g]
                        rank[g] = max(1, min(round(r * min(hidden, inner)), min(hidden, inner)))
                    dtype[g] = d
                    if s:
                        sparsity[g] = float(s)
            layers[i] = LayerPlan(keep=True, heads=h, ffn=w, rank=rank, dtype=dtype, sparsity=sparsity)
        kind = suggest(trial, "distill.kind", self.kd_kinds)
        return CompressionPlan(name=f"trial-{trial.number}", layers=layers, distill=self.distill(kind))

    def distill(self, kind: str) -> DistillConfig:
        """The recovery a sampled plan of this KD kind gets."""
        return DistillConfig(steps=self.kd_steps if kind != "none" else 0, lr=self.kd_lr,
                             batch_size=self.kd_batch_size, temperature=self.kd_temperature,
                             weights={"logits": 0.0, **KD_KINDS[kind]} if kind != "none" else {})

    def keep_all_params(self, num_layers: int) -> dict[str, Any]:
        """Parameters that make :meth:`sample` return the uncompressed model (to enqueue it)."""
        params: dict[str, Any] = {}
        for i in range(num_layers):
            if len(self.keep) > 1:
                params[f"layer{i}.keep"] = True
            scope = "all" if self.tie_layers else f"layer{i}"
            for knob, choices, neutral in (("heads", self.heads, 1.0), ("ffn", self.ffn, 1.0)):
                if len(choices) > 1:
                    params[f"{scope}.{knob}"] = max(choices) if neutral not in choices else neutral
            for group in GROUPS:
                for knob, choices, neutral in (("rank", self.rank[group], None), ("dtype", self.dtype[group], "fp32"),
                                               ("sparsity", self.sparsity[group], 0.0)):
                    if len(choices) > 1 and neutral in choices:
                        params[f"{scope}.{knob}.{group}"] = neutral
        if len(self.kd_kinds) > 1:
            params["distill.kind"] = "none" if "none" in self.kd_kinds else self.kd_kinds[0]
        return params

    def params_for(self, plan: CompressionPlan, dims: dict[str, int]) -> dict[str, Any] | None:
        """The parameters under which :meth:`sample` returns ``plan`` (same layers, same recovery),
        or None when the plan lies outside this space. Enqueued with them, a warm start (the
        decision-tree baseline) informs the sampler like any sampled trial."""
        import optuna

        n, heads_total = dims["num_layers"], dims["num_heads"]
        width, hidden = dims["intermediate_size"], dims["hidden_size"]
        sizes = (n, heads_total, width, hidden)
        try:
            target = plan.resolve(*sizes)
        except UserError:
            return None

        params: dict[str, Any] = {}
        head_dim = hidden // heads_total
        kept = 0
        for i, layer in enumerate(target):
            must_keep = i in self.always_keep or (n - i) <= self.min_kept - kept
            if must_keep and not layer.keep:
                return None
            if not must_keep and len(self.keep) > 1:
                params[f"layer{i}.keep"] = layer.keep
            elif layer.keep not in self.keep:
                return None
            if not layer.keep:
                continue
            kept += 1
            scope = "all" if self.tie_layers else f"layer{i}"
            knobs = {"heads": (self.heads, lambda c: max(1, round(c * heads_total)) == layer.heads),
                     "ffn": (self.ffn, lambda c: max(1, round(c * width)) == layer.ffn)}
            for group, members in GROUPS.items():
                full = min(hidden, layer.heads * head_dim if group == "attention" else layer.ffn)
                knobs[f"rank.{group}"] = (self.rank[group], lambda c, m=members, f=full: all(
                    layer.rank.get(g) == (None if c is None else max(1, min(round(c * f), f))) for g in m))
                knobs[f"dtype.{group}"] = (self.dtype[group], lambda c, m=members: all(layer.dtype[g] == c for g in m))
                knobs[f"sparsity.{group}"] = (self.sparsity[group],
                                              lambda c, m=members: all(layer.sparsity.get(g, 0.0) == c for g in m))
            for knob, (choices, fits) in knobs.items():
                value = next((c for c in choices if fits(c)), _MISSING)
                name = f"{scope}.{knob}"
                if value is _MISSING or params.get(name, value) != value:  # not a choice, or tied knobs differ
                    return None
                if len(choices) > 1:
                    params[name] = value
        # no recovery is "none", whatever the other settings of a zero-step DistillConfig
        kind = next((k for k in self.kd_kinds if (plan.distill.steps == 0 and k == "none")
                     or self.distill(k) == plan.distill), None)
        if kind is None:
            return None
        if len(self.kd_kinds) > 1:
            params["distill.kind"] = kind
        try:
            sampled = self.sample(optuna.trial.FixedTrial(params), dims)  # the proof: same plan back
        except ValueError:  # a knob the plan does not set
            return None
        return params if sampled.resolve(*sizes) == target else None

    def size(self, num_layers: int) -> int:
        """Number of distinct knobs sampled (for reports)."""
        per_layer = sum(len(c) > 1 for c in (self.heads, self.ffn)) + sum(
            len(c[g]) > 1 for c in (self.rank, self.dtype, self.sparsity) for g in GROUPS)
        depth = num_layers if len(self.keep) > 1 else 0
        return depth + (per_layer if self.tie_layers else per_layer * num_layers) + (len(self.kd_kinds) > 1)


_MISSING = object()

#: A low-rank or sparsity choice stays in a space only if it cuts the predicted cost of a layer by
#: at least this share (see :meth:`SearchSpace.prepare`).
PAYING = 0.25


def fp32_on(space, runtime: str):
    """``space`` with only fp32 linears when ``runtime`` has no int8 kernels (its models would run
    the int8 linears in fp32 there, so their int8 accuracy would not be what is served)."""
    from dataclasses import replace

    from ..latency.runtime import runtime_class

    if runtime_class(runtime).int8 or all(v == ("fp32",) for v in space.dtype.values()):
        return space
    return replace(space, dtype={g: ("fp32",) for g in space.dtype})


def _pays(predictor, dims, members, knob: str, value, dtypes, dropped: list, label: str) -> bool:
    """Whether setting ``knob`` of the linears ``members`` to ``value`` in every layer cuts the
    predicted cost of a layer by at least :data:`PAYING`, for some dtype the space allows."""
    from ..plan import LINEAR_GROUPS, ResolvedLayer

    n, heads, ffn, hidden = dims["num_layers"], dims["num_heads"], dims["intermediate_size"], dims["hidden_size"]
    inner = {"q": hidden, "k": hidden, "v": hidden, "attn_out": hidden, "ffn_in": min(hidden, ffn),
             "ffn_out": min(hidden, ffn)}
    best = 0.0
    for dtype in dtypes:
        def layers(count: int, change: bool) -> list:
            out = []
            for i in range(n):
                rank = dict.fromkeys(LINEAR_GROUPS)
                sparsity = dict.fromkeys(LINEAR_GROUPS, 0.0)
                if change:
                    for g in members:
                        if knob == "rank":
                            rank[g] = max(1, round(value * inner[g]))
                        else:
                            sparsity[g] = float(value)
                out.append(ResolvedLayer(i, i < count, heads if i < count else 0, ffn if i < count else 0, rank,
                                         dict.fromkeys(LINEAR_GROUPS, dtype), sparsity))
            return out

        full = predictor.predict(layers(n, False))
        layer_cost = (full - predictor.predict(layers(n - 1, False))) if n > 1 else full
        saved = (full - predictor.predict(layers(n, True))) / n
        best = max(best, saved / layer_cost if layer_cost > 0 else 0.0)
    if best < PAYING:
        dropped.append(f"{label}: cuts a layer's predicted cost by {best:.0%} (< {PAYING:.0%})")
        return False
    return True
