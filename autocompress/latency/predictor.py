"""Predict a plan's latency in milliseconds without building the model.

**The table.** For one target (runtime, threads, batch, sequence length) on one device and one
architecture (model type, layers, hidden size, heads, FFN width, vocabulary), real encoder layers
are timed at grid points, each *in context*: layers of many configurations are stacked into one
randomly initialised model (so weights stream through the caches as in the real model) and every
layer is timed on its own — around each layer's call for torch, from ONNX Runtime's per-node
profile for onnxruntime. Entries:

- ``attn[h]``: a layer with ``h`` heads (full FFN, fp32), for every h (or a grid when H > 16);
- ``ffn[w]``: a layer with an FFN of width ``w`` (all heads), on a grid, interpolated between;
- ``int8[g]``: what making linear group ``g`` int8 adds, at a few head counts / FFN widths;
- ``lowrank[g][dtype]``: what a rank-``r`` factorisation of ``g`` adds, on a grid of shapes and
  of ranks (as fractions of the largest possible rank), fp32 and int8;
- ``shared_int8_input``: ONNX Runtime quantizes the input of q/k/v once for all of them, so every
  int8 one after the first saves this much (about 0 for torch, which quantizes per linear);
- ``fixed``: embeddings, classifier head and per-call overhead (keep-all model minus its layers).

A layer costs ``P(h) + Q(w) - base`` where ``P`` (attention side: ``attn[h]`` plus the int8/low-rank
terms of q, k, v, attn_out) and ``Q`` (FFN side) are made non-decreasing in ``h``/``w`` (running
maximum over smaller sizes), so predictions are monotone in heads, FFN width and layers kept.
Unstructured sparsity is ignored: dense kernels do not get faster with zeros.

**The correction.** A handful of whole models (keep-all, all int8, half heads, half FFN, half
layers, and a few random plans) are measured and a linear map ``a * raw + b`` is fitted (relative
least squares), so the predictor is accurate end to end.

The table is cached on disk as ``cache.home()/latency/<key>.json`` where the key hashes the device
fingerprint, the target, the architecture and the grid.
"""

from __future__ import annotations

import copy
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import cache
from ..errors import UserError
from ..plan import LINEAR_GROUPS, CompressionPlan, LayerPlan, ResolvedLayer
from . import target as target_mod
from .exclusive import measurement_slot
from .measure import LatencyStats, measure, random_inputs, sample_quietly, torch_threads
from .target import Target

VERSION = 1
ATTN_GROUPS = ("q", "k", "v", "attn_out")
FFN_GROUPS = ("ffn_in", "ffn_out")
QKV = ("q", "k", "v")


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


# ----------------------------------------------------------------------------------- random plans

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


# ----------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Grid:
    """Where the table is measured, and how.

    ``heads``: every head count is measured when the model has at most this many heads, else this
    many evenly spaced counts. ``ffn``: FFN widths as fractions of the full width.
    ``delta_heads``/``delta_ffn``: where the int8 and low-rank terms are measured (fractions; a
    head fraction 0 means one head). ``ranks``: rank fractions. ``copies``: repeats of the
    keep-all layer. ``chunk``: layers per stacked model. ``runs``/``warmup``: timed/untimed passes.
    ``calibration_plans``: random plans measured for the correction (besides 5 reference plans).
    """

    heads: int = 16
    ffn: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0)
    delta_heads: tuple[float, ...] = (0.0, 1 / 4, 1 / 2, 3 / 4, 1.0)
    delta_ffn: tuple[float, ...] = (1 / 16, 1 / 4, 1 / 2, 1.0)
    ranks: tuple[float, ...] = RANK_FRACTIONS
    copies: int = 3
    chunk: int = 40
    runs: int = 20
    warmup: int = 3
    calibration_plans: int = 6
    calibration_runs: int = 30
    min_seconds: float = 0.3
    max_seconds: float = 60.0
    retries: int = 3
    seed: int = 1234

    @classmethod
    def tiny(cls) -> "Grid":
        """A small, fast grid (for tests on tiny models)."""
        return cls(heads=16, ffn=(1 / 4, 1 / 2, 1.0), delta_heads=(0.0, 1.0), delta_ffn=(1 / 4, 1.0),
                   ranks=(1 / 4, 1 / 2), copies=1, chunk=64, runs=20, warmup=1, calibration_plans=2,
                   calibration_runs=20, min_seconds=0.02, max_seconds=5.0, retries=0)

    def head_points(self, H: int) -> list[int]:
        pts = set(range(1, H + 1)) if H <= self.heads else {max(1, round(x)) for x in np.linspace(1, H, self.heads)}
        pts |= set(self.delta_head_points(H))
        return sorted(pts)

    def delta_head_points(self, H: int) -> list[int]:
        return sorted({max(1, min(H, round(f * H))) for f in self.delta_heads} | {H})

    def ffn_points(self, W: int) -> list[int]:
        return sorted({max(1, min(W, round(f * W))) for f in self.ffn} | set(self.delta_ffn_points(W)) | {W})

    def delta_ffn_points(self, W: int) -> list[int]:
        return sorted({max(1, min(W, round(f * W))) for f in self.delta_ffn} | {W})


# ----------------------------------------------------------------------------------- interpolation


def _interp(x: float, xs: Sequence[float], ys: Sequence[float], *, extrapolate: bool = False) -> float:
    """Piecewise-linear interpolation; outside the range: clamp, or extend the end segments."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) == 1:
        return float(ys[0])
    if extrapolate and x < xs[0]:
        return float(ys[0] + (x - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0]))
    if extrapolate and x > xs[-1]:
        return float(ys[-1] + (x - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
    return float(np.interp(x, xs, ys))


def _isotonic(values: Sequence[float]) -> list[float]:
    """Non-decreasing least-squares fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2 = blocks.pop()
            m1, w1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    out: list[float] = []
    for m, w in blocks:
        out += [m] * int(w)
    return out


# ----------------------------------------------------------------------------------- predictor


class LatencyPredictor:
    """Predicts milliseconds per call for plans on one model architecture and one target."""

    def __init__(self, table: dict, *, path: Path | None = None, from_cache: bool = False):
        self.table = table
        self.dims = table["dims"]
        self.path = path
        self.from_cache = from_cache
        t = table
        self._heads = [int(h) for h in t["attn"]["x"]]
        self._attn = list(t["attn"]["y"])
        self._widths = [int(w) for w in t["ffn"]["x"]]
        self._ffn = list(t["ffn"]["y"])
        self._base = float(t["base"])
        self._qin = float(t.get("shared_int8_input", 0.0))
        cal = t.get("calibration") or {}
        self.a, self.b = float(cal.get("a", 1.0)), float(cal.get("b", 0.0))
        self._cache: dict = {}

    @property
    def target(self) -> Target:
        return Target(**self.table["target"])

    # -- the per-layer model ------------------------------------------------------------------

    def _base_attn(self, h: int) -> float:
        return _interp(h, self._heads, self._attn)

    def _base_ffn(self, w: int) -> float:
        return _interp(w, self._widths, self._ffn)

    def _delta(self, group: str, size: int, rank: int | None, dtype: str, heads: int, ffn: int) -> float:
        t = self.table
        if rank is None:
            if dtype != "int8":
                return 0.0
            d = t["int8"][group]
            return _interp(size, d["x"], d["y"])
        d = t["lowrank"][group]["int8" if dtype == "int8" else "fp32"]
        attn = group in ATTN_GROUPS
        H, W = self.dims["num_heads"], self.dims["intermediate_size"]
        per_size = []  # at each measured size, interpolate in the rank (the knot's own ranks)
        for s, row in zip(d["x"], d["y"]):
            limit = max_rank(group, s if attn else H, W if attn else s, self.dims)
            per_size.append(_interp(rank, [f * limit for f in d["f"]], row, extrapolate=True))
        return _interp(size, d["x"], per_size)

    def _memo(self, key, fn):
        if key not in self._cache:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = fn()
        return self._cache[key]

    def _attn_side(self, h: int, r: ResolvedLayer) -> float:
        W = self.dims["intermediate_size"]
        total = self._base_attn(h)
        for g in ATTN_GROUPS:
            total += self._delta(g, h, r.rank.get(g), r.dtype.get(g, "fp32"), h, W)
        n8 = sum(r.dtype.get(g) == "int8" for g in QKV)
        return total - self._qin * max(0, n8 - 1)

    def _ffn_side(self, w: int, r: ResolvedLayer) -> float:
        H = self.dims["num_heads"]
        total = self._base_ffn(w)
        for g in FFN_GROUPS:
            total += self._delta(g, w, r.rank.get(g), r.dtype.get(g, "fp32"), H, w)
        return total

    def layer_ms(self, r: ResolvedLayer) -> float:
        """Uncalibrated milliseconds of one kept layer (0 for a dropped one).

        Both sides are piecewise linear in their size between measured sizes (every term is
        interpolated between knots whose values do not depend on the query), so the running
        maximum over smaller knots and the size itself makes them exactly non-decreasing."""
        if not r.keep:
            return 0.0
        attn_key = ("attn", r.heads, *(r.rank.get(g) for g in ATTN_GROUPS), *(r.dtype.get(g) for g in ATTN_GROUPS))
        ffn_key = ("ffn", r.ffn, *(r.rank.get(g) for g in FFN_GROUPS), *(r.dtype.get(g) for g in FFN_GROUPS))
        attn = self._memo(attn_key, lambda: max(self._attn_side(h, r) for h in range(1, r.heads + 1)))
        widths = [w for w in self._widths if w < r.ffn] + [r.ffn]
        ffn = self._memo(ffn_key, lambda: max(self._ffn_side(w, r) for w in widths))
        return max(1e-4, attn + ffn - self._base)

    # -- whole models -------------------------------------------------------------------------

    def _check(self, resolved: Sequence[ResolvedLayer]) -> None:
        d = self.dims
        if len(resolved) != d["num_layers"]:
            raise UserError(f"the plan was resolved for {len(resolved)} layers but this latency table is for "
                            f"{d['num_layers']}")
        for r in resolved:
            if r.keep and (r.heads > d["num_heads"] or r.ffn > d["intermediate_size"]):
                raise UserError(f"layer {r.index}: {r.heads} heads / FFN {r.ffn} exceed the table's model "
                                f"({d['num_heads']} heads, FFN {d['intermediate_size']})")

    def predict_raw(self, resolved: Sequence[ResolvedLayer]) -> float:
        self._check(resolved)
        return float(self.table["fixed"]) + sum(self.layer_ms(r) for r in resolved)

    def predict(self, resolved: Sequence[ResolvedLayer] | CompressionPlan) -> float:
        """Predicted latency (ms) of a resolved plan (a list of :class:`ResolvedLayer`) or a plan."""
        if isinstance(resolved, CompressionPlan):
            resolved = _resolve(resolved, self.dims)
        return self.a * self.predict_raw(resolved) + self.b

    def predict_plan(self, plan: CompressionPlan) -> float:
        return self.predict(_resolve(plan, self.dims))

    def summary(self) -> dict:
        t = self.table
        return {"path": str(self.path) if self.path else None, "target": t["target"], "dims": self.dims,
                "fixed_ms": round(t["fixed"], 4), "layer_ms": round(self._base, 4),
                "parts": t.get("parts", {}), "calibration": t.get("calibration", {}),
                "layers_timed": t.get("layers_timed"), "build_seconds": t.get("build_seconds"),
                "contended_passes": t.get("contended_passes", 0)}


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


# ----------------------------------------------------------------------------------- building


def _layer(heads: int, ffn: int, rank: Mapping | None = None, dtype: Mapping | None = None) -> ResolvedLayer:
    return ResolvedLayer(index=0, keep=True, heads=heads, ffn=ffn,
                         rank={g: (rank or {}).get(g) for g in LINEAR_GROUPS},
                         dtype={g: (dtype or {}).get(g, "fp32") for g in LINEAR_GROUPS},
                         sparsity=dict.fromkeys(LINEAR_GROUPS, 0.0))


def grid_layers(dims: Mapping, grid: Grid) -> list[tuple[tuple, ResolvedLayer]]:
    """(label, layer configuration) of every layer to time."""
    H, W = dims["num_heads"], dims["intermediate_size"]
    out: list[tuple[tuple, ResolvedLayer]] = [(("base",), _layer(H, W)) for _ in range(grid.copies)]
    out += [(("attn", h), _layer(h, W)) for h in grid.head_points(H) if h != H]
    out += [(("ffn", w), _layer(H, w)) for w in grid.ffn_points(W) if w != W]
    for g in LINEAR_GROUPS:
        attn = g in ATTN_GROUPS
        for s in grid.delta_head_points(H) if attn else grid.delta_ffn_points(W):
            h, w = (s, W) if attn else (H, s)
            out.append((("int8", g, s), _layer(h, w, dtype={g: "int8"})))
            limit = max_rank(g, h, w, dims)
            for f in grid.ranks:
                r = max(1, round(f * limit))
                for dt in ("fp32", "int8"):
                    out.append((("lowrank", g, s, f, dt), _layer(h, w, rank={g: r}, dtype={g: dt})))
    for s in grid.delta_head_points(H):
        out.append((("qkv8", s), _layer(s, W, dtype=dict.fromkeys(QKV, "int8"))))
    return out


def _blank_model(model, num_layers: int, vocab_size: int | None = None):
    """A randomly initialised classifier of ``model``'s architecture with ``num_layers`` layers."""
    from transformers import AutoModelForSequenceClassification

    from ..models import quiet_transformers

    quiet_transformers()
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = num_layers
    if vocab_size is not None:
        config.vocab_size = vocab_size
    impl = getattr(model.config, "_attn_implementation", None)
    kwargs = {"attn_implementation": impl} if impl else {}
    return AutoModelForSequenceClassification.from_config(config, **kwargs).eval()


def _stack(model, layers: Sequence[ResolvedLayer]):
    """A small-vocabulary model whose encoder layers have the given configurations."""
    from ..techniques import rebuild_structure_

    stack = _blank_model(model, len(layers), vocab_size=min(512, model.config.vocab_size))
    rebuild_structure_(stack, [ResolvedLayer(**{**r.__dict__, "index": i}) for i, r in enumerate(layers)])
    return stack


class _Contended(Exception):
    pass


def _torch_layer_times(stack, resolved, target: Target, grid: Grid) -> tuple[list[float], bool]:
    """Median ms of each encoder layer of ``stack`` (torch), timed around each layer's call."""
    import torch

    from ..arch import get_adapter
    from ..techniques import quantize_config, quantize_dynamic_

    quantize_dynamic_(stack, quantize_config(resolved))
    layers = get_adapter(stack).encoder_layers(stack)
    captured = {}

    def hook(module, args, kwargs):
        captured["args"], captured["kwargs"] = args, kwargs

    inputs = random_inputs(target, stack.config.vocab_size)
    with torch_threads(target.threads), torch.inference_mode():
        handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            stack(**inputs)
        finally:
            handle.remove()
        args, kwargs = captured["args"], dict(captured["kwargs"])
        if args:
            x0, rest = args[0], args[1:]
        else:
            x0, rest = kwargs.pop("hidden_states"), ()

        def one_pass():
            row = np.zeros(len(layers))
            x = x0
            for i, layer in enumerate(layers):
                start = time.perf_counter()
                out = layer(x, *rest, **kwargs)
                row[i] = (time.perf_counter() - start) * 1e3
                x = out[0] if isinstance(out, tuple) else out
            return row

        with measurement_slot():
            got = sample_quietly(one_pass, n=grid.runs, warmup=grid.warmup, max_seconds=grid.max_seconds)
    return list(np.median(np.stack(got.samples), axis=0)), got.contended


def _onnx_layer_times(stack, resolved, target: Target, grid: Grid, workdir: Path) -> tuple[list[float], bool]:
    """Median ms of each encoder layer of ``stack`` in ONNX Runtime, from the per-node profile:
    each node's span (start to the next node's start) is charged to the layer named in the node
    (fused nodes without a layer in their name: the previous node's layer; input quantization:
    the next node's layer)."""
    from ..arch import get_adapter
    from .onnx import build_onnx, node_name, onnx_session, session_inputs

    path = build_onnx(stack, workdir / "stack.onnx", resolved=resolved)
    adapter = get_adapter(stack)
    prefix = node_name(f"{stack.base_model_prefix}.{adapter.layers_path}", "model.")[: -len("/MatMul")]
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)/")
    n_layers = len(resolved)
    for old in workdir.glob("profile*.json"):
        old.unlink()
    session = onnx_session(path, target.threads, profile=str(workdir / "profile"))
    plain = onnx_session(path, target.threads)
    feeds = session_inputs(session, target)

    def step():
        session.run(None, feeds)
        start = time.perf_counter()
        plain.run(None, feeds)
        return (time.perf_counter() - start) * 1e3

    with measurement_slot():
        got = sample_quietly(step, n=grid.runs, warmup=grid.warmup, max_seconds=grid.max_seconds)
    keep = [i for i, q in enumerate(got.quiet) if q or got.contended]  # profiled runs to use
    wall = [got.samples[k] for k in range(len(got.samples))]
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    run_spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                       if e.get("cat") == "Session" and e.get("name") == "model_run")[grid.warmup:]
    run_spans = [run_spans[i] for i in keep if i < len(run_spans)]
    nodes = sorted((e["ts"], e["dur"], e["name"], e.get("args", {}).get("op_name", "")) for e in events
                   if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"))
    samples = np.zeros((len(run_spans), n_layers))
    counts = np.zeros((len(run_spans), n_layers))
    kernel = np.zeros(len(run_spans))  # all kernels of the run, ms
    n_nodes = np.zeros(len(run_spans))
    j = 0
    for k, (start, end) in enumerate(run_spans):
        run = []
        while j < len(nodes) and nodes[j][0] < start:
            j += 1
        while j < len(nodes) and nodes[j][0] <= end:
            run.append(nodes[j])
            j += 1
        owners: list[int | None] = []
        for ts, dur, name, op in run:
            m = pattern.search(name)
            owners.append(None if (m is None or op == "DynamicQuantizeLinear") else int(m.group(1)))
        # unnamed nodes: input quantization -> next named node's layer; others -> previous one's
        for i, (ts, dur, name, op) in enumerate(run):
            if owners[i] is not None:
                continue
            if op == "DynamicQuantizeLinear":
                owners[i] = next((o for o in owners[i + 1:] if o is not None), None)
            else:
                owners[i] = next((o for o in reversed(owners[:i]) if o is not None), None)
        for i, (ts, dur, name, op) in enumerate(run):
            kernel[k] += dur / 1e3
            n_nodes[k] += 1
            if owners[i] is not None and owners[i] < n_layers:
                samples[k, owners[i]] += dur / 1e3
                counts[k, owners[i]] += 1
    # Kernel times exclude what the executor does between nodes; profiling itself adds to the
    # gaps. Charge the unprofiled run time not spent in kernels evenly to every node.
    per_node = max(0.0, (float(np.median(wall)) - float(np.median(kernel))) / max(1.0, float(np.median(n_nodes))))
    return list(np.median(samples + per_node * counts, axis=0)), got.contended


def _time_layers(model, layers: Sequence[ResolvedLayer], target: Target, grid: Grid, workdir: Path
                 ) -> tuple[list[float], bool]:
    """Per-layer ms for a stack of these configurations, retried while other processes compute."""
    stack = _stack(model, layers)
    contended = False
    for attempt in range(grid.retries + 1):
        if attempt:
            time.sleep(1.0 * attempt)
        if target.runtime == "torch":
            times, contended = _torch_layer_times(copy.deepcopy(stack), layers, target, grid)
        else:
            times, contended = _onnx_layer_times(stack, layers, target, grid, workdir)
        if not contended:
            break
    return times, contended


def measure_plan(model, resolved: Sequence[ResolvedLayer], target: Target, *, runs: int = 30,
                 retries: int = 3, min_seconds: float = 0.3, max_seconds: float = 30.0,
                 workdir: Path | None = None) -> LatencyStats:
    """Build ``resolved`` structurally from the uncompressed ``model`` (random low-rank factors, first
    heads/neurons kept; no training), then measure it on ``target``."""
    from ..techniques import quantize_config, quantize_dynamic_, rebuild_structure_

    m = copy.deepcopy(model)
    rebuild_structure_(m, list(resolved))
    m.eval()
    if target.runtime == "torch":
        quantize_dynamic_(m, quantize_config(resolved))
        return measure(m, target, runs=runs, retries=retries, min_seconds=min_seconds, max_seconds=max_seconds)
    from .onnx import build_onnx, measure_onnx, onnx_session

    with tempfile.TemporaryDirectory(dir=workdir, prefix="plan-") as tmp:
        path = build_onnx(m, Path(tmp) / "model.onnx", resolved=resolved)
        del m
        session = onnx_session(path, target.threads)
        return measure_onnx(session, target, runs=runs, retries=retries, min_seconds=min_seconds,
                            max_seconds=max_seconds)


def fit_calibration(raw: Sequence[float], measured: Sequence[float]) -> dict:
    """``measured ~ a * raw + b`` minimising squared *relative* error; a must stay positive."""
    x, y = np.asarray(raw, float), np.asarray(measured, float)
    a, b = 1.0, float(np.median(y - x)) if len(x) else 0.0
    if len(x) >= 2 and np.ptp(x) > 0:
        A = np.stack([x / y, 1 / y], axis=1)
        (fa, fb), *_ = np.linalg.lstsq(A, np.ones_like(y), rcond=None)
        if 0.3 <= fa <= 3.0:
            a, b = float(fa), float(fb)
    pred = a * x + b
    err = np.abs(pred - y) / y if len(x) else np.array([0.0])
    return {"a": a, "b": b, "fit_mape": float(err.mean()), "fit_worst": float(err.max())}


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, file=sys.stderr, leave=False)


def build_table(model, target: Target, *, grid: Grid | None = None, progress: bool = False) -> dict:
    """Time the grid of layers and the calibration plans; return the table (plain data)."""
    grid = grid or Grid()
    start = time.perf_counter()
    model = model.eval()
    dims = model_dims(model)
    H, W, L = dims["num_heads"], dims["intermediate_size"], dims["num_layers"]
    labelled = grid_layers(dims, grid)
    order = np.random.default_rng(grid.seed).permutation(len(labelled))
    labelled = [labelled[i] for i in order]
    chunks = [labelled[i:i + grid.chunk] for i in range(0, len(labelled), grid.chunk)]
    rng = np.random.default_rng(grid.seed)
    plans = reference_plans(dims) + [random_plan(dims, rng, name=f"calibration-{i}")
                                     for i in range(grid.calibration_plans)]
    bar = _progress(len(chunks) + len(plans), f"calibrate {target.runtime}", progress)
    values: dict[tuple, list[float]] = {}
    contended_passes = 0
    with tempfile.TemporaryDirectory(prefix="autocompress-latency-") as tmp:
        for chunk in chunks:
            times, contended = _time_layers(model, [r for _, r in chunk], target, grid, Path(tmp))
            contended_passes += contended
            for (label, _), t in zip(chunk, times):
                values.setdefault(label, []).append(t)
            bar.update()
        table = table_from_timings(values, dims, grid, target)
        rows = []
        for plan in plans:
            resolved = _resolve(plan, dims)
            stats = measure_plan(model, resolved, target, runs=grid.calibration_runs, retries=grid.retries,
                                 min_seconds=grid.min_seconds, max_seconds=grid.max_seconds, workdir=Path(tmp))
            contended_passes += stats.contended
            rows.append({"plan": plan.name, "measured": stats.p50, "contended": stats.contended,
                         "layers": sum(r.keep for r in resolved),
                         "raw": LatencyPredictor(table).predict_raw(resolved)})
            bar.update()
    bar.close()
    keep_all = rows[0]
    table["fixed"] = max(0.0, keep_all["measured"] - keep_all["raw"])
    for row in rows:
        row["raw"] += table["fixed"]
    table["calibration"] = {**fit_calibration([r["raw"] for r in rows], [r["measured"] for r in rows]),
                            "plans": rows}
    table["parts"] = {"layer_keep_all": table["base"], "fixed": table["fixed"],
                      "model_keep_all": keep_all["measured"]}
    table["contended_passes"] = contended_passes
    table["build_seconds"] = round(time.perf_counter() - start, 1)
    return table


def table_from_timings(values: Mapping[tuple, list[float]], dims: Mapping, grid: Grid, target: Target,
                       *, fixed: float = 0.0) -> dict:
    """An uncalibrated table from per-layer milliseconds keyed by the labels of :func:`grid_layers`."""
    table = _assemble(values, dims, grid)
    table.update(target=target.to_dict(), device=target_mod.device_fingerprint(), dims=dict(dims),
                 grid=asdict(grid), version=VERSION, layers_timed=sum(len(v) for v in values.values()),
                 fixed=float(fixed))
    return table


def _assemble(values: Mapping[tuple, list[float]], dims: Mapping, grid: Grid) -> dict:
    """The per-layer part of the table from per-layer timings keyed by grid label."""
    H, W = dims["num_heads"], dims["intermediate_size"]
    mean = lambda label: float(np.mean(values[label]))  # noqa: E731
    base = mean(("base",))
    heads = grid.head_points(H)
    widths = grid.ffn_points(W)
    attn = _isotonic([base if h == H else mean(("attn", h)) for h in heads])
    ffn = _isotonic([base if w == W else mean(("ffn", w)) for w in widths])
    scale = base / attn[-1] if attn[-1] > 0 else 1.0  # pin both curves to the keep-all layer
    attn = [a * scale for a in attn]
    ffn = [f * (base / ffn[-1] if ffn[-1] > 0 else 1.0) for f in ffn]
    base_attn = lambda h: _interp(h, heads, attn)  # noqa: E731
    base_ffn = lambda w: _interp(w, widths, ffn)  # noqa: E731
    int8, lowrank = {}, {}
    for g in LINEAR_GROUPS:
        is_attn = g in ATTN_GROUPS
        sizes = grid.delta_head_points(H) if is_attn else grid.delta_ffn_points(W)
        ref = base_attn if is_attn else base_ffn
        int8[g] = {"x": sizes, "y": [mean(("int8", g, s)) - ref(s) for s in sizes]}
        lowrank[g] = {dt: {"x": sizes, "f": list(grid.ranks),
                           "y": [[mean(("lowrank", g, s, f, dt)) - ref(s) for f in grid.ranks] for s in sizes]}
                      for dt in ("fp32", "int8")}
    qin = []
    for s in grid.delta_head_points(H):
        single = sum(int8[g]["y"][int8[g]["x"].index(s)] for g in QKV)
        qin.append((single - (mean(("qkv8", s)) - base_attn(s))) / 2)
    return {"base": base, "attn": {"x": heads, "y": attn}, "ffn": {"x": widths, "y": ffn},
            "int8": int8, "lowrank": lowrank, "shared_int8_input": float(np.median(qin))}


# ----------------------------------------------------------------------------------- check


def check(predictor: LatencyPredictor, model, target: Target | None = None, *, plans: int = 30, seed: int = 7,
          runs: int = 30, progress: bool = False, on_row: Callable[[dict], None] | None = None) -> dict:
    """Measure ``plans`` random plans and compare with the predictions: MAPE, share within ±10%,
    worst error."""
    target = target or predictor.target
    dims = predictor.dims
    rng = np.random.default_rng(seed)
    rows = []
    bar = _progress(plans, f"check {target.runtime}", progress)
    with tempfile.TemporaryDirectory(prefix="autocompress-check-") as tmp:
        for i in range(plans):
            plan = random_plan(dims, rng, name=f"check-{i}")
            resolved = _resolve(plan, dims)
            predicted = predictor.predict(resolved)
            stats = measure_plan(model, resolved, target, runs=runs, workdir=Path(tmp))
            err = (predicted - stats.p50) / stats.p50
            row = {"plan": i, "layers": sum(r.keep for r in resolved), "predicted_ms": round(predicted, 3),
                   "measured_ms": round(stats.p50, 3), "error": round(err, 4), "spread": round(stats.spread, 4),
                   "contended": stats.contended}
            rows.append(row)
            if on_row:
                on_row(row)
            bar.update()
    bar.close()
    errors = np.abs([r["error"] for r in rows])
    worst = max(rows, key=lambda r: abs(r["error"]))
    return {"plans": len(rows), "mape": float(errors.mean()), "within_10pct": float((errors <= 0.10).mean()),
            "worst": worst["error"], "worst_plan": worst["plan"],
            "contended": sum(r["contended"] for r in rows), "rows": rows}


__all__ = [
    "Grid",
    "LatencyPredictor",
    "build_table",
    "cache_key",
    "cache_path",
    "check",
    "fit_calibration",
    "get_predictor",
    "grid_layers",
    "measure_plan",
    "model_dims",
    "random_plan",
    "reference_plans",
    "table_from_timings",
]
