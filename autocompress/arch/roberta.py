"""RoBERTa and its same-layout derivatives (XLM-R, CamemBERT): BERT's layer layout."""

from autocompress.arch.bert import BertAdapter


class RobertaAdapter(BertAdapter):
    model_types = ("roberta", "xlm-roberta", "camembert")
    position_offset = 2  # positions start after the padding index (1)
