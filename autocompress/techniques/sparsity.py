"""Unstructured magnitude sparsity.

Zeroing weights leaves them in dense tensors run by dense kernels, so it gives no speed-up on
torch CPU or ONNX Runtime; it only saves storage if the weights are stored compressed. Training
(e.g. KD recovery) refills the zeros: call :func:`sparsify_` again afterwards to restore them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.arch import get_adapter
from autocompress.errors import UserError
from autocompress.techniques.lowrank import LowRankLinear


@dataclass(frozen=True)
class SparsityConfig:
    """Fraction of weights to zero per ``(layer, group)``, layer = position in the current list."""

    amounts: Mapping[tuple[int, str], float]


def sparsify_(model: nn.Module, config: SparsityConfig) -> None:
    """Zero the smallest-magnitude ``amount`` of each selected linear's weight, in place.

    Per-tensor (layer-wise) selection; biases are kept. A :class:`LowRankLinear` has both of its
    factors sparsified by the same amount.
    """
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    for (index, group), amount in config.amounts.items():
        if not 0 <= index < len(layers):
            raise UserError(f"sparsity: layer {index} does not exist (the model has {len(layers)} layers)")
        if not 0 <= amount < 1:
            raise UserError(f"sparsity: layers[{index}].{group} amount must be in [0, 1), got {amount}")
        module = adapter.get_linear(layers[index], group)
        linears = [module.down, module.up] if isinstance(module, LowRankLinear) else [module]
        for linear in linears:
            if type(linear) is not nn.Linear:
                raise UserError(
                    f"sparsity: layers[{index}].{group} is a {type(linear).__name__}; sparsify before quantizing"
                )
            zero_smallest_(linear.weight, amount)


def zero_smallest_(weight: torch.Tensor, amount: float) -> None:
    """Set the ``round(amount * numel)`` smallest-magnitude entries of ``weight`` to zero."""
    k = round(amount * weight.numel())
    if k == 0:
        return
    with torch.no_grad():
        order = torch.argsort(weight.abs().flatten(), stable=True)
        weight.view(-1)[order[:k]] = 0
