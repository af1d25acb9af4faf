"""A compressed model and its self-describing folder.

A folder written by :meth:`CompressedModel.save_pretrained` holds:

- ``plan.yaml`` — the plan it was built from;
- ``autocompress.json`` — schema tag, the plan resolved for this model (per-layer shapes, int8
  linears), label names, where it came from, and its metrics;
- ``config.json`` — the *uncompressed* architecture (per-layer widths are not expressible in a
  Hugging Face config, so plain ``from_pretrained`` cannot load this folder: use
  :func:`autocompress.load`);
- ``model.safetensors`` — the fp32 weights after recovery (int8 linears and embeddings are
  quantized again at load; quantization is deterministic, so the reloaded logits equal the saved
  model's);
- the tokenizer files.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import cache
from .errors import UserError
from .plan import CompressionPlan, ResolvedLayer
from .tasks import DEFAULT_TASK, get_task

SCHEMA = "autocompress.model/v1"
MANIFEST = "autocompress.json"


@dataclass
class CompressedModel:
    model: torch.nn.Module = field(repr=False)  # ready to run (int8 linears quantized)
    plan: CompressionPlan
    resolved: list[ResolvedLayer] = field(repr=False)
    fp32_state: dict[str, torch.Tensor] = field(repr=False)
    base_config: dict = field(repr=False)
    tokenizer: object = field(repr=False)
    params: int = 0
    info: dict = field(default_factory=dict, repr=False)
    task: str = DEFAULT_TASK  # the head it carries (autocompress.tasks)
    source: Path | None = field(default=None, repr=False)  # the folder it was loaded from, if any

    @property
    def label_names(self) -> list[str]:
        return [self.base_config["id2label"][k] for k in sorted(self.base_config["id2label"], key=int)]

    def size_bytes(self) -> int:
        """Serialised size of the weights as they run (int8 linears packed, int8 embeddings with their
        scales, everything else fp32)."""
        buffer = io.BytesIO()
        torch.save(self.model.state_dict(), buffer)
        return buffer.tell()

    def fp32_model(self) -> torch.nn.Module:
        """A fresh fp32 copy of the compressed structure and weights (nothing quantized)."""
        return build_fp32(self.base_config, self.resolved, self.fp32_state, task=self.task, plan=self.plan)

    def save_pretrained(self, out: str | Path, *, metrics: dict | None = None) -> Path:
        """Write the folder atomically (replacing an existing one); return its path."""
        from safetensors.torch import save_file

        out = Path(out)
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} exists and is not a folder")
        with cache.atomic_dir(out, replace=True) as tmp:
            self.plan.save(tmp / "plan.yaml")
            (tmp / "config.json").write_text(json.dumps(self.base_config, indent=2, sort_keys=True))
            save_file({k: v.contiguous() for k, v in self.fp32_state.items()}, tmp / "model.safetensors",
                      metadata={"format": "pt", "schema": SCHEMA})
            self.tokenizer.save_pretrained(tmp)
            cache.atomic_write_json(tmp / MANIFEST, {
                "schema": SCHEMA,
                "task": self.task,
                "plan_fingerprint": self.plan.fingerprint(),
                "resolved": [layer_to_dict(r) for r in self.resolved],
                "params": self.params,
                "info": self.info,
                "metrics": metrics or {},
            })
        return out


def layer_to_dict(r: ResolvedLayer) -> dict:
    return {"index": r.index, "keep": r.keep, "heads": r.heads, "ffn": r.ffn, "rank": dict(r.rank),
            "dtype": dict(r.dtype), "sparsity": dict(r.sparsity)}


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_fp32(base_config: dict, resolved: list[ResolvedLayer], state: dict[str, torch.Tensor], *,
               task: str = DEFAULT_TASK, plan: CompressionPlan | None = None) -> torch.nn.Module:
    """The compressed architecture from the uncompressed config and the plan (its layers, then its
    ``structure``-stage techniques, e.g. a trimmed vocabulary), with ``state`` loaded."""
    from .models import quiet_transformers
    from .transform import rebuild_structure_

    quiet_transformers()
    model = get_task(task).from_config(base_config)
    rebuild_structure_(model, resolved)
    for technique in plan.techniques_at("structure") if plan is not None else ():
        technique.rebuild_(model, state)
    model.load_state_dict(state, strict=True)
    return model.eval()


def write_metrics(path: str | Path, metrics: dict) -> None:
    """Replace the metrics recorded in a saved folder's manifest (e.g. once its latency is measured)."""
    manifest_path = Path(path) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    cache.atomic_write_json(manifest_path, {**manifest, "metrics": metrics})


def load(path: str | Path) -> CompressedModel:
    """Load a folder written by :meth:`CompressedModel.save_pretrained`; logits equal the saved
    model's. Weights are read only from safetensors."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from .transform import finalize_

    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{path}: not a compressed model folder (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("schema") != SCHEMA:
        raise UserError(f"{path}: schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    plan = CompressionPlan.load(path / "plan.yaml")
    resolved = [ResolvedLayer(**d) for d in manifest["resolved"]]
    base_config = json.loads((path / "config.json").read_text())
    state = load_file(path / "model.safetensors")
    task = manifest.get("task", DEFAULT_TASK)  # folders saved before tasks were named hold classifiers
    model = build_fp32(base_config, resolved, state, task=task, plan=plan)
    params = count_params(model)
    finalize_(model, plan, resolved)
    return CompressedModel(model=model, plan=plan, resolved=resolved, fp32_state=state,
                           base_config=base_config,
                           tokenizer=AutoTokenizer.from_pretrained(path), params=params,
                           info={**manifest.get("info", {}), "metrics": manifest.get("metrics", {})}, task=task,
                           source=path)
