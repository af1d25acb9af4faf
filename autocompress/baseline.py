"""The decision-tree baseline: the classic "which technique when" rules, written as code.

The tree (``autocompress baseline --explain`` prints it; each rule cites its source)::

    H  hardware first
       H1 int8 kernels on the target runtime?      yes → int8 on every linear            [X&M Quant.; G&A §3.4]
                                                   no  → fp32
       H2 sparse kernels on the target runtime?    no  → never unstructured sparsity      [Ganesh §4.3; X&M Pruning]
       H3 a size budget?                           yes → int8 word embeddings (the biggest
                                                   tensor: 11.7M of MiniLM's 22.7M parameters) [Ganesh §2–3; X&M Quant.]
    B  which budget binds?
       B1 none                                     → stop at H
       B2 storage only (size budget)               → shrink depth until the size fits     [Ganesh §2–3]
       B3 latency (with or without size)           → predict latency of the H plan; if it
                                                     fits → stop; else walk the ladder:
          L1 shrink FFN width and depth together, depth as evenly spaced layers ("every other" at half depth), keep the
             bottom", until the predicted latency fits                                   [Ganesh §2–3, §3.3; G&A §2.4.2]
          L2 still over → also prune heads, at most 40% of them                          [Michel et al. via G&A §2.5]
          L3 still over → the smallest rung, flagged as not meeting the budget
          never low-rank factorisation for latency                                       [Ganesh §4.2]
    K  any structural change → recover with KD from the teacher: logits + hidden states
       + attention                                                                       [Ganesh §4.3]

Sources: Xu & McAuley (AAAI 2023) "A Survey on Model Compression and Acceleration for Pretrained
Language Models" (X&M); Gupta & Agrawal (TKDD) "Compression of Deep Learning Models for Text"
(G&A); Ganesh et al. "Compressing Large-Scale Transformer-Based Models: A Case Study on BERT"
(Ganesh). Latency is sized with the calibrated predictor for the target, without building models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .plan import CompressionPlan, DistillConfig, LayerPlan
from .techniques import Embeddings
from .objectives import Budget


#: (fraction of layers kept, fraction of FFN width kept), from largest to smallest.
LADDER = ((1.0, 1.0), (1.0, 0.75), (1.0, 0.5), (0.67, 0.75), (0.67, 0.5), (0.5, 0.5), (0.5, 0.375),
          (0.5, 0.25), (0.34, 0.5), (0.34, 0.25), (0.34, 0.125), (0.17, 0.25), (0.17, 0.125))
MAX_HEAD_PRUNING = 0.4


@dataclass(frozen=True)
class Rule:
    id: str
    decision: str
    source: str


@dataclass
class TreeResult:
    plan: CompressionPlan
    path: list[Rule] = field(default_factory=list)
    predicted_ms: float | None = None
    meets_budget: bool | None = None

    def to_dict(self) -> dict:
        return {"plan": self.plan.to_dict(), "predicted_latency_ms": self.predicted_ms,
                "meets_budget_by_prediction": self.meets_budget,
                "rule_path": [{"rule": r.id, "decision": r.decision, "source": r.source} for r in self.path]}


def kept_layers(num_layers: int, keep_fraction: float) -> list[int]:
    """Every other layer from the bottom up (LayerDrop's "every other"), bottom layer always kept."""
    keep = max(1, round(num_layers * keep_fraction))
    if keep >= num_layers:
        return list(range(num_layers))
    step = num_layers / keep
    return sorted({int(i * step) for i in range(keep)})


def _plan(dims: dict, *, int8: bool, keep_fraction: float = 1.0, ffn: float = 1.0, heads: float = 1.0,
          kd_steps: int = 300, embeddings: str = "fp32") -> CompressionPlan:
    n = dims["num_layers"]
    kept = set(kept_layers(n, keep_fraction))
    layer = LayerPlan(heads=max(1, round(heads * dims["num_heads"])) if heads < 1 else None,
                      ffn=max(1, round(ffn * dims["intermediate_size"])) if ffn < 1 else None,
                      dtype="int8" if int8 else "fp32")
    structural = keep_fraction < 1 or ffn < 1 or heads < 1
    distill = DistillConfig(steps=kd_steps, weights={"logits": 1.0, "hidden": 1.0, "attention": 1.0}) \
        if structural else DistillConfig()
    return CompressionPlan(name="decision-tree-baseline", description="survey decision tree", defaults=layer,
                           layers={i: LayerPlan(keep=False) for i in range(n) if i not in kept}, distill=distill,
                           techniques={"embeddings": Embeddings(embeddings)})


def walk(dims: dict, budget: Budget, runtime: str, predict: Callable[[CompressionPlan], float] | None,
         size_of: Callable[[CompressionPlan], float] | None = None, kd_steps: int = 300) -> TreeResult:
    """Walk the tree for a model of shape ``dims``. ``predict(plan)`` gives the predicted latency
    in ms; ``size_of(plan)`` its size in MB (both used only when the budget needs them)."""
    from .latency.runtime import runtime_class

    kind = runtime_class(runtime)  # the kernels each runtime declares it has
    kernels = {"int8": kind.int8, "sparse": kind.sparse}
    path: list[Rule] = []
    # H: hardware first
    int8 = kernels["int8"]
    path.append(Rule("H1", f"{runtime} has int8 kernels → int8 on every linear" if int8 else
                     f"{runtime} has no int8 kernels → fp32",
                     "Xu & McAuley, Quantization (INT8 faster, especially on CPU); Gupta & Agrawal §3.4 (8-bit, not 3-bit)"))
    path.append(Rule("H2", f"{runtime} has {'sparse' if kernels['sparse'] else 'no sparse'} kernels → "
                     + ("sparsity allowed" if kernels["sparse"] else "no unstructured sparsity"),
                     "Ganesh et al. §4.3; Xu & McAuley, Pruning (sparse weights need sparse kernels)"))
    embeddings = "int8" if budget.size_mb is not None else "fp32"
    if budget.size_mb is not None:
        path.append(Rule("H3", f"size budget {budget.size_mb:g} MB → int8 word embeddings (per-row scales)",
                         "Ganesh et al. §2–3 (size is in the layers and embeddings); Xu & McAuley, Quantization"))
    make = lambda **kw: _plan(dims, int8=int8, kd_steps=kd_steps, embeddings=embeddings, **kw)  # noqa: E731
    plan = make()
    # B: which budget binds?
    if budget.latency_ms is None and budget.size_mb is None:
        path.append(Rule("B1", "no latency or size budget → stop", "—"))
        return TreeResult(plan, path)
    if budget.latency_ms is None:
        path.append(Rule("B2", "storage budget only → shrink depth until the size fits",
                         "Ganesh et al. §2–3 (size is in the layers and embeddings)"))
        for keep, _ in LADDER:
            plan = make(keep_fraction=keep)
            if size_of is None or size_of(plan) <= budget.size_mb:
                break
        return _with_kd(TreeResult(plan, path, meets_budget=size_of is None or size_of(plan) <= budget.size_mb))
    path.append(Rule("B3", f"latency budget {budget.latency_ms:g} ms → size choices with the latency predictor",
                     "NOTES: hardware-aware sizing; nn-Meter-style predictor"))
    fits = lambda p: predict(p) <= budget.latency_ms and (  # noqa: E731
        budget.size_mb is None or size_of is None or size_of(p) <= budget.size_mb)
    if fits(plan):
        path.append(Rule("B3.fit", f"the int8/fp32 plan is predicted at {predict(plan):.1f} ms → fits, stop", "—"))
        return TreeResult(plan, path, predict(plan), True)
    for keep, ffn in LADDER[1:]:
        plan = make(keep_fraction=keep, ffn=ffn)
        if fits(plan):
            path.append(Rule("L1", f"keep {len(kept_layers(dims['num_layers'], keep))}/{dims['num_layers']} layers "
                             f"(evenly spaced, bottom kept) and {ffn:.0%} of the FFN → {predict(plan):.1f} ms fits",
                             "Ganesh et al. §2–3 (FFN dominates FLOPs), §3.3 (keep bottom layers); "
                             "Gupta & Agrawal §2.4.2 (LayerDrop: every other layer)"))
            return _with_kd(TreeResult(plan, path, predict(plan), True))
    keep, ffn = LADDER[-1]
    plan = make(keep_fraction=keep, ffn=ffn, heads=1 - MAX_HEAD_PRUNING)
    ok = fits(plan)
    path.append(Rule("L2", f"smallest depth/FFN rung still over → also prune {MAX_HEAD_PRUNING:.0%} of heads → "
                     f"{predict(plan):.1f} ms" + (" fits" if ok else ""),
                     "Michel et al. via Gupta & Agrawal §2.5 (up to 40% of heads without noticeable loss)"))
    if not ok:
        path.append(Rule("L3", "nothing on the ladder fits → the smallest rung, NOT meeting the budget", "—"))
    path.append(Rule("L-", "no low-rank factorisation for latency", "Ganesh et al. §4.2 (SVD: 1.05× on CPU)"))
    return _with_kd(TreeResult(plan, path, predict(plan), ok))


def _with_kd(result: TreeResult) -> TreeResult:
    if result.plan.distill.steps:
        result.path.append(Rule("K", f"structure changed → KD recovery, {result.plan.distill.steps} steps, "
                                "logits + hidden states + attention", "Ganesh et al. §4.3 (KD is an important "
                                "addition; attention distillation is integral)"))
    return result


def explain() -> str:
    """The tree as text (the module docstring's diagram)."""
    doc = __doc__ or ""
    return doc[doc.index("The tree"):doc.index("Sources:")].rstrip() + "\n\n" + doc[doc.index("Sources:"):].strip()


def baseline(ctx, target, budget: Budget, *, kd_steps: int = 300, progress: bool = True,
             predictor=None) -> TreeResult:
    """Walk the tree for this task and target, sizing latency with the target's predictor
    (built and cached on first use unless given)."""
    from .latency.predictor import anchor, get_predictor

    dims = ctx.dims()
    predict = None
    if budget.latency_ms is not None:
        predictor = predictor or anchor(get_predictor(ctx.teacher_model(), target, progress=progress),
                                        ctx.teacher_model(), target)
        predict = lambda plan: predictor.predict(plan.resolve(  # noqa: E731
            dims["num_layers"], dims["num_heads"], dims["intermediate_size"], dims["hidden_size"]))
    size_of = None
    if budget.size_mb is not None:
        from .apply import compress

        def size_of(plan):
            from dataclasses import replace

            cm = compress(replace(plan, distill=DistillConfig()), ctx, progress=False, importance="magnitude")
            return cm.size_bytes() / 1e6
    return walk(dims, budget, target.runtime, predict, size_of, kd_steps=kd_steps)
