"""BERT (and MiniLM, which is a BERT): ``bert.encoder.layer[i]``."""

from autocompress.arch.base import ArchAdapter


class BertAdapter(ArchAdapter):
    model_types = ("bert",)
    layers_path = "encoder.layer"
    attention_path = "attention.self"
    linear_paths = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "attn_out": "attention.output.dense",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
    }
