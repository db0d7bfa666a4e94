"""Text data: ``TextDataModule`` (PTB, Yahoo, SNLI files, or the offline template grammar), the
vocabulary, sentence files and length-bucketed batches."""

from lebm.data.text.datamodule import TextDataModule
from lebm.data.text.grammar import TemplateGrammar
from lebm.data.text.vocabulary import Vocabulary

__all__ = ["TemplateGrammar", "TextDataModule", "Vocabulary"]
