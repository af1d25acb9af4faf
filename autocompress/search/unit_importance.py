"""What removing each unit (attention head, FFN neuron, whole layer) costs on the task, in one
unit: measured once per task and shared by the allocator (:mod:`.allocate`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class UnitImportance:
    """What removing each unit costs on the task, in one unit (summed |loss change| per example).

    ``heads[i][h]`` and ``ffn[i][n]`` score layer ``i``'s heads and FFN neurons; ``layers[i]`` is
    the summed absolute change of the per-example loss when layer ``i`` is skipped (measured, not
    estimated). Plain lists, so it pickles and saves as JSON.

    Head and neuron scores are first-order Taylor scores, calibrated (``calibration``, one factor
    per layer and kind): first-order scores of different kinds and layers do not compare as
    measured. A head's score sums its 32 dimensions before the absolute value, a neuron group's is
    a sum of absolute values, so heads looked cheap next to FFN groups and every width plan cut
    layers to one head first; and the scores shrink with depth (MiniLM: FFN totals 32.6 in layer 0,
    2.5 in layer 5). :meth:`measure` therefore removes the less important half of each layer's
    heads, then of its neurons, measures the loss change as for a layer, and scales that layer's
    scores of that kind so that the half's scores sum to it."""

    heads: list[list[float]]
    ffn: list[list[float]]
    layers: list[float]
    calibration: dict = field(default_factory=dict)  # {"heads": [factor per layer], "ffn": [...]}

    @classmethod
    def measure(cls, model, batches: Sequence[Mapping], *, scores=None, calibrate: bool = True,
                task=None, progress: bool = False) -> UnitImportance:
        """Scores of ``model`` (uncompressed) on ``batches`` (with ``labels``); ``scores``: its Taylor
        scores on those batches when already computed (:meth:`TaskContext.importance`);
        ``calibrate``: scale them by measured half removals (see the class), in ``task``'s loss
        (:mod:`autocompress.tasks`; default: sequence classification); ``progress``: a bar over
        the edited models evaluated (minutes on a base-size model)."""
        import copy

        import torch

        from ..progress import progress_bar
        from ..tasks import get_task
        from ..techniques import LayerDropConfig, drop_layers_, keep_ffn_neurons_, keep_heads_, taylor_scores, top_indices
        from ..training import model_inputs

        scores = scores if scores is not None else taylor_scores(model, batches)
        n = len(scores.heads)
        task = task or get_task()
        bar = progress_bar(total=n * (3 if calibrate else 1), desc="importance", unit="edit", enabled=progress)

        def per_example_loss(m) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([task.loss(m(**model_inputs(b)).logits, b["labels"], reduction="none")
                                  for b in batches])

        full = per_example_loss(model.eval())

        def loss_change(edit) -> float:
            edited = copy.deepcopy(model)
            edit(edited)
            change = float((per_example_loss(edited.eval()) - full).abs().sum())
            del edited
            bar.update(1)
            return change

        layers = [loss_change(lambda m, i=i: drop_layers_(m, LayerDropConfig((i,)))) for i in range(n)]
        heads = [scores.heads[i].tolist() for i in range(n)]
        ffn = [scores.ffn[i].tolist() for i in range(n)]
        calibration: dict[str, list[float]] = {}
        if calibrate:
            for kind, values, keep in (("heads", heads, keep_heads_), ("ffn", ffn, keep_ffn_neurons_)):
                factors = []
                for i in range(n):
                    width = len(values[i])
                    kept = top_indices(torch.tensor(values[i]), width - width // 2)
                    dropped = set(range(width)) - set(kept)
                    first_order = sum(values[i][j] for j in dropped)
                    measured = loss_change(lambda m, i=i, kept=kept, keep=keep: keep(m, {i: kept}))
                    factors.append(measured / first_order if first_order > 0 and measured > 0 else 1.0)
                    values[i] = [v * factors[-1] for v in values[i]]
                calibration[kind] = [round(f, 4) for f in factors]
        bar.close()
        return cls(heads=heads, ffn=ffn, layers=layers, calibration=calibration)

    def to_dict(self) -> dict:
        return {"heads": self.heads, "ffn": self.ffn, "layers": self.layers, "calibration": self.calibration}


#: Bumped when what :meth:`UnitImportance.measure` computes changes — it, the Taylor scores it
#: calibrates (:func:`~autocompress.techniques.taylor_scores`) or the head, neuron and layer edits it
#: measures — so that a saved figure is measured again, not read.
VERSION = 1


def task_importance(ctx, *, progress: bool = False) -> UnitImportance:
    """The task's unit importance, measured once on its calibration batches (the batches ``apply``
    scores heads and neurons on) and kept beside the teacher's cached logits
    (``outputs/importance-…json`` in the teacher's folder, keyed by the tokenised data, the seed
    and :data:`VERSION`): a base-size teacher takes ~4 minutes to measure, and a study continued
    in pieces, or resumed after a crash, paid them again every time (``runs/base-size28``)."""
    from ..cache import atomic_write_json

    def make() -> UnitImportance:
        batches = ctx.calibration_batches()  # the default set: 8 batches of 32
        path = ctx.teacher.path / "outputs" / (f"importance-{ctx.data_key}-s{ctx.seed}-c{len(batches)}x"
                                               f"{len(batches[0]['input_ids'])}-v{VERSION}.json")
        if path.is_file():
            return UnitImportance(**json.loads(path.read_text()))
        found = UnitImportance.measure(ctx.teacher_model(), batches, scores=ctx.importance(),
                                       task=ctx.task_type, progress=progress)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, found.to_dict())
        except OSError:  # a teacher folder that cannot be written: measured again next time
            pass
        return found

    return ctx.cached("unit_importance", make)


__all__ = ["UnitImportance", "task_importance"]
