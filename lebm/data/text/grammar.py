"""A tiny template grammar: a toy text corpus with a known structure (no files needed).

Four sentence templates of different lengths fill word-class slots (NOUN, VERB, ADJ, ADV) with
words drawn uniformly from small classes; the templates have unequal weights, so a model of the
text should also learn how often each template occurs. Every sentence matches at most one
template (the word classes are disjoint and the literals "the"/"a" belong to none), so
:meth:`TemplateGrammar.template_of` tells which template made a sentence, or that none could.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lebm.data.text.vocabulary import Sentence, sentence_words
from lebm.randomness import derive_seed

#: Purpose word of the grammar's own draws in :func:`lebm.randomness.derive_seed` (ASCII "gram").
GRAMMAR_PURPOSE = 0x6772616D

#: The words of each class (disjoint; none of them is a template literal).
WORD_CLASSES: dict[str, tuple[str, ...]] = {
    "NOUN": ("cat", "dog", "bird", "fox", "horse", "mouse"),
    "VERB": ("sees", "likes", "chases", "follows"),
    "ADJ": ("red", "small", "old", "quick", "brown"),
    "ADV": ("slowly", "often", "quietly", "today"),
}

#: The templates: upper-case slots are word classes, lower-case words are literals.
TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("the", "NOUN", "VERB"),
    ("a", "ADJ", "NOUN", "VERB", "the", "NOUN"),
    ("NOUN", "VERB", "ADV"),
    ("the", "ADJ", "NOUN", "VERB", "a", "ADJ", "NOUN"),
)

#: How often each template is drawn.
TEMPLATE_WEIGHTS = (0.4, 0.3, 0.2, 0.1)


class TemplateGrammar:
    """Sentences drawn from :data:`TEMPLATES` with weights :data:`TEMPLATE_WEIGHTS`.

    Args:
        seed: seed of the draws of :meth:`sample` when it is given no generator (each such call
            draws from a generator seeded from ``(seed, how many such calls came before)``).
    """

    def __init__(self, seed: int = 0) -> None:
        self.templates = TEMPLATES
        self.word_classes = WORD_CLASSES
        self._weights = torch.tensor(TEMPLATE_WEIGHTS, dtype=torch.float64)
        # no torch.Generator kept: torch.multiprocessing (ddp_spawn) cannot send one to a process
        self._seed, self._draws = int(seed), 0

    def _next_generator(self) -> torch.Generator:
        """The generator of the next call without one: seeded from ``(seed, number of such calls)``."""
        self._draws += 1
        return torch.Generator().manual_seed(derive_seed(self._seed, GRAMMAR_PURPOSE, self._draws))

    @property
    def template_weights(self) -> Tensor:
        """(K,) float64 probabilities of the K templates (a copy; sums to 1)."""
        return self._weights / self._weights.sum()

    @property
    def words(self) -> list[str]:
        """Every word the grammar can produce, sorted."""
        literals = {slot for template in self.templates for slot in template if slot not in self.word_classes}
        return sorted(literals.union(*self.word_classes.values()))

    def sample_with_templates(self, n: int, generator: torch.Generator | None = None) -> tuple[list[str], Tensor]:
        """Draw ``n`` sentences and the template each came from.

        Returns:
            n sentences (words joined with single spaces) and (n,) int64 template indices.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        generator = self._next_generator() if generator is None else generator
        if n == 0:
            return [], torch.zeros(0, dtype=torch.long)
        templates = torch.multinomial(self.template_weights, n, replacement=True, generator=generator)
        longest = max(len(template) for template in self.templates)
        picks = torch.rand(n, longest, generator=generator, dtype=torch.float64)  # (n, longest) in [0, 1)
        sentences = []
        for template_index, row in zip(templates.tolist(), picks.tolist(), strict=True):
            words = []
            for slot, u in zip(self.templates[template_index], row, strict=False):
                choices = self.word_classes.get(slot)
                words.append(slot if choices is None else choices[int(u * len(choices))])
            sentences.append(" ".join(words))
        return sentences, templates

    def sample(self, n: int, generator: torch.Generator | None = None) -> list[str]:
        """Draw ``n`` sentences (strings, words joined with single spaces)."""
        return self.sample_with_templates(n, generator)[0]

    def template_of(self, sentence: Sentence) -> int | None:
        """Index of the template that produces ``sentence``, or None when it is ungrammatical."""
        words = sentence_words(sentence)
        for index, template in enumerate(self.templates):
            if len(words) == len(template) and all(
                word == slot if slot not in self.word_classes else word in self.word_classes[slot]
                for word, slot in zip(words, template, strict=True)
            ):
                return index
        return None

    def is_grammatical(self, sentence: Sentence) -> bool:
        """Whether some template produces ``sentence``."""
        return self.template_of(sentence) is not None
