"""Predict a plan's latency in milliseconds without building the model.

**The model.** A plan's latency on one target (runtime, threads, batch, sequence length), device and
architecture is a sum of physically meaningful cost terms, each a *feature* of the plan (computed
from its structure alone) times a fitted non-negative cost:

- ``fixed`` (1 per call): embeddings, classifier head, per-call overhead;
- ``layers``: kept layers (layer norms, residual adds, reshapes, the kernels of a layer);
- ``attention``: GMACs of the attention core (Q·Kᵀ and softmax·V: ``2·tokens·seq·head_dim`` per head);
- ``activation``: million FFN activations (tokens × FFN width);
- ``fp32_linear`` / ``int8_linear``: GMACs of the fp32 / int8 linears (a low-rank linear is two
  matmuls, ``in·r + r·out``);
- ``fp32_matmuls`` / ``int8_matmuls``: how many linear kernels run (per-kernel overhead, which
  dominates small low-rank factors);
- ``quantized_inputs`` / ``quantized_elements``: the inputs int8 linears quantize dynamically, and
  their size (ONNX Runtime quantizes the input q/k/v share once; torch quantizes per linear);
- ``dtype_switches``: changes between fp32 and int8 along the linears in execution order;
- ``int8_used`` (0/1) and ``int8_layers``: one-off and per-layer costs of running int8 kernels at all.

**The fit.** 59 plans for ONNX Runtime, 113 for torch (keep-all, all int8, half the heads, half the
FFN, half the layers; 36 / 72 random plans, some cut to 1–2 layers; 18 / 36 plans of identical
layers, down to tiny and fully factorised ones), in random order, are built structurally (random
low-rank factors, no training) and measured end to end on the target, each in two passes a few
seconds apart, the faster kept (slow phases of a shared machine only ever add time; see
:func:`measure_plans`). The costs are fitted by non-negative least squares on *relative* error.
Every feature is non-decreasing in the heads, the FFN width and the layers kept (dropping a layer
can only remove dtype switches), and the costs are non-negative, so predictions are monotone in
heads, FFN width and layers kept. Unstructured sparsity is ignored: dense kernels do not get
faster with zeros. The table records the fit's error and a 5-fold cross-validated error (what to
expect on new plans), and every calibration plan's features and measurements.

What it does not model: a plan whose layers differ from each other runs a few percent slower
than one of identical layers with the same totals (measured on both runtimes; the cause is not
pinned down), which no feature monotone in heads and FFN width can express; and a shared
machine's speed drifts by several percent over minutes, which moves every measurement alike:
:func:`anchor` measures the five reference plans (a few seconds) and scales the predictions by
their mean latency ratio now / at calibration; the search and ``check`` use anchored predictions.

The table is cached on disk as ``cache.home()/latency/<key>.json`` where the key hashes the device
fingerprint, the target, the architecture and the grid.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .. import cache
from ..errors import UserError
from ..plan import LINEAR_GROUPS, CompressionPlan, LayerPlan, ResolvedLayer
from . import target as target_mod
from .exclusive import measurement_slot
from .measure import LatencyStats, measure, random_inputs, torch_threads
from .target import Target

VERSION = 2
QKV = ("q", "k", "v")

#: (name, unit of its cost, what it stands for)
FEATURES: tuple[tuple[str, str, str], ...] = (
    ("fixed", "ms/call", "embeddings, classifier head, per-call overhead"),
    ("layers", "ms/layer", "kept layers: layer norms, residual adds, reshapes"),
    ("attention", "ms/GMAC", "attention core (Q·Kᵀ, softmax·V)"),
    ("activation", "ms/M", "FFN activations"),
    ("fp32_linear", "ms/GMAC", "fp32 linears"),
    ("int8_linear", "ms/GMAC", "int8 linears"),
    ("fp32_matmuls", "ms/kernel", "fp32 linear kernels"),
    ("int8_matmuls", "ms/kernel", "int8 linear kernels"),
    ("quantized_inputs", "ms/input", "dynamically quantized inputs"),
    ("quantized_elements", "ms/M", "dynamically quantized elements"),
    ("dtype_switches", "ms/switch", "fp32 <-> int8 switches between linears"),
    ("int8_used", "ms/call", "any int8 linear at all"),
    ("int8_layers", "ms/layer", "layers with an int8 linear"),
)
FEATURE_NAMES = tuple(name for name, _, _ in FEATURES)
#: The cost terms of int8 kernels: :meth:`LatencyPredictor.anchored` scales them on their own.
INT8_FEATURES = ("int8_linear", "int8_matmuls", "quantized_inputs", "quantized_elements", "int8_used", "int8_layers")
_INT8 = np.array([name in INT8_FEATURES for name in FEATURE_NAMES])


# ----------------------------------------------------------------------------------- dims


def model_dims(model) -> dict:
    """Architecture dims of an (uncompressed) Hugging Face classifier."""
    from ..arch import get_adapter

    adapter = get_adapter(model)
    return {"model_type": model.config.model_type, "num_layers": adapter.num_layers(model),
            "num_heads": adapter.num_heads(model), "intermediate_size": adapter.intermediate_size(model),
            "hidden_size": adapter.hidden_size(model), "vocab_size": int(getattr(model.config, "vocab_size", 0))}


def _resolve(plan: CompressionPlan, dims: Mapping) -> list[ResolvedLayer]:
    return plan.resolve(dims["num_layers"], dims["num_heads"], dims["intermediate_size"], dims["hidden_size"])


def linear_shape(group: str, heads: int, ffn: int, dims: Mapping) -> tuple[int, int]:
    """(in, out) of a linear group in a layer with ``heads`` heads and FFN width ``ffn``."""
    hidden = dims["hidden_size"]
    width = heads * (hidden // dims["num_heads"])
    return {"q": (hidden, width), "k": (hidden, width), "v": (hidden, width), "attn_out": (width, hidden),
            "ffn_in": (hidden, ffn), "ffn_out": (ffn, hidden)}[group]


def max_rank(group: str, heads: int, ffn: int, dims: Mapping) -> int:
    return min(linear_shape(group, heads, ffn, dims))


# ----------------------------------------------------------------------------------- features


def plan_features(resolved: Sequence[ResolvedLayer], dims: Mapping, target: Target) -> np.ndarray:
    """The features of :data:`FEATURES` (in that order) of a resolved plan on ``target``."""
    f = dict.fromkeys(FEATURE_NAMES, 0.0)
    f["fixed"] = 1.0
    tokens = target.batch_size * target.seq_len
    head_dim = dims["hidden_size"] // dims["num_heads"]
    shared = target.runtime == "onnxruntime"  # ORT quantizes a tensor once for all its int8 consumers
    previous = None
    for r in resolved:
        if not r.keep:
            continue
        f["layers"] += 1
        f["attention"] += r.heads * 2 * tokens * target.seq_len * head_dim / 1e9
        f["activation"] += tokens * r.ffn / 1e6
        x_quantized = False  # the layer input, shared by q, k and v
        any_int8 = False
        for g in LINEAR_GROUPS:
            n_in, n_out = linear_shape(g, r.heads, r.ffn, dims)
            rank, dtype = r.rank.get(g), r.dtype.get(g, "fp32")
            mats = [(n_in, n_out)] if rank is None else [(n_in, rank), (rank, n_out)]
            kind = "int8" if dtype == "int8" else "fp32"
            for j, (a, b) in enumerate(mats):
                f[f"{kind}_linear"] += tokens * a * b / 1e9
                f[f"{kind}_matmuls"] += 1
                if kind == "int8":
                    if shared and g in QKV and j == 0:
                        if x_quantized:
                            continue
                        x_quantized = True
                    f["quantized_inputs"] += 1
                    f["quantized_elements"] += tokens * a / 1e6
            if previous is not None and kind != previous:
                f["dtype_switches"] += 1
            previous = kind
            any_int8 |= kind == "int8"
        if any_int8:
            f["int8_layers"] += 1
            f["int8_used"] = 1.0
    return np.array([f[n] for n in FEATURE_NAMES])


# ----------------------------------------------------------------------------------- plans

RANK_FRACTIONS = (1 / 8, 1 / 4, 1 / 2)


def random_plan(dims: Mapping, rng: np.random.Generator, *, name: str = "random") -> CompressionPlan:
    """A random plan: per layer kept or dropped, heads, FFN width, low-rank ranks and int8 groups.

    Each plan draws its own probabilities (share of layers dropped, of layers with fewer heads or a
    narrower FFN, of low-rank and of int8 linears), so the plans range from nearly untouched to
    heavily compressed. Ranks are 1/8, 1/4 or 1/2 of the largest rank the pruned linear allows.
    """
    L, H, W = dims["num_layers"], dims["num_heads"], dims["intermediate_size"]
    p_drop = rng.uniform(0.0, 0.5)
    p_heads, p_ffn = rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0)
    p_int8 = rng.choice([0.0, 1.0, rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0)])
    p_lowrank = rng.choice([0.0, rng.uniform(0.0, 0.5)])
    keep = rng.random(L) >= p_drop
    if not keep.any():
        keep[rng.integers(L)] = True
    layers = {}
    for i in range(L):
        if not keep[i]:
            layers[i] = LayerPlan(keep=False)
            continue
        heads = int(rng.integers(1, H + 1)) if rng.random() < p_heads else H
        ffn = int(rng.integers(max(1, W // 16), W + 1)) if rng.random() < p_ffn else W
        rank, dtype = {}, {}
        for g in LINEAR_GROUPS:
            if rng.random() < p_lowrank:
                rank[g] = max(1, round(float(rng.choice(RANK_FRACTIONS)) * max_rank(g, heads, ffn, dims)))
            if rng.random() < p_int8:
                dtype[g] = "int8"
        layers[i] = LayerPlan(heads=None if heads == H else heads, ffn=None if ffn == W else ffn,
                              rank=rank, dtype=dtype)
    return CompressionPlan(name=name, layers=layers)


def reference_plans(dims: Mapping) -> list[CompressionPlan]:
    """Keep-all, all int8, half the heads, half the FFN, half the layers."""
    L, H = dims["num_layers"], dims["num_heads"]
    all8 = dict.fromkeys(LINEAR_GROUPS, "int8")
    return [
        CompressionPlan.keep_all(),
        CompressionPlan(name="int8", defaults=LayerPlan(dtype=all8)),
        CompressionPlan(name="half-heads", defaults=LayerPlan(heads=max(1, H // 2))),
        CompressionPlan(name="half-ffn", defaults=LayerPlan(ffn=0.5)),
        CompressionPlan(name="half-layers", layers={i: LayerPlan(keep=False) for i in range(1, L, 2)}),
    ]


def structured_plan(dims: Mapping, rng: np.random.Generator, *, name: str = "structured") -> CompressionPlan:
    """A plan whose kept layers (the first 1..L) are all alike: heads and FFN width from 1/12 (1/16)
    to all, fp32, int8 or a random half of the linears int8, and no, 1/8 or 1/2 low rank
    everywhere. Random plans mix per linear; these cover the uniform and extreme corners (tiny
    layers, everything factorised) where per-kernel and fixed costs dominate."""
    L, H, W = dims["num_layers"], dims["num_heads"], dims["intermediate_size"]
    n = int(rng.integers(1, L + 1))
    heads = int(rng.choice(sorted({max(1, round(f * H)) for f in (1 / 12, 1 / 6, 1 / 4, 1 / 2, 3 / 4, 1.0)})))
    ffn = int(rng.choice(sorted({max(1, round(f * W)) for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)})))
    mode = rng.choice(["fp32", "int8", "mixed"])
    dtype = {g: "int8" for g in LINEAR_GROUPS if mode == "int8" or (mode == "mixed" and rng.random() < 0.5)}
    fraction = rng.choice([0.0, 0.0, 1 / 8, 1 / 2])
    rank = ({g: max(1, round(float(fraction) * max_rank(g, heads, ffn, dims))) for g in LINEAR_GROUPS}
            if fraction else {})
    layer = LayerPlan(heads=None if heads == H else heads, ffn=None if ffn == W else ffn, rank=rank, dtype=dtype)
    return CompressionPlan(name=name, layers={i: layer if i < n else LayerPlan(keep=False) for i in range(L)})


def calibration_plans(dims: Mapping, grid: "Grid", runtime: str = "onnxruntime") -> list[CompressionPlan]:
    """The plans a table is fitted on, in random order (seed ``grid.seed``, so that slow drifts of
    the machine spread evenly): :func:`reference_plans`, ``grid.plans`` random plans (a share
    ``grid.small`` of them cut to 1 or 2 of their layers: random plans seldom keep so few, yet only
    small models pin the fixed part down) and ``grid.structured`` :func:`structured_plan` plans;
    both ``grid.torch_scale`` times as many for torch, where a plan builds ~4x faster."""
    rng = np.random.default_rng(grid.seed)
    L = dims["num_layers"]
    plans = []
    n_random, n_structured = grid.plans, grid.structured
    if runtime == "torch":
        n_random, n_structured = n_random * grid.torch_scale, n_structured * grid.torch_scale
    for i in range(n_random):
        plan = random_plan(dims, rng, name=f"random-{i}")
        if rng.random() < grid.small and L > 1:
            keep = {int(j) for j in rng.choice(L, size=min(L, int(rng.integers(1, 3))), replace=False)}
            layers = {}
            for j in range(L):
                own = plan.layers.get(j, LayerPlan())
                layers[j] = (own if own.keep else LayerPlan()) if j in keep else LayerPlan(keep=False)
            plan = CompressionPlan(name=f"{plan.name}-small", layers=layers)
        plans.append(plan)
    plans += [structured_plan(dims, rng, name=f"structured-{i}") for i in range(n_structured)]
    plans += reference_plans(dims)
    return [plans[i] for i in rng.permutation(len(plans))]


# ----------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Grid:
    """How a table is calibrated.

    ``plans`` random plans (a share ``small`` of them cut to 1–2 layers) and ``structured`` plans
    of identical layers are measured end to end, besides the 5 reference plans; ``torch_scale``
    times as many for torch (no export, no ONNX quantization: ~4x cheaper per plan). Each is
    timed over at least ``runs`` calls (``warmup`` untimed) and ``min_seconds``; a measurement
    whose spread (IQR / median) exceeds ``max_spread`` is taken again, at most ``remeasure``
    times, keeping the steadiest; every plan is measured in ``passes`` passes ``lag`` plans apart
    and the faster one kept (see :func:`measure_plans`). ``retries``: re-measurements when other
    processes used the cores. ``warm_up``: seconds of inference before the first measurement.
    """

    plans: int = 36
    structured: int = 18
    torch_scale: int = 2
    small: float = 0.15
    runs: int = 30
    warmup: int = 5
    min_seconds: float = 0.3
    max_seconds: float = 30.0
    max_spread: float = 0.05
    remeasure: int = 2
    passes: int = 2
    lag: int = 3
    retries: int = 3
    warm_up: float = 2.0
    seed: int = 1234

    def estimated_seconds(self, teacher_ms: float, runtime: str = "torch") -> float:
        """Rough seconds to calibrate with this grid for a teacher of ``teacher_ms``: a calibration
        plan runs at about half the teacher's latency, and building, saving and loading it in a fresh
        process costs about 0.5 s plus ten of its inference times (a bigger model takes longer to build;
        ONNX Runtime also exports and quantizes it). Measured on MiniLM-L6 here: torch 275 s, ORT 240 s."""
        plan_s = 0.5 * teacher_ms / 1000
        n = (self.plans + self.structured) * (self.torch_scale if runtime == "torch" else 1) + 5
        build = 0.5 + 10 * plan_s if runtime == "torch" else 1.5 + 20 * plan_s  # ORT: export, quantize too
        return n * self.passes * (build + max(self.runs * plan_s, self.min_seconds))

    def sized(self, teacher_ms: float, runtime: str = "torch", seconds: float = 240.0) -> "Grid":
        """This grid, made cheaper until calibrating a teacher of ``teacher_ms`` takes about ``seconds``:
        one pass instead of two, then fewer timed runs per plan (down to 10), then fewer plans (down
        to 12 random and 6 structured). Unchanged when it already fits (the default model here)."""
        grid = self
        while grid.estimated_seconds(teacher_ms, runtime) > seconds:
            if grid.passes > 1:
                grid = replace(grid, passes=1)
            elif grid.runs > 10:
                grid = replace(grid, runs=max(10, grid.runs * 2 // 3))
            elif grid.plans > 12:
                grid = replace(grid, plans=max(12, grid.plans * 3 // 4), structured=max(6, grid.structured * 3 // 4))
            else:
                break
        return grid

    @classmethod
    def tiny(cls) -> "Grid":
        """A small, fast grid (for tests on tiny models)."""
        return cls(plans=10, structured=6, torch_scale=1, small=0.25, runs=20, warmup=2, min_seconds=0.02,
                   max_seconds=1.0, max_spread=0.25, remeasure=1, passes=1, retries=0, warm_up=0.2)


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
    of the plan's features times the fitted costs (see the module docstring)."""

    def __init__(self, table: dict, *, path: Path | None = None, from_cache: bool = False, scale: float = 1.0,
                 int8_scale: float = 1.0):
        self.table = table
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
            features = plan_features(_resolve(plan, self.dims), self.dims, self.target)
            base = np.array([float(self.table["costs"].get(n, 0.0)) for n in FEATURE_NAMES]) * scale
            fixed, int8 = features[~_INT8] @ base[~_INT8], features[_INT8] @ base[_INT8]
            if int8 > 0:
                int8_scale = float(np.clip((now_ms["int8"] - fixed) / int8, 0.5, 2.0))
        return LatencyPredictor(self.table, path=self.path, from_cache=self.from_cache, scale=scale,
                                int8_scale=int8_scale)

    def rescaled(self, factor: float) -> "LatencyPredictor":
        """This predictor with every cost multiplied by ``factor`` (e.g. to put predictions made at
        the machine's speed now into a run's frame measured earlier)."""
        return LatencyPredictor(self.table, path=self.path, from_cache=self.from_cache, scale=self.scale * factor,
                                int8_scale=self.int8_scale)

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
            resolved = _resolve(resolved, self.dims)
        self._check(resolved)
        return resolved

    def features(self, resolved: Sequence[ResolvedLayer] | CompressionPlan) -> np.ndarray:
        return plan_features(self._resolved(resolved), self.dims, self.target)

    def breakdown(self, resolved: Sequence[ResolvedLayer] | CompressionPlan) -> dict[str, float]:
        """Milliseconds per cost term (they sum to :meth:`predict`)."""
        return dict(zip(FEATURE_NAMES, map(float, self.features(resolved) * self.costs)))

    def predict(self, resolved: Sequence[ResolvedLayer] | CompressionPlan) -> float:
        """Predicted latency (ms) of a resolved plan (a list of :class:`ResolvedLayer`) or a plan."""
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
                "build_seconds": t.get("build_seconds"), "contended_passes": t.get("contended_passes", 0)}


# ----------------------------------------------------------------------------------- cache


def cache_key(dims: Mapping, target: Target, grid: Grid) -> dict:
    """Everything the table depends on: device fingerprint, target, architecture dims, grid."""
    return {"version": VERSION, "device": target_mod.device_fingerprint(), "target": target.to_dict(),
            "model": dict(dims), "grid": asdict(grid)}


def cache_path(dims: Mapping, target: Target, grid: Grid) -> Path:
    key = cache_key(dims, target, grid)
    name = f"{dims['model_type']}-{target.runtime}-{cache.sha256_json(key)[:20]}.json"
    return cache.home() / "latency" / name


def get_predictor(model, target: Target, *, grid: Grid | None = None, build: bool = True,
                  rebuild: bool = False, progress: bool = False) -> LatencyPredictor:
    """The cached predictor for this device/target/architecture/grid; built (and cached) if absent
    and ``build``, else :class:`UserError`."""
    grid = grid or Grid()
    dims = model_dims(model)
    path = cache_path(dims, target, grid)
    if path.is_file() and not rebuild:
        return LatencyPredictor(json.loads(path.read_text()), path=path, from_cache=True)
    if not build:
        raise UserError(f"no latency table for this device and target ({target.describe()}); "
                        "run 'autocompress latency calibrate' first")
    table = build_table(model, target, grid=grid, progress=progress)
    table["key"] = cache_key(dims, target, grid)
    cache.atomic_write_json(path, table)
    return LatencyPredictor(table, path=path)


def anchor(predictor: LatencyPredictor, model, target: Target | None = None, *, passes: int = 2,
           runs: int = 30) -> LatencyPredictor:
    """``predictor`` anchored to the machine's speed now: the reference plans (keep-all, all int8,
    half the heads, half the FFN, half the layers) are measured as at calibration
    (:func:`measure_plans`) and every prediction is scaled by their mean latency ratio now / then.
    A shared machine's speed drifts by several percent over minutes and moves every plan alike;
    a few seconds of measurement remove most of it (five plans, so one noisy one moves it little)."""
    target = target or predictor.target
    plans = reference_plans(predictor.dims)
    resolved = [_resolve(plan, predictor.dims) for plan in plans]
    with tempfile.TemporaryDirectory(prefix="autocompress-anchor-") as tmp:
        stats = measure_plans(model, resolved, target, passes=passes, runs=runs, workdir=Path(tmp))
    return predictor.anchored({plan.name: best(s).p50 for plan, s in zip(plans, stats)})


# ----------------------------------------------------------------------------------- measuring


def _steadiest(measure_once: Callable[[], LatencyStats], max_spread: float | None, remeasure: int) -> LatencyStats:
    """Measure; while the spread exceeds ``max_spread`` (at most ``remeasure`` more times), measure
    again and keep the steadiest measurement (smallest spread)."""
    best = measure_once()
    for _ in range(remeasure if max_spread is not None else 0):
        if best.spread <= max_spread:
            break
        again = measure_once()
        if again.spread < best.spread:
            best = again
    return best


def _build(model, resolved: Sequence[ResolvedLayer], target: Target, workdir: Path | None):
    """Build ``resolved`` structurally from ``model``; return ``(measure(**protocol) -> LatencyStats,
    close())``."""
    from ..techniques import quantize_config, quantize_dynamic_, rebuild_structure_

    m = copy.deepcopy(model)
    rebuild_structure_(m, list(resolved))
    m.eval()
    if target.runtime == "torch":
        quantize_dynamic_(m, quantize_config(resolved))
        return (lambda **kw: measure(m, target, **kw)), (lambda: None)
    from .onnx import build_onnx, measure_onnx, onnx_session

    tmp = tempfile.TemporaryDirectory(dir=workdir, prefix="plan-")
    try:
        path = build_onnx(m, Path(tmp.name) / "model.onnx", resolved=resolved)
        del m
        session = onnx_session(path, target.threads)
    except BaseException:
        tmp.cleanup()
        raise
    return (lambda **kw: measure_onnx(session, target, **kw)), tmp.cleanup


def measure_plan(model, resolved: Sequence[ResolvedLayer], target: Target, *, runs: int = 30,
                 retries: int = 3, min_seconds: float = 0.3, max_seconds: float = 5.0,
                 workdir: Path | None = None, warmup: int = 5, max_spread: float | None = None,
                 remeasure: int = 2) -> LatencyStats:
    """Build ``resolved`` structurally from the uncompressed ``model`` (random low-rank factors, first
    heads/neurons kept; no training), then measure it on ``target``. With ``max_spread``, a
    measurement whose spread (IQR / median) exceeds it is repeated (at most ``remeasure`` times) on
    the same built model and the steadiest one is returned."""
    run, close = _build(model, resolved, target, workdir)
    try:
        return _steadiest(lambda: run(warmup=warmup, runs=runs, retries=retries, min_seconds=min_seconds,
                                      max_seconds=max_seconds), max_spread, remeasure)
    finally:
        close()


def measure_plans(model, resolved_plans: Sequence[Sequence[ResolvedLayer]], target: Target, *, passes: int = 2,
                  lag: int = 3, runs: int = 30, warmup: int = 5, retries: int = 3, min_seconds: float = 0.3,
                  max_seconds: float = 30.0, max_spread: float | None = 0.05, remeasure: int = 2,
                  workdir: Path | None = None,
                  on_plan: Callable[[int, list[LatencyStats]], None] | None = None,
                  after_pass: Callable[[int], None] | None = None) -> list[list[LatencyStats]]:
    """Measure every plan ``passes`` times (like :func:`measure_plan`): right after it is built, then
    again ``lag`` plans later, seconds apart, while at most ``lag + 1`` built plans are kept.
    Measuring twice at different moments guards against slow phases of a shared machine that the
    contention detector cannot see (other virtual machines on the host): a phase rarely lasts that
    long, and it only ever adds time, so the faster pass is the better estimate (:func:`best`).
    ``on_plan(i, stats)`` is called as each plan completes, in order; ``after_pass(i)`` right after
    each pass of plan ``i`` (e.g. to measure a reference beside it)."""
    from collections import deque

    kwargs = dict(warmup=warmup, runs=runs, retries=retries, min_seconds=min_seconds, max_seconds=max_seconds)
    results: list[list[LatencyStats]] = [[] for _ in resolved_plans]
    pending: deque = deque()

    def again(i, run):
        results[i].append(_steadiest(lambda: run(**kwargs), max_spread, remeasure))
        if after_pass:
            after_pass(i)

    def finish(i, run, close):
        try:
            while len(results[i]) < max(1, passes):
                again(i, run)
        finally:
            close()
        if on_plan:
            on_plan(i, results[i])

    try:
        for i, resolved in enumerate(resolved_plans):
            run, close = _build(model, resolved, target, workdir)
            pending.append((i, run, close))
            again(i, run)
            while len(pending) > max(0, lag):
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    finally:
        for _, _, close in pending:
            close()
    return results


def best(stats: Sequence[LatencyStats]) -> LatencyStats:
    """The pass with the lowest median (see :func:`measure_plans`)."""
    return min(stats, key=lambda s: s.p50)


def warm_up(model, target: Target, seconds: float) -> None:
    """Run the uncompressed model (torch) for ``seconds`` in the measurement slot: the first
    measurements after a pause run measurably slower (CPU and allocator state)."""
    import torch

    if seconds <= 0:
        return
    inputs = random_inputs(target, getattr(model.config, "vocab_size", 1000))
    with measurement_slot(), torch_threads(target.threads), torch.inference_mode():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            model(**inputs)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="plan", disable=not enabled, file=sys.stderr, leave=False)


def build_table(model, target: Target, *, grid: Grid | None = None, progress: bool = False) -> dict:
    """Measure the calibration plans end to end and fit the costs; return the table (plain data)."""
    grid = grid or Grid()
    start = time.perf_counter()
    model = model.eval()
    dims = model_dims(model)
    plans = calibration_plans(dims, grid, target.runtime)
    resolved_plans = [_resolve(p, dims) for p in plans]
    bar = _progress(len(plans), f"calibrate {target.runtime}", progress)
    warm_up(model, target, grid.warm_up)
    with tempfile.TemporaryDirectory(prefix="autocompress-latency-") as tmp:
        stats = measure_plans(model, resolved_plans, target, passes=grid.passes, lag=grid.lag, runs=grid.runs,
                              warmup=grid.warmup, retries=grid.retries, min_seconds=grid.min_seconds,
                              max_seconds=grid.max_seconds, max_spread=grid.max_spread, remeasure=grid.remeasure,
                              workdir=Path(tmp), on_plan=lambda i, s: bar.update())
    bar.close()
    contended = [any(s.contended for s in got) for got in stats]
    table = fit_table(resolved_plans, [best(got).p50 for got in stats], dims, target, grid,
                      names=[p.name for p in plans], exclude=contended)
    for row, got in zip(table["plans"], stats):
        row["passes_ms"] = [round(s.p50, 4) for s in got]
    table["contended_passes"] = int(sum(contended))
    table["build_seconds"] = round(time.perf_counter() - start, 1)
    return table


# ----------------------------------------------------------------------------------- check


def check(predictor: LatencyPredictor, model, target: Target | None = None, *, plans: int = 30, seed: int = 7,
          runs: int = 30, max_seconds: float = 30.0, progress: bool = False,
          on_row: Callable[[dict], None] | None = None, passes: int = 2, max_spread: float | None = 0.05,
          warm_up_seconds: float = 2.0) -> dict:
    """Measure ``plans`` random plans and compare with the predictions: MAPE, share within ±10%,
    worst error. Plans are measured as in calibration (:func:`measure_plans`: ``passes`` passes
    seconds apart, the faster kept; a pass whose spread exceeds ``max_spread`` is repeated).

    The predictor is used as the search uses it: anchored (:func:`anchor`) to the reference plans
    measured just before the random plans. ``unanchored`` gives the figures of the raw table,
    ``single_pass`` those against the first pass alone, and ``anchor`` the machine's speed now
    against calibration (``scale``) and how much it moved during the check (the keep-all plan is
    measured again after the random plans).

    ``drift_corrected`` separates the predictor's error from the machine's drift during the check:
    right after each pass of a random plan the keep-all model is measured again, and the kept pass
    is brought back to the anchor's moment by the keep-all ratio (at the anchor / beside the pass)
    before it is compared with the anchored prediction. Slow phases of a shared machine move a
    plan and the keep-all model measured a second apart alike; what remains is the table's own
    error."""
    target = target or predictor.target
    dims = predictor.dims
    rng = np.random.default_rng(seed)
    resolved_plans = [_resolve(random_plan(dims, rng, name=f"check-{i}"), dims) for i in range(plans)]
    raw = [predictor.predict(r) for r in resolved_plans]
    refs = reference_plans(dims)
    anchors = [_resolve(plan, dims) for plan in refs]
    rows, now, after, anchored = [], {}, [], []
    beside: dict[int, list[float]] = {}  # keep-all p50 measured right after each pass of plan j
    bar = _progress(plans, f"check {target.runtime}", progress)

    def done(j, stats):
        if j < len(refs):  # the reference plans, measured first: the anchor
            now[refs[j].name] = best(stats).p50
            if len(now) == len(refs):
                anchored.append(predictor.anchored(now))
            return
        if j == len(refs) + plans:  # keep-all again, after the random plans
            after.append(best(stats).p50)
            return
        i = j - len(refs)
        predicted = anchored[0].predict(resolved_plans[i])
        measured, first = best(stats), stats[0]
        corrected = measured.p50 * now["keep-all"] / beside[j][stats.index(measured)]
        row = {"plan": i, "layers": sum(r.keep for r in resolved_plans[i]), "predicted_ms": round(predicted, 3),
               "measured_ms": round(measured.p50, 3), "error": round((predicted - measured.p50) / measured.p50, 4),
               "unanchored_error": round((raw[i] - measured.p50) / measured.p50, 4),
               "spread": round(measured.spread, 4), "contended": any(s.contended for s in stats),
               "passes_ms": [round(s.p50, 3) for s in stats], "other_cpu": round(max(s.other_cpu for s in stats), 3),
               "first_pass_error": round((predicted - first.p50) / first.p50, 4),
               "keep_all_beside_ms": [round(v, 3) for v in beside[j]], "drift_corrected_ms": round(corrected, 3),
               "drift_corrected_error": round((predicted - corrected) / corrected, 4)}
        rows.append(row)
        if on_row:
            on_row(row)
        bar.update()

    warm_up(model, target, warm_up_seconds)
    with tempfile.TemporaryDirectory(prefix="autocompress-check-") as tmp:
        keep_all, close = _build(model, anchors[0], target, Path(tmp))

        def measure_beside(j):
            if len(refs) <= j < len(refs) + plans:
                beside.setdefault(j, []).append(keep_all(warmup=2, runs=20, min_seconds=0.2, max_seconds=max_seconds).p50)

        try:
            measure_plans(model, [*anchors, *resolved_plans, anchors[0]], target, passes=passes, runs=runs,
                          max_seconds=max_seconds, max_spread=max_spread, workdir=Path(tmp), on_plan=done,
                          after_pass=measure_beside)
        finally:
            close()
    bar.close()
    worst = max(rows, key=lambda r: abs(r["error"]))
    then = predictor.measured_at_calibration()
    result = {"plans": len(rows), **_summary([r["error"] for r in rows]), "worst_plan": worst["plan"],
              "contended": sum(r["contended"] for r in rows),
              "single_pass": _summary([r["first_pass_error"] for r in rows]),
              "unanchored": _summary([r["unanchored_error"] for r in rows]),
              "drift_corrected": _summary([r["drift_corrected_error"] for r in rows]),
              "anchor": {"reference_ms": {k: round(v, 3) for k, v in now.items()},
                         "at_calibration_ms": {k: then.get(k) for k in now},
                         "scale": round(anchored[0].scale, 4),
                         "moved_during_check": round(after[0] / now["keep-all"] - 1, 4)}}
    result["rows"] = rows
    return result


def _summary(errors) -> dict:
    e = np.asarray(errors, float)
    return {"mape": float(np.abs(e).mean()), "within_10pct": float((np.abs(e) <= 0.10).mean()),
            "worst": float(e[np.argmax(np.abs(e))])}


__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "Grid",
    "anchor",
    "LatencyPredictor",
    "best",
    "build_table",
    "cache_key",
    "cache_path",
    "calibration_plans",
    "check",
    "cross_validate",
    "fit_costs",
    "fit_table",
    "get_predictor",
    "measure_plan",
    "measure_plans",
    "model_dims",
    "plan_features",
    "random_plan",
    "structured_plan",
    "reference_plans",
    "warm_up",
]
