"""Where a model runs and is timed: one small base class, one file per runtime.

A :class:`Runtime` turns a model as autocompress builds it (a torch classifier: the plan's
structure, fp32 weights, and either the plan's int8 choices given as ``resolved`` or torch int8
linears already in place) into a :class:`Session` that runs on that runtime, built once and timed
as often as needed under the measurement protocol (:func:`~autocompress.latency.measure.timed`).
Subclasses register themselves by naming themselves (``name = "..."``), as Olive's passes do:

- ``runtime_torch.py``: PyTorch eager on the CPU (torch's dynamic int8 linears);
- ``runtime_onnxruntime.py``: ONNX Runtime (export, ONNX Runtime's dynamic int8 of the plan's
  linears; :mod:`~autocompress.latency.onnx`);
- ``runtime_openvino.py``: OpenVINO (the same export, compiled for the target's static shape;
  NNCF's static int8 of the plan's linears).

Contract of a subclass:

- ``build(model, target, *, resolved, plan, workdir)`` returns a :class:`Session`; it may
  change ``model`` (callers pass a model they own) and keeps what it writes under ``workdir``.
- ``Session.artefact_bytes()``: the size of what the runtime ran (what a user ships for it); the
  searches' size budget reads it.
- ``build_compressed(cm, target, workdir)``: the same for a built
  :class:`~autocompress.compressed.CompressedModel` (default: its fp32 structure and its plan).
- ``scorer(cm, folder, calibration, threads)``: where the runtime's arithmetic moves the task's
  score away from torch's (OpenVINO's static int8), the model as it runs there and a function
  computing its logits, so accuracy is taken on the runtime; None elsewhere.
- The class attributes say what the runtime has kernels for (``int8``, ``sparse``, ``bf16``: the decision
  tree and the spaces read them), whether it quantizes a tensor once for all its int8 consumers
  (``shares_quantized_inputs``: a latency feature), and what building one calibration plan costs
  (``build_seconds``, for sizing the calibration grid).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..errors import UserError

if TYPE_CHECKING:
    from .measure import LatencyStats
    from .target import Target

_REGISTRY: dict[str, type[Runtime]] = {}
#: The runtime modules, imported on first use of the registry (each registers its class).
_MODULES = ("runtime_torch", "runtime_onnxruntime", "runtime_openvino")


class Session:
    """A model ready to run on one runtime: :meth:`time` it (the measurement protocol), then
    :meth:`close` it (files it needed are removed)."""

    def time(self, *, warmup: int = 5, runs: int = 30, retries: int = 3, min_seconds: float = 0.3,
             max_seconds: float = 5.0) -> LatencyStats:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the session holds (default: nothing)."""

    def artefact_bytes(self) -> int | None:
        """Bytes of what this runtime runs, as a user would ship it for it (the exported file on
        ONNX Runtime and OpenVINO, the weights as they run on torch); None when unknown."""
        return None


class Runtime:
    """One runtime a model can be served on (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    package: ClassVar[str | None] = None        # the pip package it needs, for the error message
    int8: ClassVar[bool] = True                 # has int8 kernels for the plan's int8 linears
    sparse: ClassVar[bool] = False              # has kernels that skip unstructured zeros
    #: runs a bf16 plan (``precision: {dtype: bf16}``, :mod:`autocompress.techniques.precision`) on
    #: bf16 kernels of this CPU; the search offers bf16 only where this is true
    bf16: ClassVar[bool] = False
    shares_quantized_inputs: ClassVar[bool] = False
    #: seconds to build one calibration plan: ``fixed + per_call × the plan's inference time``
    build_seconds: ClassVar[tuple[float, float]] = (0.5, 10.0)
    #: plans build in a fraction of a second (no export): calibration fits ``Grid.torch_scale``
    #: times as many
    fast_build: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY[cls.name] = cls

    @classmethod
    def missing(cls) -> str | None:
        """Why this runtime cannot be used here (its package is not installed), or None."""
        if cls.package is None:
            return None
        try:
            importlib.import_module(cls.package)
        except ImportError:
            return f"--runtime {cls.name} needs the {cls.package} package (pip install {cls.package})"
        return None

    def build(self, model, target: Target, *, resolved=None, plan=None,
              workdir: str | Path | None = None) -> Session:
        raise NotImplementedError

    def build_compressed(self, cm, target: Target, workdir: str | Path | None = None) -> Session:
        return self.build(cm.fp32_model(), target, resolved=cm.resolved, plan=cm.plan, workdir=workdir)

    def scorer(self, cm, folder: Path, calibration, threads: int = 1):
        """``None`` when torch's evaluation of ``cm`` stands for this runtime's (the default: the
        runtime computes what torch computes, to rounding). Otherwise ``cm`` as this runtime runs
        it, written under the model folder ``folder`` (what timing compiles and an export ships),
        and a function ``(input_ids, attention_mask) -> logits`` (numpy) that runs it, so the
        task's score is taken there: OpenVINO's static int8 sets its activation scales from
        ``calibration()`` (called only when needed: input dicts from the task's training data),
        which torch's dynamic int8 does not reproduce."""
        return None

    def estimated_build_seconds(self, plan_seconds: float) -> float:
        fixed, per_call = self.build_seconds
        return fixed + per_call * plan_seconds


def file_bytes(path: str | Path) -> int:
    """Bytes of a model file and of the weights saved beside it (ONNX external data ``<name>.data``;
    an OpenVINO IR's ``.bin`` beside its ``.xml``)."""
    path = Path(path)
    beside = [path.with_name(path.name + ".data")] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])
    return sum(p.stat().st_size for p in (path, *beside) if p.is_file())


def describe_size_source(source: str | None) -> str:
    """What a ``size_mb`` is, in words, from its ``size_source`` (:func:`autocompress.evaluate.size_figures`)."""
    if source and source.startswith("artefact"):
        return f"the exported file on {source.partition(':')[2] or 'the target runtime'}, as shipped"
    return "the weights as they run, int8 packed"


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__package__}.{module}")


def runtime_names() -> tuple[str, ...]:
    """Every registered runtime, installed or not."""
    _load()
    return tuple(_REGISTRY)


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``; :class:`UserError` if none is, or if it is not installed."""
    _load()
    if name not in _REGISTRY:
        raise UserError(f"unknown runtime '{name}'; choose one of {', '.join(_REGISTRY)}")
    cls = _REGISTRY[name]
    why = cls.missing()
    if why:
        raise UserError(why)
    return cls()


def runtime_class(name: str) -> type[Runtime]:
    """The class registered as ``name`` (its declared capabilities), whether installed or not."""
    _load()
    if name not in _REGISTRY:
        raise UserError(f"unknown runtime '{name}'; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


__all__ = ["Runtime", "Session", "describe_size_source", "file_bytes", "get_runtime", "runtime_class", "runtime_names"]
