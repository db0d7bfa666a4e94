"""Text data: ``TextDataModule`` (PTB, Yahoo, SNLI files, or the offline template grammar), the
vocabulary, sentence files and length-bucketed batches."""

from lebm.data.text import datamodule as _datamodule
from lebm.data.text.datamodule import TextDataModule
from lebm.data.text.grammar import TemplateGrammar
from lebm.data.text.vocabulary import Vocabulary

__all__ = ["TemplateGrammar", "TextDataModule", "Vocabulary"]


def __getattr__(name: str) -> object:
    """The other names of the module ``lebm.data.text`` was before it became this package (lebm 0.1)."""
    if name.startswith("_") or not hasattr(_datamodule, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(_datamodule, name)
