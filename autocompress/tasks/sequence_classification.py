"""Sequence classification: one label per text (sentiment, topic, ...), scored by accuracy."""

from __future__ import annotations

from autocompress.errors import UserError
from autocompress.tasks.base import Task


class SequenceClassification(Task):
    name = "sequence-classification"
    auto_class = "AutoModelForSequenceClassification"
    metric = "accuracy"

    def from_pretrained(self, path, *, num_labels=None, label_names=None, trust_remote_code=False):
        kwargs = {}
        if num_labels is not None:
            kwargs["num_labels"] = num_labels
        if label_names:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
        try:
            model = self.model_class().from_pretrained(path, use_safetensors=True,
                                                       trust_remote_code=trust_remote_code, **kwargs)
        except ValueError as exc:
            raise UserError(f"{path}: cannot build a sequence classifier: {exc}".splitlines()[0]) from exc
        return model.eval()

    def score(self, logits, labels) -> float:
        return float((logits.argmax(-1) == labels).float().mean())

    def agreement(self, logits, teacher_logits) -> float:
        return float((logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean())

    def loss(self, logits, labels, *, reduction: str = "mean"):
        import torch.nn.functional as F

        return F.cross_entropy(logits, labels, reduction=reduction)

    def distill_loss(self, logits, teacher_logits, temperature: float):
        import torch.nn.functional as F

        kl = F.kl_div(F.log_softmax(logits / temperature, -1), F.softmax(teacher_logits / temperature, -1),
                      reduction="batchmean")
        return kl * temperature ** 2


__all__ = ["SequenceClassification"]
