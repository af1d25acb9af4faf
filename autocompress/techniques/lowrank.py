"""Low-rank factorisation of linears by truncated SVD."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.arch import get_adapter
from autocompress.errors import UserError


class LowRankLinear(nn.Module):
    """``up(down(x))``: ``down`` is in->rank without bias, ``up`` is rank->out with the original bias.

    The constructor only builds the shapes (for rebuilding before ``load_state_dict``);
    :meth:`from_linear` fills them from a truncated SVD.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    @property
    def in_features(self) -> int:
        return self.down.in_features

    @property
    def out_features(self) -> int:
        return self.up.out_features

    @property
    def rank(self) -> int:
        return self.down.out_features

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """Best rank-``rank`` approximation of ``linear`` (exact when rank = min(in, out)).

        ``W = U S Vh`` is split as ``up = U_r sqrt(S_r)``, ``down = sqrt(S_r) Vh_r`` (SVD in float64).
        """
        weight = linear.weight.detach()
        u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
        root = s[:rank].sqrt()
        module = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
        module.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            module.down.weight.copy_(root[:, None] * vh[:rank])
            module.up.weight.copy_(u[:, :rank] * root[None, :])
            if linear.bias is not None:
                module.up.bias.copy_(linear.bias)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


@dataclass(frozen=True)
class LowRankConfig:
    """Rank per ``(layer, group)``; layer indices are positions in the model's current layer list."""

    ranks: Mapping[tuple[int, str], int]


def factorize_(model: nn.Module, config: LowRankConfig, *, svd: bool = True) -> None:
    """Replace each selected linear with a :class:`LowRankLinear`, in place.

    ``svd=False`` only builds correctly shaped factors (no SVD), for rebuilding a saved model's
    structure before ``load_state_dict`` overwrites the weights.
    """
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    for (index, group), rank in config.ranks.items():
        if not 0 <= index < len(layers):
            raise UserError(f"low-rank: layer {index} does not exist (the model has {len(layers)} layers)")
        linear = adapter.get_linear(layers[index], group)
        if type(linear) is not nn.Linear:
            raise UserError(f"low-rank: layers[{index}].{group} is already a {type(linear).__name__}")
        limit = min(linear.in_features, linear.out_features)
        if not 1 <= rank <= limit:
            raise UserError(
                f"low-rank: layers[{index}].{group} is {linear.in_features}->{linear.out_features}, "
                f"so its rank must be in 1..{limit}, got {rank}"
            )
        if svd:
            module = LowRankLinear.from_linear(linear, rank)
        else:
            module = LowRankLinear(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
            module.to(device=linear.weight.device, dtype=linear.weight.dtype)
        adapter.set_linear(layers[index], group, module)
