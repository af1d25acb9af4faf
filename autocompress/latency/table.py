"""The latency table: costs fitted to measured plans (non-negative least squares on relative
error, cross-validated), the :class:`LatencyPredictor` that reads a table, and where a table is
cached (see :mod:`~autocompress.latency.predictor`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import cache
from ..errors import UserError
from ..plan import CompressionPlan, ResolvedLayer
from . import target as target_mod
from .features import FEATURE_NAMES, FEATURES, INT8_FEATURES, Grid, plan_features, reference_plans, resolve_plan
from .target import Target

VERSION = 2
_INT8 = np.array([name in INT8_FEATURES for name in FEATURE_NAMES])


# ----------------------------------------------------------------------------------- fitting


def fit_costs(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative costs ``c`` minimising ``sum(((X @ c - y) / y) ** 2)`` (relative error)."""
    from scipy.optimize import nnls

    X, y = np.asarray(X, float), np.asarray(y, float)
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    c, _ = nnls(X / scale / y[:, None], np.ones(len(y)))
    return c / scale


def _errors(pred: np.ndarray, y: np.ndarray) -> dict:
    e = (np.asarray(pred) - y) / y
    return {"mape": float(np.abs(e).mean()), "within_10pct": float((np.abs(e) <= 0.10).mean()),
            "worst": float(e[np.argmax(np.abs(e))])}


def cross_validate(X: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0) -> dict:
    """Error of :func:`fit_costs` on held-out plans (``folds``-fold cross-validation)."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    if len(y) < 2 * folds:
        return {}
    idx = np.random.default_rng(seed).permutation(len(y))
    pred = np.zeros(len(y))
    for part in np.array_split(idx, folds):
        train = np.setdiff1d(idx, part)
        pred[part] = X[part] @ fit_costs(X[train], y[train])
    return _errors(pred, y)


def fit_table(resolved_plans: Sequence[Sequence[ResolvedLayer]], measured_ms: Sequence[float], dims: Mapping,
              target: Target, grid: Grid | None = None, *, names: Sequence[str] | None = None,
              exclude: Sequence[bool] | None = None) -> dict:
    """A table (plain data) fitted to plans measured end to end; ``exclude`` marks measurements
    not to fit on (e.g. taken while other processes computed), if enough others remain."""
    X = np.array([plan_features(r, dims, target) for r in resolved_plans], float)
    y = np.asarray(measured_ms, float)
    use = np.ones(len(y), bool) if exclude is None else ~np.asarray(exclude, bool)
    if use.sum() < max(3, len(y) // 2):
        use[:] = True
    costs = fit_costs(X[use], y[use])
    pred = X @ costs
    names = list(names) if names is not None else [f"plan-{i}" for i in range(len(y))]
    rows = [{"plan": n, "layers": int(sum(r.keep for r in res)), "measured": float(m), "predicted": float(p),
             "used": bool(u), "features": [float(v) for v in x]}
            for n, res, m, p, u, x in zip(names, resolved_plans, y, pred, use, X)]
    return {"version": VERSION, "target": target.to_dict(), "device": target_mod.device_fingerprint(),
            "dims": dict(dims), "grid": asdict(grid or Grid()), "features": list(FEATURE_NAMES),
            "costs": dict(zip(FEATURE_NAMES, map(float, costs))),
            "fit": {**_errors(pred[use], y[use]), "plans": int(use.sum())},
            "cross_validation": cross_validate(X[use], y[use]), "plans": rows}


# ----------------------------------------------------------------------------------- predictor


class LatencyPredictor:
    """Predicts milliseconds per call for plans on one model architecture and one target: the sum
    of the plan's features times the fitted costs (see :mod:`~autocompress.latency.predictor`)."""

    def __init__(self, table: dict, *, path: Path | None = None, from_cache: bool = False, scale: float = 1.0,
                 int8_scale: float = 1.0, siblings: Mapping[str, "LatencyPredictor"] | None = None):
        self.table = table
        #: predictors of the same model and target in other arithmetic (``{"bf16": ...}``): a plan
        #: with ``precision: {dtype: bf16}`` is predicted by the bf16 table (see :meth:`predict`)
        self.siblings = dict(siblings or {})
        self.dims = table["dims"]
        self.path = path
        self.from_cache = from_cache
        self.scale = float(scale)  # the machine's speed now relative to calibration (see :func:`anchor`)
        self.int8_scale = float(int8_scale)  # int8 kernels' cost now relative to the fit, on top of scale
        self.costs = np.array([float(table["costs"].get(n, 0.0)) for n in FEATURE_NAMES]) * self.scale
        self.costs[_INT8] *= self.int8_scale

    def __repr__(self) -> str:
        return (f"LatencyPredictor(target={self.target.describe()!r}, model={self.dims.get('model_type')}"
                f"-{self.dims.get('num_layers')}L, scale={self.scale:.3f}, int8 scale={self.int8_scale:.3f})")

    def measured_at_calibration(self) -> dict[str, float]:
        """Latency (ms) of each calibration plan as measured when the table was built."""
        return {r["plan"]: r["measured"] for r in self.table.get("plans", [])}

    def anchored(self, now_ms: Mapping[str, float]) -> "LatencyPredictor":
        """This predictor scaled by how fast the machine runs now, from calibration plans measured
        now (``{plan name: ms}``, e.g. the reference plans): every cost by the mean ratio of the
        fp32 plans' latencies now / at calibration, then the int8 kernels' costs by whatever makes
        the all-int8 reference plan (``int8``) predict what it measures now (within 0.5–2x). A
        linear fit over plans of every kind leaves int8 kernels' cost off by tens of percent on
        some machines (torch here: the all-int8 plan predicted 15.6 ms, measured 12.4 ms), and the
        allocator then removes more than a target needs. Unchanged when none was measured at
        calibration."""
        then = self.measured_at_calibration()
        ratios = {name: ms / then[name] for name, ms in now_ms.items() if then.get(name)}
        fp32 = [r for name, r in ratios.items() if name != "int8"] or list(ratios.values())
        scale = float(np.mean(fp32)) if fp32 else 1.0
        int8_scale = 1.0
        if "int8" in ratios:
            plan = next(p for p in reference_plans(self.dims) if p.name == "int8")
            features = plan_features(resolve_plan(plan, self.dims), self.dims, self.target)
            base = np.array([float(self.table["costs"].get(n, 0.0)) for n in FEATURE_NAMES]) * scale
            fixed, int8 = features[~_INT8] @ base[~_INT8], features[_INT8] @ base[_INT8]
            if int8 > 0:
                int8_scale = float(np.clip((now_ms["int8"] - fixed) / int8, 0.5, 2.0))
        return LatencyPredictor(self.table, path=self.path, from_cache=self.from_cache, scale=scale,
                                int8_scale=int8_scale, siblings=self.siblings)

    def rescaled(self, factor: float) -> "LatencyPredictor":
        """This predictor with every cost multiplied by ``factor`` (e.g. to put predictions made at
        the machine's speed now into a run's frame measured earlier)."""
        return LatencyPredictor(self.table, path=self.path, from_cache=self.from_cache, scale=self.scale * factor,
                                int8_scale=self.int8_scale,
                                siblings={k: p.rescaled(factor) for k, p in self.siblings.items()})

    def with_sibling(self, other: "LatencyPredictor") -> "LatencyPredictor":
        """This predictor, predicting plans in ``other``'s arithmetic (its target's ``precision``)
        with ``other``."""
        return LatencyPredictor(self.table, path=self.path, from_cache=self.from_cache, scale=self.scale,
                                int8_scale=self.int8_scale,
                                siblings={**self.siblings, other.target.precision: other})

    def precisions(self) -> tuple[str, ...]:
        """The arithmetic this predictor can predict: its own, then its siblings'."""
        return (self.target.precision, *self.siblings)

    def in_precision(self, precision: str) -> "LatencyPredictor":
        """The predictor of plans in ``precision`` (this one, or the sibling)."""
        if precision == self.target.precision:
            return self
        if precision not in self.siblings:
            raise UserError(f"no {precision} latency table for {self.target.describe()}: the search calibrates one "
                            f"when its space offers precision {precision} on a runtime with {precision} kernels")
        return self.siblings[precision]

    @property
    def target(self) -> Target:
        return Target(**self.table["target"])

    def _check(self, resolved: Sequence[ResolvedLayer]) -> None:
        d = self.dims
        if len(resolved) != d["num_layers"]:
            raise UserError(f"the plan was resolved for {len(resolved)} layers but this latency table is for "
                            f"{d['num_layers']}")
        for r in resolved:
            if r.keep and (r.heads > d["num_heads"] or r.ffn > d["intermediate_size"]):
                raise UserError(f"layer {r.index}: {r.heads} heads / FFN {r.ffn} exceed the table's model "
                                f"({d['num_heads']} heads, FFN {d['intermediate_size']})")

    def _resolved(self, resolved: Sequence[ResolvedLayer] | CompressionPlan) -> Sequence[ResolvedLayer]:
        if isinstance(resolved, CompressionPlan):
            resolved = resolve_plan(resolved, self.dims)
        self._check(resolved)
        return resolved

    def features(self, resolved: Sequence[ResolvedLayer] | CompressionPlan) -> np.ndarray:
        return plan_features(self._resolved(resolved), self.dims, self.target)

    def breakdown(self, resolved: Sequence[ResolvedLayer] | CompressionPlan) -> dict[str, float]:
        """Milliseconds per cost term (they sum to :meth:`predict`)."""
        return dict(zip(FEATURE_NAMES, map(float, self.features(resolved) * self.costs)))

    def predict(self, resolved: Sequence[ResolvedLayer] | CompressionPlan, precision: str | None = None) -> float:
        """Predicted latency (ms) of a resolved plan (a list of :class:`ResolvedLayer`) or a plan,
        in ``precision``: by default a plan's ``precision`` technique when it sets one, otherwise
        the target's (every plan timed on a bf16 target runs in bf16)."""
        if precision is None and isinstance(resolved, CompressionPlan) and "precision" in resolved.techniques:
            precision = resolved.technique("precision").dtype
        if precision is not None and precision != self.target.precision:
            return self.in_precision(precision).predict(resolved)
        return float(self.features(resolved) @ self.costs)

    def predict_plan(self, plan: CompressionPlan) -> float:
        return self.predict(plan)

    def summary(self) -> dict:
        t = self.table
        return {"path": str(self.path) if self.path else None, "target": t["target"], "dims": self.dims,
                "costs": t["costs"], "units": {n: u for n, u, _ in FEATURES}, "fit": t.get("fit", {}),
                "cross_validation": t.get("cross_validation", {}), "scale": self.scale,
                "keep_all_ms": {"predicted": self.predict(CompressionPlan.keep_all()),
                                "measured": self.measured_at_calibration().get("keep-all")},
                "build_seconds": t.get("build_seconds"), "contended_passes": t.get("contended_passes", 0),
                "pass_spread": t.get("pass_spread")}

    def warnings(self) -> list[str]:
        """What makes this table's predictions doubtful, one line each: printed by every command
        that builds a table (``search`` too), and by ``latency calibrate``."""
        from .measure import NOISY_PASSES

        out, t = [], self.table
        if t.get("contended_passes"):
            out.append(f"{t['contended_passes']} measurements ran while other processes used these cores; "
                       "re-run 'autocompress latency calibrate --force' on a quiet machine")
        spread = t.get("pass_spread")
        if spread is not None and spread > NOISY_PASSES:
            out.append(f"the two passes of a plan disagreed by a median {spread:.1%} (the machine's speed varied "
                       "during calibration), so expect predictions off by about as much; re-run "
                       "'autocompress latency calibrate --force' when the machine is steadier")
        return out


# ----------------------------------------------------------------------------------- cache


def cache_key(dims: Mapping, target: Target, grid: Grid) -> dict:
    """Everything the table depends on: device fingerprint, target, architecture dims, grid."""
    return {"version": VERSION, "device": target_mod.device_fingerprint(), "target": target.to_dict(),
            "model": dict(dims), "grid": asdict(grid)}


def cache_path(dims: Mapping, target: Target, grid: Grid) -> Path:
    key = cache_key(dims, target, grid)
    name = f"{dims['model_type']}-{target.runtime}-{cache.sha256_json(key)[:20]}.json"
    return cache.home() / "latency" / name
