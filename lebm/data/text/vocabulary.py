"""``Vocabulary``: words <-> integer ids, with four special tokens at fixed ids.

A *sentence* is either a string (split on whitespace) or a sequence of words, everywhere in this
module. Ids 0-3 are the specials ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; every word outside the
vocabulary maps to ``<unk>``, so Mikolov's preprocessed PTB (whose rare words already read ``<unk>``)
keeps its own unknown token at id 3.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

#: One sentence: a string (split on whitespace) or its words.
Sentence = str | Sequence[str]


def sentence_words(sentence: Sentence) -> list[str]:
    """The words of ``sentence``: a string is split on whitespace, a sequence of words is copied."""
    if isinstance(sentence, str):
        return sentence.split()
    return list(sentence)


class Vocabulary:
    """An ordered list of tokens whose first four are the specials, and the id of each.

    Args:
        tokens: every token, the specials first (``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``), no
            duplicates, no empty token and none with whitespace (it could not survive :meth:`to_text`).

    Attributes:
        PAD, BOS, EOS, UNK: the special tokens; ``pad_id, bos_id, eos_id, unk_id`` (0, 1, 2, 3) their ids.
    """

    PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
    SPECIALS = (PAD, BOS, EOS, UNK)
    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tuple(tokens[:4]) != self.SPECIALS:
            raise ValueError(
                f"a Vocabulary's first four tokens must be the specials {list(self.SPECIALS)} in that order, got "
                f"{tokens[:4]}; build one from sentences with Vocabulary.build(...), which puts them first"
            )
        bad = [token for token in tokens if not isinstance(token, str) or not token or token != "".join(token.split())]
        if bad:
            raise ValueError(f"vocabulary tokens must be non-empty strings without whitespace, got {bad[:5]}")
        self._tokens = tokens
        self._ids = {token: index for index, token in enumerate(tokens)}
        if len(self._ids) != len(tokens):
            duplicates = sorted(token for token, count in Counter(tokens).items() if count > 1)
            raise ValueError(f"vocabulary tokens must be unique, but these repeat: {duplicates[:10]}")

    @classmethod
    def build(cls, sentences: Iterable[Sentence], max_size: int | None = None, min_freq: int = 1) -> Vocabulary:
        """The vocabulary of a training split: the specials, then its words by count.

        Words are ordered by (-count, word), so equal counts break alphabetically and the result is
        deterministic. Special tokens that occur in the text (e.g. PTB's ``<unk>``) are not counted:
        they keep their fixed ids.

        Args:
            sentences: the training sentences (strings or word sequences).
            max_size: the most tokens, the 4 specials INCLUDED (the least frequent words are
                dropped); None keeps every word.
            min_freq: words seen fewer times are dropped (they become ``<unk>``).
        """
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 4):
            raise ValueError(
                "max_size counts the 4 special tokens, so it must be an int >= 4 (or None for no limit), "
                f"got {max_size!r}"
            )
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an int >= 1, got {min_freq!r}")
        if isinstance(sentences, str):
            raise TypeError("Vocabulary.build expects a collection of sentences, got one string; wrap it in a list")
        counts: Counter[str] = Counter()
        for sentence in sentences:
            counts.update(sentence_words(sentence))
        for special in cls.SPECIALS:
            counts.pop(special, None)
        words = sorted((word for word, count in counts.items() if count >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max_size - len(cls.SPECIALS)]
        return cls([*cls.SPECIALS, *words])

    # ---------------------------------------------------------------------------------- lookup
    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._tokens == other._tokens

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value object: equal by tokens

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens: {self._tokens[4:9]}...)"

    @property
    def tokens(self) -> list[str]:
        """Every token in id order (a copy)."""
        return list(self._tokens)

    def unknown_share(self, sentences: Iterable[Sentence]) -> float:
        """The share of the words of ``sentences`` that this vocabulary maps to ``<unk>`` (0 for none)."""
        total = unknown = 0
        for sentence in sentences:
            for word in sentence_words(sentence):
                total += 1
                unknown += word not in self._ids
        return unknown / total if total else 0.0

    def index(self, word: str) -> int:
        """The id of ``word``; ``unk_id`` for a word outside the vocabulary."""
        return self._ids.get(word, self.unk_id)

    def encode(self, words: Sentence) -> list[int]:
        """The ids of a sentence's words (no ``<bos>``/``<eos>`` added)."""
        return [self._ids.get(word, self.unk_id) for word in sentence_words(words)]

    def decode(self, ids: Iterable[int] | Tensor) -> list[str]:
        """The words of ``ids``: ``<pad>`` and ``<bos>`` skipped, reading stops at the first ``<eos>``."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        words = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id == self.eos_id:
                break
            if token_id in (self.pad_id, self.bos_id):
                continue
            if not 0 <= token_id < len(self._tokens):
                raise ValueError(
                    f"id {token_id} is outside this vocabulary of {len(self)} tokens (ids 0..{len(self) - 1})"
                )
            words.append(self._tokens[token_id])
        return words

    # ---------------------------------------------------------------------------------- tensors
    def to_tensor(self, sentences: Sequence[Sentence], max_length: int | None = None) -> Tensor:
        """A padded batch of id sequences.

        Args:
            sentences: B sentences (strings or word sequences).
            max_length: keep at most this many words of each sentence (``<eos>`` is still
                appended); None keeps them all.

        Returns:
            LongTensor (B, T): row b is ``[bos, ids of sentence b..., eos, pad, ...]``, right-padded
            with ``pad_id`` to T = the longest sentence's word count + 2.
        """
        if isinstance(sentences, str):
            raise TypeError("to_tensor expects a sequence of sentences, got one string; wrap it in a list")
        if len(sentences) == 0:
            raise ValueError("to_tensor needs at least one sentence to build a (B, T) batch")
        if max_length is not None and max_length < 0:
            raise ValueError(f"max_length must be >= 0 (or None for no limit), got {max_length}")
        rows = [self.encode(sentence_words(sentence)[:max_length]) for sentence in sentences]
        width = max(len(row) for row in rows) + 2
        batch = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for b, row in enumerate(rows):
            batch[b, : len(row) + 2] = torch.tensor([self.bos_id, *row, self.eos_id], dtype=torch.long)
        return batch

    def to_text(self, x: Tensor) -> list[str]:
        """Sentences of a batch for display: x LongTensor (B, T) -> B strings (``<bos>``/``<pad>``
        dropped, each row read up to its first ``<eos>``, words joined with single spaces)."""
        if x.ndim != 2 or x.is_floating_point() or x.is_complex():
            raise ValueError(
                f"to_text expects an integer tensor of ids of shape (B, T), got {x.dtype} {tuple(x.shape)}"
            )
        return [" ".join(self.decode(row)) for row in x.tolist()]

    # ----------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """``{"tokens": [...]}``: everything :meth:`from_state_dict` needs."""
        return {"tokens": list(self._tokens)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Vocabulary:
        """The vocabulary saved by :meth:`state_dict`."""
        if not isinstance(state, dict) or "tokens" not in state:
            raise ValueError(
                f"a vocabulary state must be a dict with a 'tokens' list (Vocabulary.state_dict()), got {type(state)}"
            )
        return cls(state["tokens"])
