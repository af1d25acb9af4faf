"""bf16 arithmetic: every floating-point weight and activation of the model in bfloat16.

A plan's ``precision: {dtype: bf16}`` section (:class:`Precision`, a whole-model technique: this
file is all of it). On a CPU with bf16 matrix kernels (AVX512-BF16 or AMX) torch runs a bf16
model on them: the default teacher read 8.01 ms against 15.23 ms in fp32 and 9.50 ms with int8
linears, at the teacher's accuracy (torch, batch 1 × 128, 2 threads, an Intel Xeon with AMX;
``benchmarks/runtimes.py``, runs/runtimes23). Only the whole model pays: bf16 linears between fp32
layer norms and attention read 9.0 ms against 7.4 ms for the whole model (a one-off timing: the
casts), and int8 linears inside a bf16 model 10.49 ms (each casts its input back to fp32). The
runtime says whether it has the kernels (:attr:`~autocompress.latency.runtime.Runtime.bf16`); the
calibrated predictor says what it saves.

Like int8, it runs after recovery (training stays fp32): the saved folder keeps fp32 weights and
the cast is applied again at load. Logits are returned in fp32, so scoring code sees the same
types. The graph exported to ONNX stays fp32: OpenVINO compiles it in bf16 by a compile option
(``INFERENCE_PRECISION_HINT``), and ONNX Runtime, whose CPU provider has no bf16 kernels for these
graphs, refuses a bf16 plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autocompress.techniques.base import Technique


def _float_outputs(module, args, output):
    """Forward hook: the model's floating-point outputs (logits, hidden states) back in fp32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if hasattr(output, "keys"):  # a transformers ModelOutput (an ordered dict)
        for key in list(output.keys()):
            value = output[key]
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                output[key] = value.float()
        return output
    return output


def cast_bf16_(model: nn.Module) -> nn.Module:
    """Cast ``model``'s floating-point parameters and buffers to bfloat16, in place, and return
    fp32 outputs; a second call changes nothing. Returns the model."""
    if getattr(model, "_autocompress_bf16", False):
        return model
    model.to(torch.bfloat16)
    model.register_forward_hook(_float_outputs)
    model._autocompress_bf16 = True
    return model.eval()


def is_bf16(model: nn.Module) -> bool:
    return bool(getattr(model, "_autocompress_bf16", False))


@dataclass(frozen=True)
class Precision(Technique):
    """The arithmetic of everything that is not int8: ``fp32`` (as is) or ``bf16``
    (:func:`cast_bf16_`). The search offers ``bf16`` only on a runtime with bf16 kernels."""

    key = "precision"
    choices = {"dtype": ("fp32", "bf16")}
    saves = ("latency", "size")

    dtype: str = "fp32"

    def apply_(self, model: nn.Module) -> nn.Module:
        return cast_bf16_(model) if self.dtype == "bf16" else model


__all__ = ["Precision", "cast_bf16_", "is_bf16"]
