"""Architecture adapters, picked by ``model.config.model_type``."""

from torch import nn

from autocompress.arch.base import ArchAdapter
from autocompress.arch.bert import BertAdapter
from autocompress.arch.distilbert import DistilBertAdapter
from autocompress.arch.mpnet import MPNetAdapter
from autocompress.arch.roberta import RobertaAdapter
from autocompress.errors import UserError

ADAPTERS: dict[str, ArchAdapter] = {}


def register_adapter(adapter: ArchAdapter) -> None:
    """Make ``get_adapter`` return ``adapter`` for each of its ``model_types``."""
    for model_type in adapter.model_types:
        ADAPTERS[model_type] = adapter


for _adapter in (BertAdapter(), RobertaAdapter(), DistilBertAdapter(), MPNetAdapter()):
    register_adapter(_adapter)


def get_adapter(model: nn.Module) -> ArchAdapter:
    """The adapter for a transformers model; UserError for unsupported architectures."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        raise UserError(
            f"unsupported model type {model_type!r}; supported model types: {', '.join(sorted(ADAPTERS))}"
        )
    return ADAPTERS[model_type]


__all__ = ["ADAPTERS", "ArchAdapter", "get_adapter", "register_adapter"]
