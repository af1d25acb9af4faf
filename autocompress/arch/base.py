"""Where things live inside one encoder architecture.

An :class:`ArchAdapter` is stateless: subclasses only fill in the class attributes (module paths
relative to ``model.base_model`` or to one encoder layer, and config/attribute names). Techniques
talk to models exclusively through an adapter, so adding an architecture means writing one
adapter module and registering it in ``autocompress.arch``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from torch import nn

#: The six linear groups of an encoder layer that plans and techniques address.
LINEAR_GROUPS = ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")


class ArchAdapter:
    """Locates encoder layers, their six linear groups and their head-count attributes."""

    model_types: ClassVar[tuple[str, ...]]
    #: Path of the encoder's ``nn.ModuleList`` of layers, relative to ``model.base_model``.
    layers_path: ClassVar[str]
    #: Path of each linear group (see ``LINEAR_GROUPS``), relative to one encoder layer.
    linear_paths: ClassVar[Mapping[str, str]]
    #: Path of the self-attention module that reshapes by head, relative to one encoder layer.
    attention_path: ClassVar[str]
    #: Attention-module attribute holding the layer's head count.
    heads_attr: ClassVar[str] = "num_attention_heads"
    #: Attention-module attribute holding heads * head_dim, if the module has one.
    width_attr: ClassVar[str | None] = "all_head_size"
    #: Config attribute holding the FFN width.
    intermediate_attr: ClassVar[str] = "intermediate_size"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_types={self.model_types})"

    # -- sizes from the config (the original model's; per-layer sizes may be smaller) ---------

    #: positions the position embeddings reserve before the first token (RoBERTa-style padding offset)
    position_offset: int = 0

    def max_positions(self, model: nn.Module) -> int | None:
        """The longest input the model's position embeddings allow (None: no limit known)."""
        n = getattr(model.config, "max_position_embeddings", None)
        return None if n is None else int(n) - self.position_offset

    def num_layers(self, model: nn.Module) -> int:
        return model.config.num_hidden_layers

    def num_heads(self, model: nn.Module) -> int:
        return model.config.num_attention_heads

    def hidden_size(self, model: nn.Module) -> int:
        return model.config.hidden_size

    def head_dim(self, model: nn.Module) -> int:
        return self.hidden_size(model) // self.num_heads(model)

    def intermediate_size(self, model: nn.Module) -> int:
        return getattr(model.config, self.intermediate_attr)

    # -- layers ---------------------------------------------------------------------------

    def encoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.base_model.get_submodule(self.layers_path)

    def set_encoder_layers(self, model: nn.Module, layers: Sequence[nn.Module]) -> None:
        """Replace the layer list and set ``config.num_hidden_layers`` to match."""
        parent_path, _, name = self.layers_path.rpartition(".")
        parent = model.base_model.get_submodule(parent_path)
        setattr(parent, name, nn.ModuleList(layers))
        model.config.num_hidden_layers = len(layers)

    # -- linears ------------------------------------------------------------------------------

    def get_linear(self, layer: nn.Module, group: str) -> nn.Module:
        return layer.get_submodule(self._linear_path(group))

    def set_linear(self, layer: nn.Module, group: str, module: nn.Module) -> None:
        parent_path, _, name = self._linear_path(group).rpartition(".")
        setattr(layer.get_submodule(parent_path), name, module)

    def _linear_path(self, group: str) -> str:
        if group not in LINEAR_GROUPS:
            raise ValueError(f"unknown linear group {group!r}; groups are {LINEAR_GROUPS}")
        return self.linear_paths[group]

    # -- heads --------------------------------------------------------------------------------

    def attention(self, layer: nn.Module) -> nn.Module:
        return layer.get_submodule(self.attention_path)

    def layer_num_heads(self, layer: nn.Module) -> int:
        return getattr(self.attention(layer), self.heads_attr)

    def set_layer_num_heads(self, layer: nn.Module, n: int) -> None:
        """Update the attributes the attention module reshapes with (head dim is unchanged)."""
        attn = self.attention(layer)
        setattr(attn, self.heads_attr, n)
        if self.width_attr is not None:
            setattr(attn, self.width_attr, n * attn.attention_head_size)

    def set_layer_heads(self, layer: nn.Module, kept: Sequence[int]) -> None:
        """Record that ``layer``'s projections were sliced to heads ``kept`` (indices into its
        current heads, ascending). Architectures with per-head state beyond the linears (MPNet's
        shared relative position bias) override this."""
        self.set_layer_num_heads(layer, len(kept))
