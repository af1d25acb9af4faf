"""What fits in the time limit: seconds per screened and per full candidate on this machine, measured
before the first trial, and the number of candidates the search can evaluate.

Measured on the teacher itself (a student is never larger), so the figures are upper bounds:
one KD training step (forward, backward and optimizer step on a batch of the recovery's size,
plus the teacher's own forward when hidden or attention states are distilled) and one forward
pass over an evaluation batch. A screened candidate costs its screening steps and the screening
subset's forward passes; a full one adds the rest of its recovery, the full validation and test
sets and its latency measurement. During the search the figures firm up from finished trials
(:meth:`FitEstimate.observed`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

#: Below this many full candidates in the time limit the search warns: TPE's start-up alone is 10.
FEW_FULL = 10
#: A screened candidate should cost about this much at most ...
SCREEN_SECONDS = 60.0
#: ... but a space's screening is kept as it is while it costs no more than this (the default model's
#: 80-step screen costs ~21-40 s here: a limit near it would change its screening, and the figures
#: it is compared by, with the machine's speed from one run to the next).
SCREEN_KEEP_BELOW = 2 * SCREEN_SECONDS
#: Screening with fewer KD steps than this ranks no better than the untrained linear probe: on the
#: default task, Spearman with the full result 0.81 after 40 steps, 0.91 after 80 (README), the
#: probe after no step 0.84 over every kind of plan (docs/screening.md).
MIN_SCREEN_STEPS = 40
#: The allocated space scales a cut plan's recovery up to ``max_steps_scale`` x its steps (about equal
#: recovery time per candidate) while the whole model's recovery (its steps at the teacher's step
#: speed) is estimated at no more than this; above it, every plan gets the space's steps. The default
#: model's 300 hidden-state KD steps take ~110-145 s here (step 0.37-0.48 s), a BERT-base-sized
#: model's ~580-730 s (1.92-2.44 s), where a plan at a quarter of the teacher's latency steps only
#: 1.42x faster than the teacher (docs/base-size.md): scaled, its full candidate would exceed 10 min.
RECOVERY_KEEP_BELOW = 300.0


@dataclass(frozen=True)
class FitEstimate:
    step_s: float            # one KD step
    forward_s: float         # the forward pass of one evaluation batch (64 examples)
    screen_s: float          # one screened candidate
    full_s: float            # one candidate promoted to the full run (screening included)
    seconds: float | None    # time the search has (None: no limit)
    promote_rate: float = 0.5
    source: str = "measured on the teacher before the first trial (upper bound)"
    queued_s: float = 0.0    # seconds of the warm starts still to run (full runs of their own KD steps)
    queued: int = 0          # how many warm starts those are
    kd_steps: int = 0        # the space's recovery steps (full_s includes them)
    screening: str | None = None  # how the space's own screening was changed for this model, if it was

    def full_run_s(self, kd_steps: int) -> float:
        """A full run of a plan with ``kd_steps`` recovery steps (the teacher warm start: none)."""
        return max(0.0, self.full_s - (self.kd_steps - kd_steps) * self.step_s)

    def candidate_s(self) -> float:
        """Expected seconds per sampled candidate at the promotion rate."""
        return (1 - self.promote_rate) * self.screen_s + self.promote_rate * self.full_s

    def fits(self) -> tuple[int, int] | None:
        """(candidates, of which full) in the time, or None without a limit."""
        if self.seconds is None:
            return None
        n = max(0, int((self.seconds - self.queued_s) / self.candidate_s()))
        return n, int(n * self.promote_rate)

    def observed(self, rows: list[dict]) -> "FitEstimate":
        """The estimate with the medians of finished trials' seconds in place of the measured bounds."""
        import statistics

        screen = [r["seconds"] for r in rows if r.get("fidelity") == "screen" and r.get("seconds")]
        full = [r["seconds"] for r in rows if r.get("fidelity") == "full" and r.get("seconds")
                and r.get("kd_steps")]  # not the teacher or an int8-only plan: they train nothing
        sampled = [r for r in rows if r.get("fidelity") in ("screen", "full") and r.get("promotion") != "warm start"]
        rate = (sum(r["fidelity"] == "full" for r in sampled) / len(sampled)) if len(sampled) >= 3 else self.promote_rate
        return replace(self, screen_s=statistics.median(screen) if screen else self.screen_s,
                       full_s=statistics.median(full) if full else self.full_s, promote_rate=rate,
                       source=f"from {len(screen) + len(full)} finished trials")

    def line(self) -> str:
        fits = self.fits()
        head = (f"about {self.screen_s:.0f} s per screened and {self.full_s:.0f} s per full candidate "
                f"({self.source})")
        if fits is None:
            return head
        queued = f" after the warm starts (~{self.queued_s / 60:.1f} min)" if self.queued_s else ""
        return (f"{head}: ~{fits[0]} sampled candidates fit in {self.seconds / 60:.0f} min{queued}, ~{fits[1]} "
                f"of them full at a {self.promote_rate:.0%} promotion rate")

    def warning(self) -> str | None:
        fits = self.fits()
        if fits is None or fits[1] >= FEW_FULL:
            return None
        return (f"only ~{fits[1]} sampled full candidates fit in the time limit (fewer than {FEW_FULL}): the "
                f"search will mostly report its warm starts. Give it more time (--time-limit), fewer KD steps "
                f"(distill.steps in the space file), --no-finetune for an already fine-tuned model, "
                f"or more workers (--ray-address of a cluster)")


def measure(ctx, *, kd_steps: int, kd_batch_size: int, screen_steps: int, screen_examples: int,
            needs_teacher: bool, latency_ms: float, seconds: float | None, probe_examples: int = 0,
            repeats: int = 2) -> FitEstimate:
    """Time a KD step and an evaluation forward pass on a copy of ``ctx``'s teacher; derive the costs."""
    step_s, forward_s = time_steps(ctx, kd_batch_size=kd_batch_size, needs_teacher=needs_teacher, repeats=repeats)
    return costs(step_s, forward_s, kd_steps=kd_steps, screen_steps=screen_steps, screen_examples=screen_examples,
                 probe_examples=probe_examples, n_eval=len(ctx.data["validation"]) + len(ctx.data["test"]),
                 latency_ms=latency_ms, seconds=seconds)


def costs(step_s: float, forward_s: float, *, kd_steps: int, screen_steps: int, screen_examples: int,
          probe_examples: int, n_eval: int, latency_ms: float, seconds: float | None) -> FitEstimate:
    """Seconds per screened and full candidate from the seconds of one KD step and one evaluation
    batch (64 examples)."""
    structure_s = 2.0
    screen_s = structure_s + screen_steps * step_s + forward_s * (screen_examples + probe_examples) / 64
    # the rest of the recovery, full validation and test sets, saving, and a fresh process timing
    # the model (loading it and 20+ runs after warm-up)
    full_s = (screen_s + max(0, kd_steps - screen_steps) * step_s + forward_s * n_eval / 64
              + 10.0 + 40 * latency_ms / 1000)
    return FitEstimate(step_s=step_s, forward_s=forward_s, screen_s=screen_s, full_s=full_s, seconds=seconds,
                       kd_steps=kd_steps)


def screening_for(fidelity, step_s: float, forward_s: float, *, seconds: float = SCREEN_SECONDS,
                  keep_below: float = SCREEN_KEEP_BELOW, probe_examples: int = 1024):
    """The screening a model this slow gets: ``fidelity`` as it is while its screen is estimated
    at no more than ``keep_below`` seconds; otherwise as many KD steps as fit in ``seconds``, or,
    when fewer than :data:`MIN_SCREEN_STEPS` fit, none: the untrained linear probe
    (``screen_score: probe``, fitted on ``probe_examples`` training examples), which ranks about
    as well as 40 steps on the default task. (Screening by the probe only changes what is scored;
    a promoted candidate's full recovery is the same.)"""
    def screen_s(steps: int, probe: int) -> float:
        return costs(step_s, forward_s, kd_steps=steps, screen_steps=steps, screen_examples=fidelity.screen_examples,
                     probe_examples=probe, n_eval=0, latency_ms=0.0, seconds=None).screen_s

    own_probe = probe_examples if fidelity.screen_score == "probe" else 0
    if screen_s(fidelity.screen_steps, own_probe) <= keep_below:
        return fidelity
    fixed = screen_s(0, own_probe)
    steps = min(fidelity.screen_steps, int(max(0.0, seconds - fixed) / step_s)) if step_s > 0 else fidelity.screen_steps
    if steps >= MIN_SCREEN_STEPS:
        return replace(fidelity, screen_steps=steps)
    return replace(fidelity, screen_steps=0, screen_score="probe")


def recovery_scale_for(kd_scale: float, kd_steps: int, step_s: float, *, keep_below: float | None = None) -> float:
    """The recovery scale a model this slow gets: ``kd_scale`` while ``kd_steps`` at ``step_s`` (the
    whole model's recovery) take no more than ``keep_below`` seconds (:data:`RECOVERY_KEEP_BELOW`),
    else 1 (no scaling)."""
    keep_below = RECOVERY_KEEP_BELOW if keep_below is None else keep_below
    return kd_scale if kd_steps * step_s <= keep_below else min(kd_scale, 1.0)


def estimate(ctx, space, teacher_latency_ms: float, seconds: float | None, recorded: dict | None = None):
    """The space with its screening and recovery scale sized to the model (:func:`screening_for`,
    :func:`recovery_scale_for`; ``recorded``: what a continued study used, kept so that its
    candidates stay comparable) and its fit estimate, measured now."""
    from ..techniques.distill import HIDDEN_CACHE_BYTES, hidden_cache_bytes
    from .space import KD_KINDS

    kinds = [KD_KINDS.get(k, {}) for k in space.kd_kinds]
    dims = ctx.dims()  # hidden-state KD reads the teacher's cached states when they fit (techniques.distill)
    cache_fits = hidden_cache_bytes(ctx.data["train"], dims["num_layers"], dims["hidden_size"]) <= HIDDEN_CACHE_BYTES
    step_s, forward_s = time_steps(ctx, kd_batch_size=space.kd_batch_size, needs_teacher=any(
        k.get("attention") or (k.get("hidden") and not cache_fits) for k in kinds))
    fidelity = space.fidelity
    if recorded:
        fidelity = replace(fidelity, screen_steps=int(recorded["screen_steps"]), screen_score=recorded["screen_score"])
    else:
        fidelity = screening_for(fidelity, step_s, forward_s, probe_examples=sum(
            len(b["labels"]) for b in ctx.probe_set()[0]) if fidelity.screen_score == "probe" else 16 * 64)
    scale_note = None
    if hasattr(space, "kd_scale"):  # the allocated space
        scale = recovery_scale_for(space.kd_scale, space.kd_steps, step_s)
        if recorded and recorded.get("kd_scale") is not None:
            scale = float(recorded["kd_scale"])
        elif scale < space.kd_scale:
            scale_note = (f"the whole model's {space.kd_steps} KD steps would take ~{space.kd_steps * step_s:.0f} s "
                          f"on this model ({step_s:.1f} s per step): every plan recovers for {space.kd_steps} steps, "
                          f"not up to {space.kd_scale:g}x as many (distill.max_steps_scale)")
        space = replace(space, kd_scale=scale)
    n_eval = len(ctx.data["validation"]) + len(ctx.data["test"])

    def fit(f) -> FitEstimate:
        probe = sum(len(b["labels"]) for b in ctx.probe_set()[0]) if f.screen_score == "probe" else 0
        return costs(step_s, forward_s, kd_steps=space.kd_steps, screen_steps=f.screen_steps,
                     screen_examples=f.screen_examples, probe_examples=probe, n_eval=n_eval,
                     latency_ms=teacher_latency_ms, seconds=None if seconds is None else max(0.0, seconds))

    result = fit(fidelity)
    if fidelity != space.fidelity:
        now = (f"after {fidelity.screen_steps} KD steps" if fidelity.screen_score != "probe" or fidelity.screen_steps
               else "with the untrained linear probe (no KD step; on the default task it ranks about as 40 steps do)")
        if recorded:
            note = f"screening {now}, as this study has screened from its start (sized to the model then)"
        else:
            note = (f"screening after {space.fidelity.screen_steps} KD steps would take "
                    f"~{fit(space.fidelity).screen_s:.0f} s per candidate on this model ({step_s:.1f} s per step): "
                    f"screening {now} instead, ~{result.screen_s:.0f} s")
        result = replace(result, screening=note)
    if scale_note:
        result = replace(result, screening="; ".join(filter(None, (result.screening, scale_note))))
    return replace(space, fidelity=fidelity), result


def time_steps(ctx, *, kd_batch_size: int, needs_teacher: bool, repeats: int = 2) -> tuple[float, float]:
    """Seconds of one KD step (batch ``kd_batch_size``) on a copy of ``ctx``'s teacher and of one
    forward pass over an evaluation batch of 64."""
    import torch

    from .. import training

    model = copy.deepcopy(ctx.teacher_model()).train()
    teacher = ctx.teacher_model()
    batch = next(training.iterate(ctx.data["train"], kd_batch_size, pad_id=ctx.pad_id, shuffle=True, seed=ctx.seed))
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        out = model(**inputs, output_hidden_states=needs_teacher)
        loss = out.logits.float().logsumexp(-1).mean()
        if needs_teacher:
            with torch.no_grad():
                teacher(**inputs, output_hidden_states=True)
            loss = loss + sum(h.pow(2).mean() for h in out.hidden_states) * 1e-6
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    step_s = (time.perf_counter() - start) / repeats
    model = optimizer = None  # freed before the forward pass is timed (step() is not called again)
    eval_batch = next(training.iterate(ctx.data["validation"], 64, pad_id=ctx.pad_id))
    eval_inputs = {k: v for k, v in eval_batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        teacher(**eval_inputs)
        start = time.perf_counter()
        teacher(**eval_inputs)
        forward_s = time.perf_counter() - start
    return step_s, forward_s
