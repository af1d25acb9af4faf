"""The default search space: a few global knobs (target, int8 policy, precision, depth/width bias,
layer order, width scoring, fit, KD kind), each sample allocated to a per-layer plan by
:func:`.allocate.allocate`; the one-minute recipes as its first points."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import UserError
from ..plan import KD_LR, CompressionPlan, DistillConfig
from .allocate import (FITS, LAYER_ORDERS, NEAR_BUDGET, RECIPE_SLACK, WIDTHS, Allocated, Allocation, allocate,
                       teacher_latency, uniform_latency)
from .precision import fastest_arithmetic, paying_precisions
from .space import fp32_on
from .space_file import (DISTILL_KEYS, GROUPS, KD_KINDS, Fidelity, check_keys, choice_list, int_at_least, positive,
                         read_sections, recovery_options, suggest, suggest_techniques, technique_choices,
                         technique_param)
from .unit_importance import UnitImportance, task_importance

_TOP = ("schema", "name", "kind", "description", "allocation", "techniques", "distill", "fidelity")
#: The even FFN cut recipe stops here: a hand FFN cut to a quarter lost 2 validation points
#: against one to a half (int8, 300 KD steps: .8337 vs .8541), so past it an engineer drops layers.
MIN_FFN_RECIPE = 0.25
#: ... and keeps at most this much of each FFN, even when the budget allows more: on the default
#: task (int8, 300 steps of logits + hidden KD) the FFN cut to half reached .8541 / .8557
#: (validation / test), every layer whole with the same KD .8471 / .8416, and int8 alone
#: .8376 / .8447 (one standard error is about 1.1 points). A looser budget keeps the cut at half
#: (the other recipes and the sampler use the rest of the budget).
EVEN_FFN_KEEPS = 0.5
#: The one-minute recipes: (name, layer order, width, depth bias end, target without a latency
#: budget as a fraction of the whole model's predicted latency in the recipes' arithmetic, see
#: below). Without a budget they spread along
#: the front where an engineer would write them: the even FFN cut where int8 with every FFN at
#: :data:`EVEN_FFN_KEEPS` lands (``None``; about 1.9x on torch), the top layers dropped at 2.1x,
#: every other layer at 3x, and every other layer with the FFNs cut to fit at 4x (the decision
#: tree's 3x-4x plan). The layer recipes aim :data:`RECIPE_SLACK` under their speed-up
#: so that they land inside it (the anchored predictor misses by a few percent; aimed at exactly
#: 1/3 and 1/4 they landed at 2.9x and 3.9x on torch, runs/planner12). The even cut does not: on
#: torch int8 with FFNs halved predicts 0.535 of the teacher, and reaching 0.48 cuts most FFNs to
#: a quarter (a hand cut to a quarter lost 1.4 validation points against one to a half) for 10%
#: of the latency. Measured with every other layer at 1/3 and the top layers dropped at 1/4 only
#: (runs/planner12, torch): the front's 4x point kept layers 0, 1, 2 (.789 validation), while the
#: decision tree's 0, 2, 4 with FFNs cut to a quarter reached .8078. With the top layers dropped
#: at 4x beside every other layer with the FFN cut (runs/planner15), that recipe was screened out
#: on both runtimes, and the front had no member between 1.9x and 3x, where hand plans dropping
#: two layers reach .844-.848. Aimed at 2.25x, the top-layers recipe kept four layers with wide
#: FFNs (.8400 / .8447 and .8306 / .8431 validation / test in runs/planner21; .8259 / .8384
#: rebuilt in runs/recipes22), and no front dominated the example ``minilm-mixed`` (five layers,
#: FFNs tapered: .8478 / .8408 at 2.2x). Aimed at 2.1x it keeps five layers with every FFN cut
#: to about half (predicted 2.19x): .8455 / .8502 beside .8259 / .8384 for the 2.25x plan in the
#: same session (int8, 419 and 450 KD steps; one standard error is ~1.1 points), and aimed at 2.0x
#: five layers with FFNs at ~0.7 reached .8306 / .8376. Under a budget every recipe aims at it
#: (recipes that allocate to the same plan are enqueued once).
#: The layer targets are shares of the whole model in the recipes' arithmetic (tuned where int8
#: read 0.62 of the teacher: the same targets there). As shares of the teacher they collapsed where
#: VNNI int8 or bf16 alone reads 0.3 of it: the top-layers and every-other recipes allocated the
#: whole model and were left out, and the 4x one kept five layers (runs/planner24, first start).
#: A fifth, a third of the layers at 5x, measured -1 to 17% faster than the 4x one, 1.8-3.6 points
#: below it (runs/planner28): the per-layer space's 1.7 ms plans cut heads and rank too.
TUNED_WHOLE = 0.62
RECIPES = (("recipe: even FFN cut", "top_down", "even", "low", None),
           ("recipe: every other layer", "spread", "narrow", "high", 1 / 3 / TUNED_WHOLE),
           ("recipe: every other layer, FFN cut", "spread", "narrow", "high", 1 / 4 / TUNED_WHOLE),
           ("recipe: drop the top layers", "top_down", "narrow", "high", 1 / 2.1 / TUNED_WHOLE))
EVEN_RECIPE = RECIPES[0][0]

#: About equal recovery time: a plan predicted at 1/k of the whole model's latency (same int8
#: policy) recovers for min(k, this) × ``distill.steps`` KD steps. A KD step gets cheaper more
#: slowly than the predicted latency: on the default model (torch, runs/planner17-18 s1) it cost
#: 1.8x less for three layers with FFNs cut than for every FFN halved, where the predicted latency
#: fell 2.2-2.3x, so the lighter plans' recoveries took 1.16-1.28x the even cut's (155 s against
#: 189 s and 198 s). Heavily cut plans are the ones that gain from it: polished
#: from 300 to 1200 steps, a four-layer plan rose from .8165 to .8369 validation (KD lr 1e-4, the
#: README command on v8), every FFN halved from .8549 to .8620 (lr 3e-4, runs/planner16). 1 gives
#: every plan ``steps``.
MAX_STEPS_SCALE = 3.0

_ALLOCATION = ("target", "depth_bias", "layer_order", "width", "fit", "dtype", "ffn_groups", "always_keep", "min_kept")


@dataclass(frozen=True)
class AllocatedSpace:
    """A search space of global knobs; each sample is allocated to a per-layer plan.

    Needs the task's importance and the target's predictor: :meth:`prepare` binds them (the search
    does it once, before the first trial)."""

    name: str = "allocated"
    description: str = ""
    target: tuple[float, float] = (0.15, 1.0)
    depth_bias: tuple[float, float] = (-1.0, 2.0)
    layer_orders: tuple[str, ...] = LAYER_ORDERS
    widths: tuple[str, ...] = WIDTHS
    fits: tuple[str, ...] = FITS
    dtype: dict[str, tuple] = field(default_factory=lambda: {g: ("fp32", "int8") for g in GROUPS})
    techniques: dict[str, dict[str, tuple]] = field(default_factory=dict)  # whole-model: key → field → values
    ffn_groups: int = 16
    always_keep: tuple[int, ...] = ()
    min_kept: int = 1
    kd_kinds: tuple[str, ...] = ("logits+hidden",)
    kd_steps: int = 300
    kd_lr: float = KD_LR
    kd_temperature: float = 2.0
    kd_batch_size: int = 32
    kd_scale: float = MAX_STEPS_SCALE  # distill.max_steps_scale: see MAX_STEPS_SCALE
    fidelity: Fidelity = Fidelity()
    source: str = "space"
    budgeted: bool = False  # the target range was narrowed to a latency budget (with_budget)
    size_budgeted: bool = False  # the search has a size budget: the recipes use techniques that save size
    importance: UnitImportance | None = field(default=None, compare=False, repr=False)
    predictor: Any = field(default=None, compare=False, repr=False)
    dropped: tuple[str, ...] = ()  # what prepare() left out because it cannot pay on the target, and why

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "space") -> AllocatedSpace:
        alloc, distill, fidelity = read_sections(data, source, _TOP, "allocation", _ALLOCATION,
                                                 DISTILL_KEYS + ("max_steps_scale",))
        where = f"{source}: allocation"
        dtype = alloc.get("dtype") or {g: ["fp32", "int8"] for g in GROUPS}
        check_keys(dtype, tuple(GROUPS), f"{where}.dtype")
        return cls(
            name=str(data.get("name") or "allocated"), description=str(data.get("description", "")),
            target=_range(alloc.get("target", [0.15, 1.0]), f"{where}.target", 0.0, 1.0),
            depth_bias=_range(alloc.get("depth_bias", [-1.0, 2.0]), f"{where}.depth_bias", -math.inf, math.inf),
            layer_orders=choice_list(alloc, "layer_order", LAYER_ORDERS, where, lambda v: v in LAYER_ORDERS,
                                  f"one of {', '.join(LAYER_ORDERS)}"),
            widths=choice_list(alloc, "width", WIDTHS, where, lambda v: v in WIDTHS, f"one of {', '.join(WIDTHS)}"),
            fits=choice_list(alloc, "fit", FITS, where, lambda v: v in FITS, f"one of {', '.join(FITS)}"),
            dtype={g: choice_list(dtype, g, ("fp32",), f"{where}.dtype", lambda v: v in ("fp32", "int8"), "fp32 or int8")
                   for g in GROUPS},
            techniques=technique_choices(data, source),
            ffn_groups=int_at_least(alloc.get("ffn_groups", 16), f"{where}.ffn_groups", 1),
            always_keep=tuple(int_at_least(i, f"{where}.always_keep", 0) for i in alloc.get("always_keep", ())),
            min_kept=int_at_least(alloc.get("min_kept", 1), f"{where}.min_kept", 1),
            **recovery_options(distill, source, ("logits+hidden",),
                               tuple(k for k in KD_KINDS if k != "none"), min_steps=1),
            kd_scale=_scale(distill.get("max_steps_scale", MAX_STEPS_SCALE), f"{source}: distill.max_steps_scale"),
            fidelity=Fidelity.from_dict(fidelity, source, screen_steps=80),
            source=source)

    def check_model(self, num_layers: int) -> None:
        bad = [i for i in self.always_keep if i >= num_layers]
        if bad:
            raise UserError(f"{self.source}: allocation.always_keep {bad} but the model has {num_layers} layers")

    def prepare(self, *, ctx=None, predictor=None, importance: UnitImportance | None = None,
                budget_ms: float | None = None, size_mb: float | None = None, progress=False) -> AllocatedSpace:
        """This space bound to the task's importance (measured from ``ctx`` unless given) and the
        target's latency predictor; with a latency budget, targets are sampled under it
        (:meth:`with_budget`); with a size budget, the recipes use the techniques that save size
        alone (int8 embeddings, when the space offers them); ``progress``: importance's bar."""
        if predictor is None:
            raise UserError(f"{self.source}: an allocated space needs a latency predictor for the target")
        space = fp32_on(replace(self, importance=importance or task_importance(ctx, progress=progress),
                                predictor=predictor, size_budgeted=size_mb is not None), predictor.target.runtime)
        space = paying_precisions(space)
        if budget_ms is None:
            return space
        teacher_ms = teacher_latency(predictor.predict, predictor.dims)
        return space.with_budget(budget_ms / teacher_ms)

    def offered_precisions(self) -> tuple[str, ...]:
        """The arithmetic this space lets plans choose (``techniques.precision.dtype``)."""
        return tuple(self.techniques.get("precision", {}).get("dtype", ("fp32",)))

    def _predict(self, precision: str = "fp32"):
        """``predict(resolved)`` of plans in ``precision`` (ms, the run's frame)."""
        return self.predictor.in_precision(precision).predict

    def with_budget(self, fraction: float | None) -> AllocatedSpace:
        """Sample targets near a latency budget (``fraction`` of the teacher's predicted latency):
        the most accurate plan under a budget uses nearly all of it, so targets run from
        :data:`NEAR_BUDGET` ``[0]`` to ``[1]`` times the budget (the anchored predictor misses by a
        few percent either way; the measured latency decides feasibility). Measured on the
        default task at 3x, when targets ran from half the budget: 11 of 13 sampled candidates
        landed at 38–75% of the budget, and screened at .56–.72, below every plan near it.

        When int8 alone (every layer whole) already meets the budget, every target near it
        allocates to that one plan; the range then reaches down to ``NEAR_BUDGET[0]`` times the
        int8 plan's latency instead, so the search sees structural plans with their recovery
        (ONNX Runtime at the one-line int8's budget, 1.69x: our int8 plan reads 0.55 of the
        teacher, and a hand FFN cut to half with KD beat it by 1.7 validation points)."""
        if fraction is None:
            return self
        lo, hi = NEAR_BUDGET
        floor = min(fraction, self.quantized_fraction())
        return replace(self, target=(min(lo * floor, self.target[1]), min(self.target[1], hi * fraction)),
                       budgeted=True)

    def sampled_target(self) -> tuple[float, float]:
        """The range targets are sampled from: :attr:`target`, which without a budget stops at the
        predicted latency of the int8 plan (every layer whole, int8 wherever allowed). Above it
        every int8 sample allocates to that one plan (on the default model the decision tree's
        warm start): 7 of 26 sampled full runs in runs/planner17 were that plan again."""
        lo, hi = self.target
        if self.budgeted or self.predictor is None:
            return lo, hi
        q = self.quantized_fraction()
        return (lo, q) if lo < q < hi else (lo, hi)

    def quantized_fraction(self, ffn: float = 1.0) -> float:
        """The predicted latency of every layer kept (``ffn`` of each FFN), int8 wherever the space
        allows it, as a fraction of the teacher's; 1.0 before :meth:`prepare`."""
        if self.predictor is None:
            return 1.0
        dims = self.predictor.dims
        dtype, precision = self.fastest_arithmetic()
        return uniform_latency(self._predict(precision), dims, dtype, ffn) / teacher_latency(self.predictor.predict, dims)

    def fastest_arithmetic(self) -> tuple[dict[str, str], str]:
        """The linear dtypes and the precision the recipes use (:func:`.precision.fastest_arithmetic`)."""
        return fastest_arithmetic(self)

    def recipes(self) -> list[tuple[str, dict[str, Any]]]:
        """The plans an engineer writes in a minute, as points of this space (:data:`RECIPES`): at
        the budget when one narrowed the range, otherwise spread over shares of the whole model
        in the recipes' arithmetic (about 2x to 4x where int8 reads 0.62 of the teacher); int8 where
        allowed, the first KD kind, fitted exactly (the last milliseconds come from width, not from
        one more layer): an even FFN cut (to the budget, but to no more than
        :data:`EVEN_FFN_KEEPS` of each FFN), every other layer from the top (LayerDrop), every
        other layer with the FFNs cut to fit, and the top layers dropped (keep the bottom). With
        the ``ffn`` width (when the space has it) their width comes from FFN neurons only, as a
        hand plan's does. The even FFN cut is enqueued only when it keeps every layer and at least
        :data:`MIN_FFN_RECIPE` of each FFN (past that, an engineer drops layers); a layer recipe
        only when it drops a layer.
        Enqueued as warm starts, they put the one-minute answers on the front from the start and
        teach the sampler where they lie; a recipe needing a knob value the space does not offer
        is left out."""
        lo, hi = self.target
        # at the budget (RECIPE_SLACK): see its comment for what 1.03 did
        at_budget = hi / NEAR_BUDGET[1] * RECIPE_SLACK if self.budgeted else None
        common: dict[str, Any] = {}
        dtype, precision = self.fastest_arithmetic()
        for g in GROUPS:
            if len(self.dtype[g]) > 1:
                common[f"dtype.{g}"] = dtype[g]
        if len(self.kd_kinds) > 1:
            common["distill.kind"] = self.kd_kinds[0]
        common.update(self._recipe_techniques())
        if len(self.offered_precisions()) > 1:
            common[technique_param("precision", "dtype", self.techniques["precision"])] = precision
        blo, bhi = self.depth_bias
        widths = {"narrow": "ffn" if "ffn" in self.widths else "measured",
                  "even": "ffn" if "ffn" in self.widths else "per_layer"}
        out = []
        for name, order, width, bias, spread in RECIPES:
            width = widths[width]
            if name == EVEN_RECIPE and width != "ffn":
                name = "recipe: even width cut"
            if order not in self.layer_orders or width not in self.widths:
                continue
            if at_budget is not None:
                target = at_budget
            elif spread is not None:  # of the whole model in the recipes' arithmetic
                target = spread * self.quantized_fraction() * RECIPE_SLACK
            else:
                target = self.quantized_fraction(EVEN_FFN_KEEPS)
            if name == EVEN_RECIPE:
                target = min(target, self.quantized_fraction(EVEN_FFN_KEEPS))
            params = dict(common)
            if hi > lo:
                params["target"] = min(hi, max(lo, target))
            if bhi > blo:
                params["depth_bias"] = blo if bias == "low" else bhi
            if len(self.layer_orders) > 1:
                params["layer_order"] = order
            if len(self.widths) > 1:
                params["width"] = width
            if len(self.fits) > 1:
                params["fit"] = "exact" if "exact" in self.fits else self.fits[0]
            out.append((name, params))
        return self._distinct(out)

    def _recipe_techniques(self) -> dict[str, Any]:
        """The recipes' technique parameters: a technique that saves size alone (int8 embeddings:
        ~0.2-0.4 points here) only under a size budget (its first value that changes the model),
        otherwise its default when the space offers it."""
        from ..techniques import technique_class

        params = {}
        for key, fields in self.techniques.items():
            cls = technique_class(key)
            for name, values in fields.items():
                if len(values) < 2:
                    continue
                default = getattr(cls(), name)
                changed = [v for v in values if v != default]
                use = changed[0] if self.size_budgeted and cls.saves == ("size",) and changed else \
                    (default if default in values else values[0])
                params[technique_param(key, name, fields)] = use
        return params

    def _distinct(self, recipes: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """The recipes less those that allocate to the same plan as an earlier one (with the exact
        fit, "every other layer" and "drop the top layers" agree when one layer goes), and those
        that are not what they say: an even FFN cut that had to drop a layer or cut an FFN below
        :data:`MIN_FFN_RECIPE`, a layer recipe that drops none; all of them before :meth:`prepare`."""
        if self.importance is None or self.predictor is None:
            return recipes
        from optuna.trial import FixedTrial

        width = self.predictor.dims["intermediate_size"]
        seen, out = [], []
        for name, params in recipes:
            alloc, kind = self.knobs(FixedTrial(params))
            layers = self.allocate(alloc, kind, self.predictor.dims).plan.layers
            if name == EVEN_RECIPE and any(
                    not p.keep or (p.ffn is not None and p.ffn < MIN_FFN_RECIPE * width) for p in layers.values()):
                continue
            if "layer" in name and all(p.keep for p in layers.values()):
                continue
            if layers not in seen:
                seen.append(layers)
                out.append((name, params))
        return out

    def distill(self, kind: str) -> DistillConfig:
        return DistillConfig(steps=self.kd_steps, lr=self.kd_lr, batch_size=self.kd_batch_size,
                             temperature=self.kd_temperature, weights={"logits": 0.0, **KD_KINDS[kind]})

    def knobs(self, trial) -> tuple[Allocation, str]:
        lo, hi = self.sampled_target()
        target = trial.suggest_float("target", lo, hi, log=True) if hi > lo else hi
        blo, bhi = self.depth_bias
        bias = trial.suggest_float("depth_bias", blo, bhi) if bhi > blo else blo
        order = suggest(trial, "layer_order", self.layer_orders)
        width = suggest(trial, "width", self.widths)
        fit = suggest(trial, "fit", self.fits)
        dtype = {g: suggest(trial, f"dtype.{g}", self.dtype[g]) for g in GROUPS}
        kind = suggest(trial, "distill.kind", self.kd_kinds)
        techniques = suggest_techniques(trial, self.techniques)
        return Allocation(target=target, dtype=dtype, depth_bias=bias, layer_order=order, width=width, fit=fit,
                          ffn_groups=self.ffn_groups, techniques=techniques,
                          always_keep=self.always_keep, min_kept=self.min_kept), kind

    def allocate(self, alloc: Allocation, kind: str, dims: Mapping, name: str = "allocated") -> Allocated:
        """The plan ``alloc`` allocates to, its recovery scaled to about equal time
        (:data:`MAX_STEPS_SCALE`)."""
        if self.importance is None or self.predictor is None:
            raise UserError(f"{self.source}: call prepare() before sampling an allocated space")
        precision = next((t.dtype for t in alloc.techniques if t.key == "precision"), "fp32")
        predict = self._predict(precision)
        result = allocate(alloc, self.importance, predict, dims, distill=self.distill(kind), name=name,
                          teacher_ms=teacher_latency(self.predictor.predict, dims))
        plan = result.plan
        if self.kd_scale > 1 and plan.distill.steps and result.predicted_ms > 0:
            scale = min(self.kd_scale, max(1.0, uniform_latency(predict, dims, alloc.dtype) / result.predicted_ms))
            steps = round(plan.distill.steps * scale)
            if steps != plan.distill.steps:
                plan = replace(plan, distill=replace(plan.distill, steps=steps),
                               description=f"{plan.description}; {steps} KD steps (x{scale:.2f}: equal recovery time)")
                result = replace(result, plan=plan)
        return result

    def sample(self, trial, dims: Mapping) -> CompressionPlan:
        alloc, kind = self.knobs(trial)
        result = self.allocate(alloc, kind, dims, name=f"trial-{trial.number}")
        trial.set_user_attr("allocation", {"target_ms": round(result.target_ms, 3),
                                           "predicted_ms": round(result.predicted_ms, 3), "meets": result.meets})
        return result.plan

    def keep_all_params(self, num_layers: int) -> None:
        """None: the teacher is enqueued as a whole plan (its target, 1.0, usually lies outside a
        budget-narrowed target range)."""
        return None

    def params_for(self, plan: CompressionPlan, dims: Mapping) -> dict[str, Any] | None:
        """Plans are allocated, not enumerated: an outside plan (the decision-tree baseline) is
        enqueued whole."""
        return None

    def size(self, num_layers: int) -> int:
        return sum(hi > lo for lo, hi in (self.target, self.depth_bias)) + sum(
            len(self.dtype[g]) > 1 for g in GROUPS) + (len(self.kd_kinds) > 1) + (len(self.layer_orders) > 1) \
            + (len(self.widths) > 1) + (len(self.fits) > 1) \
            + sum(len(values) > 1 for fields in self.techniques.values() for values in fields.values())


def _scale(value, where: str) -> float:
    value = positive(value, where)
    if value < 1:
        raise UserError(f"{where} = {value!r} but it must be at least 1 (1: every plan recovers for distill.steps)")
    return value


def _range(value, where: str, lo: float, hi: float) -> tuple[float, float]:
    values = value if isinstance(value, (list, tuple)) else [value, value]
    try:
        a, b = (float(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"{where} = {value!r} but it must be [low, high] (or one number)") from None
    if not (lo <= a <= b <= hi) or (lo == 0.0 and a <= 0):
        raise UserError(f"{where} = {value!r} but it must be low <= high within ({lo:g}, {hi:g}]")
    return (a, b)


__all__ = ["AllocatedSpace"]
