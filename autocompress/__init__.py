"""autocompress: automated, hardware-aware compression planning for BERT-family encoders."""

__version__ = "0.1.0"
