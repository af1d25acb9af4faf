"""Model specs → local folders with safetensors weights, and loading them.

A spec is a catalog name, a local folder holding ``*.safetensors`` + ``config.json``, or a hub id
(``owner/name``, needs internet). Weights load only from safetensors; remote code runs only when
the caller passes ``trust_remote_code=True``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import assets, cache
from .errors import UserError
from .tasks import DEFAULT_TASK, get_task

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "merges.txt", "vocab.json",
                   "special_tokens_map.json", "sentencepiece.bpe.model", "spiece.model")


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: where it lives and what it is (hashes of its weights and tokenizer)."""

    spec: str
    path: Path
    weights_sha256: str
    tokenizer_sha256: str

    @property
    def fingerprint(self) -> str:
        return cache.sha256_json([self.weights_sha256, _config_text(self.path)])


def resolve_model(spec: str) -> ModelSource:
    if spec in assets.CATALOG:
        asset = assets.get(spec)
        if asset.kind != "model":
            raise UserError(f"'{spec}' is a dataset, not a model; models: {_catalog()}")
        path = assets.fetch(spec)
        files = assets.manifest(path)["files"]
        return ModelSource(spec, path, _combine(files, lambda n: n.endswith(".safetensors")),
                           _combine(files, lambda n: n in TOKENIZER_FILES))
    local = Path(spec).expanduser()
    if local.exists():
        return _local(spec, local)
    if "/" in spec and not spec.startswith((".", "/", "~")):
        return _local(spec, _from_hub(spec))
    raise UserError(f"unknown model '{spec}': not a catalog name ({_catalog()}), not an existing folder, "
                    "not a hub id (owner/name)")


def _catalog() -> str:
    return ", ".join(a.name for a in assets.CATALOG.values() if a.kind == "model")


def _combine(files: dict[str, str], keep) -> str:
    return cache.sha256_json(sorted((name, sha) for name, sha in files.items() if keep(name)))


def _config_text(path: Path) -> str:
    cfg = path / "config.json"
    return cfg.read_text() if cfg.is_file() else ""


def _local(spec: str, folder: Path) -> ModelSource:
    if not folder.is_dir():
        raise UserError(f"{folder}: a model must be a folder with config.json and *.safetensors weights")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        found = ", ".join(p.name for p in folder.iterdir()) or "nothing"
        raise UserError(f"{folder}: no *.safetensors weights (found {found}); autocompress loads "
                        "weights only from safetensors")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: no config.json")
    hashes = {p.name: cache.sha256_file(p) for p in weights}
    tok = {n: cache.sha256_file(folder / n) for n in TOKENIZER_FILES if (folder / n).is_file()}
    return ModelSource(spec, folder, cache.sha256_json(sorted(hashes.items())), cache.sha256_json(sorted(tok.items())))


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:
        raise UserError(f"cannot download '{repo_id}' from the Hugging Face hub ({type(exc).__name__}): "
                        f"the hub is unreachable or the id is wrong; pass a local folder or a catalog "
                        f"name ({_catalog()})") from exc


def quiet_transformers() -> None:
    """Silence transformers' load-time chatter (newly initialised heads etc.); we report ourselves."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*were not initialized from the model checkpoint.*")


def load_tokenizer(source: ModelSource, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(source.path, trust_remote_code=trust_remote_code)


def load_model(path: str | Path, num_labels: int | None = None, *, trust_remote_code: bool = False,
               label_names: tuple[str, ...] | None = None, task: str = DEFAULT_TASK):
    """The model with ``task``'s head (:mod:`autocompress.tasks`) from a safetensors folder (the
    head is added if absent), in eval mode."""
    quiet_transformers()
    return get_task(task).from_pretrained(path, num_labels=num_labels, label_names=label_names,
                                          trust_remote_code=trust_remote_code)


def model_dims(path: str | Path, *, task: str = DEFAULT_TASK) -> dict[str, int]:
    """Layers, heads, FFN width and hidden size read from a folder's config, without loading weights."""
    import torch
    from transformers import AutoConfig

    from .arch import get_adapter

    quiet_transformers()
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = get_task(task).model_class().from_config(config)
    adapter = get_adapter(model)
    return {"num_layers": adapter.num_layers(model), "num_heads": adapter.num_heads(model),
            "intermediate_size": adapter.intermediate_size(model), "hidden_size": adapter.hidden_size(model)}
