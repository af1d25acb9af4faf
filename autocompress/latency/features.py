"""The plan side of the latency model (see :mod:`~autocompress.latency.predictor`): a model's
architecture dims, the features of a plan (:data:`FEATURES`), the plans a table is calibrated on
(random, structured and reference plans) and how it is calibrated (:class:`Grid`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..plan import LINEAR_GROUPS, CompressionPlan, LayerPlan, ResolvedLayer
from .runtime import runtime_class
from .target import Target

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


# ----------------------------------------------------------------------------------- dims


def model_dims(model) -> dict:
    """Architecture dims of an (uncompressed) Hugging Face classifier."""
    from ..arch import get_adapter

    adapter = get_adapter(model)
    return {"model_type": model.config.model_type, "num_layers": adapter.num_layers(model),
            "num_heads": adapter.num_heads(model), "intermediate_size": adapter.intermediate_size(model),
            "hidden_size": adapter.hidden_size(model), "vocab_size": int(getattr(model.config, "vocab_size", 0))}


def resolve_plan(plan: CompressionPlan, dims: Mapping) -> list[ResolvedLayer]:
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
    shared = runtime_class(target.runtime).shares_quantized_inputs  # ORT quantizes a tensor once for all its int8 consumers
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


def reference_plans(dims: Mapping, runtime: str | None = None) -> list[CompressionPlan]:
    """Keep-all, all int8 (not on a ``runtime`` without int8 kernels), half the heads, half the
    FFN, half the layers."""
    L, H = dims["num_layers"], dims["num_heads"]
    all8 = dict.fromkeys(LINEAR_GROUPS, "int8")
    plans = [
        CompressionPlan.keep_all(),
        CompressionPlan(name="int8", defaults=LayerPlan(dtype=all8)),
        CompressionPlan(name="half-heads", defaults=LayerPlan(heads=max(1, H // 2))),
        CompressionPlan(name="half-ffn", defaults=LayerPlan(ffn=0.5)),
        CompressionPlan(name="half-layers", layers={i: LayerPlan(keep=False) for i in range(1, L, 2)}),
    ]
    if runtime is not None and not runtime_class(runtime).int8:
        plans = [p for p in plans if p.name != "int8"]
    return plans


def for_runtime(plan: CompressionPlan, runtime: str) -> CompressionPlan:
    """``plan`` as ``runtime`` can run it: every linear fp32 when it has no int8 kernels."""
    if runtime_class(runtime).int8:
        return plan
    fp32 = lambda lp: replace(lp, dtype={}) if lp.keep else lp  # noqa: E731
    return replace(plan, defaults=fp32(plan.defaults), layers={i: fp32(lp) for i, lp in plan.layers.items()})


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
    if runtime_class(runtime).fast_build:
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
    plans = [for_runtime(p, runtime) for p in plans] + reference_plans(dims, runtime)
    return [plans[i] for i in rng.permutation(len(plans))]


# ----------------------------------------------------------------------------------- grid


#: Seconds per parameter of a calibration plan to save it and load it in a fresh process, beyond
#: the per-plan costs that scale with latency: a BERT-base-sized model (110M parameters) calibrated
#: in 223.5 s against 140 s estimated without this term (85 measurements, ~1.0 s more each).
SECONDS_PER_PARAM = 1.8e-8


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

    def estimated_seconds(self, teacher_ms: float, runtime: str = "torch", params: int = 0) -> float:
        """Rough seconds to calibrate with this grid for a teacher of ``teacher_ms`` and ``params``
        parameters: a calibration plan runs at about half the teacher's latency and holds about half
        its parameters, and building, saving and loading it in a fresh process costs about 0.5 s plus
        ten of its inference times (ONNX Runtime also exports and quantizes it) plus
        :data:`SECONDS_PER_PARAM` per parameter. Measured on MiniLM-L6 here: torch 275 s, ORT 240 s."""
        kind = runtime_class(runtime)
        plan_s = 0.5 * teacher_ms / 1000
        n = (self.plans + self.structured) * (self.torch_scale if kind.fast_build else 1) + 5
        build = kind().estimated_build_seconds(plan_s) + SECONDS_PER_PARAM * 0.5 * params  # ORT: export, quantize too
        return n * self.passes * (build + max(self.runs * plan_s, self.min_seconds))

    def sized(self, teacher_ms: float, runtime: str = "torch", seconds: float = 150.0,
              keep_below: float = 360.0, params: int = 0, tables: int = 1) -> "Grid":
        """This grid, unchanged when calibrating a teacher of ``teacher_ms`` with it is estimated to
        take at most ``keep_below`` seconds (the default model here: ~220–240 s; the estimate is
        made from a measured latency, so the margin keeps the machine's drift from changing the
        grid, and with it the cached table's key, from one run to the next). Otherwise made cheaper
        until its ``tables`` tables (a bf16 table beside the fp32 one: 2) take about ``seconds`` in
        all: one pass instead of two, then fewer timed runs per plan (down to 10), then fewer plans
        (down to 12 random and 6 structured for one table, half as many for two). Measured on a
        BERT-base-sized model on a CPU with bf16 kernels: the two tables with one table's grid
        (15+6 plans) took 166-260 s, with the shared grid (6+3) 86-98 s."""
        grid, tables = self, max(1, tables)
        if grid.estimated_seconds(teacher_ms, runtime, params) <= keep_below:
            return grid
        least, least_structured = max(6, 12 // tables), max(3, 6 // tables)
        while grid.estimated_seconds(teacher_ms, runtime, params) * tables > seconds:
            if grid.passes > 1:
                grid = replace(grid, passes=1)
            elif grid.runs > 10:
                grid = replace(grid, runs=max(10, grid.runs * 2 // 3))
            elif grid.plans > least:
                grid = replace(grid, plans=max(least, grid.plans * 3 // 4),
                               structured=max(least_structured, grid.structured * 3 // 4))
            else:
                break
        return grid

    @classmethod
    def tiny(cls) -> "Grid":
        """A small, fast grid (for tests on tiny models)."""
        return cls(plans=10, structured=6, torch_scale=1, small=0.25, runs=20, warmup=2, min_seconds=0.02,
                   max_seconds=1.0, max_spread=0.25, remeasure=1, passes=1, retries=0, warm_up=0.2)


def other_precisions(target: Target, precisions: Sequence[str]) -> list[str]:
    """Those of ``precisions`` other than the target's that its runtime has kernels for on this CPU
    (bf16: AVX512-BF16 or AMX): each gets a latency table of its own (:func:`with_precisions`)."""
    return [p for p in dict.fromkeys(precisions)
            if p != target.precision and p == "bf16" and runtime_class(target.runtime).bf16]


def calibration_grid(target: Target, teacher_ms: float, params: int, precisions: Sequence[str] = ()) -> Grid:
    """The grid a search calibrates with: the default one, :meth:`Grid.sized` to a teacher of
    ``teacher_ms`` and ``params`` parameters, its time goal shared by the target's table and one
    table for each of :func:`other_precisions`."""
    return Grid().sized(teacher_ms, target.runtime, params=params, tables=1 + len(other_precisions(target, precisions)))
