"""Dropping whole encoder layers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autocompress.arch import get_adapter
from autocompress.errors import UserError


@dataclass(frozen=True)
class LayerDropConfig:
    """Layers to remove, by position in the model's current layer list."""

    drop: tuple[int, ...]

    @classmethod
    def every_other(cls, num_layers: int, keep_bottom: bool = True) -> LayerDropConfig:
        """Drop odd layers (keeping layer 0) or, with ``keep_bottom=False``, even ones."""
        return cls(tuple(range(1 if keep_bottom else 0, num_layers, 2)))


def drop_layers_(model: nn.Module, config: LayerDropConfig) -> None:
    """Remove the listed layers in place; ``config.num_hidden_layers`` follows."""
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    drop = set(config.drop)
    if not drop:
        return
    if not drop <= set(range(len(layers))):
        raise UserError(
            f"layer drop: layers {sorted(drop - set(range(len(layers))))} do not exist "
            f"(the model has {len(layers)} layers)"
        )
    if len(drop) == len(layers):
        raise UserError(f"layer drop: cannot drop all {len(layers)} layers")
    adapter.set_encoder_layers(model, [layer for i, layer in enumerate(layers) if i not in drop])
