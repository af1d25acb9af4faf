"""One-shot reconstruction of pruned projections from calibration activations (least squares).

Removing attention heads or FFN neurons deletes inputs of the projection that reads them
(``attn_out``, ``ffn_out``). Instead of only slicing that projection, refit it so that, on
calibration tokens, the kept inputs reproduce the unpruned projection's output as well as a
linear map can::

    W', b' = argmin  sum_tokens || W' x_K + b' - (W x + b) ||^2

which has a closed form in the Gram matrix ``G`` of the inputs with a constant appended,
``[x, 1]``: with ``K'`` the kept inputs plus the constant, ``[W' b']^T = G[K',K']^-1 G[K',:] [W b]^T``.
The Gram matrix does not depend on which inputs are kept, so it is computed once per model (one
forward pass over the calibration batches, on the unpruned model) and every candidate's
reconstruction is a small linear solve: screening a candidate costs seconds, not a training run.
This is the layer-wise reconstruction of OBS-style structured pruning (ZipLM, Kurtic et al. 2023,
and the "mask tuning" of Kwon et al. 2022), from the teacher's activations: a pruned model's
own activations at layer l differ once layers below it are pruned too; recovery (KD) absorbs that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.arch import get_adapter
from autocompress.errors import UserError

#: The projections whose inputs structured pruning removes, and that reconstruction refits.
GROUPS = ("attn_out", "ffn_out")


@dataclass(frozen=True)
class ReconstructConfig:
    """``damp``: ridge added to the kept inputs' Gram diagonal, relative to its mean (keeps the
    solve stable when kept inputs are nearly collinear or rarely active)."""

    damp: float = 0.01

    def __post_init__(self) -> None:
        if not 0 <= self.damp < 1:
            raise UserError(f"reconstruct: damp = {self.damp} but it must be in [0, 1)")


def input_grams(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *,
                max_batches: int | None = None) -> dict[tuple[int, str], torch.Tensor]:
    """Gram matrices of the inputs of every layer's ``attn_out`` and ``ffn_out`` with a constant 1
    appended, summed over non-padding calibration tokens, in float64. Keyed by (layer position, group)."""
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    grams: dict[tuple[int, str], torch.Tensor] = {}
    mask: list[torch.Tensor | None] = [None]

    def hook(key: tuple[int, str]):
        def capture(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().flatten(0, -2)
            if mask[0] is not None and mask[0].numel() == x.shape[0]:
                x = x[mask[0]]
            x = torch.cat([x.double(), x.new_ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
            grams[key] = grams.get(key, 0) + x.T @ x

        return capture

    handles = [adapter.get_linear(layer, g).register_forward_pre_hook(hook((i, g)))
               for i, layer in enumerate(layers) for g in GROUPS]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                if max_batches is not None and seen >= max_batches:
                    break
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                attention = inputs.get("attention_mask")
                mask[0] = attention.flatten().bool() if attention is not None else None
                model(**inputs)
                seen += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if seen == 0:
        raise UserError("reconstruct: no calibration batches were given")
    return grams


def reconstructed_linear(linear: nn.Linear, kept: Sequence[int] | torch.Tensor, gram: torch.Tensor,
                         config: ReconstructConfig = ReconstructConfig()) -> nn.Linear:
    """A new ``nn.Linear`` reading only the inputs ``kept`` of ``linear`` (the unpruned one), fitted by
    least squares to ``linear``'s outputs on the inputs whose Gram (with a constant) is ``gram``."""
    n_in = linear.in_features
    if gram.shape != (n_in + 1, n_in + 1):
        raise UserError(f"reconstruct: the Gram matrix is {tuple(gram.shape)} but the layer has {n_in} inputs")
    kept = torch.as_tensor(kept, dtype=torch.long).flatten()
    rows = torch.cat([kept, torch.tensor([n_in])])
    weight = linear.weight.detach().double()
    bias = linear.bias.detach().double() if linear.bias is not None else weight.new_zeros(weight.shape[0])
    full = torch.cat([weight, bias[:, None]], dim=1)              # out x (in + 1)
    a = gram[rows][:, rows].clone()
    diag = a.diagonal()[:-1]
    if diag.numel():
        a.diagonal()[:-1] += config.damp * diag.mean().clamp_min(1e-12)
    solution = torch.linalg.solve(a, gram[rows] @ full.T)       # (kept + 1) x out
    new = nn.Linear(len(kept), linear.out_features, bias=True, device=linear.weight.device,
                    dtype=linear.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(solution[:-1].T.to(new.weight.dtype))
        new.bias.copy_(solution[-1].to(new.bias.dtype))
    new.weight.requires_grad_(linear.weight.requires_grad)
    new.bias.requires_grad_(linear.weight.requires_grad)
    return new


def reconstruct_(model: nn.Module, originals: Mapping[tuple[int, str], nn.Linear],
                 kept: Mapping[tuple[int, str], Sequence[int] | torch.Tensor],
                 grams: Mapping[tuple[int, str], torch.Tensor], config: ReconstructConfig = ReconstructConfig()) -> None:
    """Replace each pruned projection ``(layer position, group)`` of ``model`` with its reconstruction
    from ``originals[key]`` (the unpruned linear) and the inputs ``kept[key]``, in place."""
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    for key, indices in kept.items():
        position, group = key
        if group not in GROUPS:
            raise UserError(f"reconstruct: {group} is not one of {', '.join(GROUPS)}")
        if key not in grams:
            raise UserError(f"reconstruct: no calibration statistics for layer {position} {group}")
        adapter.set_linear(layers[position], group, reconstructed_linear(originals[key], indices, grams[key], config))


def output_linear(model: nn.Module) -> nn.Linear:
    """The classifier's last linear layer (the one producing the logits)."""
    n = model.config.num_labels
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == n]
    if not found:
        raise UserError(f"reconstruct: no linear layer with {n} outputs (the classifier) in the model")
    return found[-1]


def refit_classifier_(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                      targets: Sequence[torch.Tensor], config: ReconstructConfig = ReconstructConfig()) -> None:
    """Refit the classifier's last linear layer, in place, by least squares from its inputs on
    ``batches`` to ``targets`` (one tensor of logits per batch, e.g. the teacher's): a linear probe
    of what the compressed encoder still represents, without any gradient step."""
    head = output_linear(model)
    inputs: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().flatten(0, -2)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    finally:
        handle.remove()
        model.train(was_training)
    z = torch.cat(inputs).double()
    z = torch.cat([z, z.new_ones(z.shape[0], 1)], dim=1)
    y = torch.cat(list(targets)).double()
    gram = z.T @ z
    gram.diagonal()[:-1] += config.damp * gram.diagonal()[:-1].mean().clamp_min(1e-12)
    solution = torch.linalg.solve(gram, z.T @ y)  # (in + 1) x labels
    with torch.no_grad():
        head.weight.copy_(solution[:-1].T.to(head.weight.dtype))
        if head.bias is not None:
            head.bias.copy_(solution[-1].to(head.bias.dtype))
