"""sftlab: instruction tuning (SFT) of language models, from data to evaluated model."""

__version__ = "0.1.0"
