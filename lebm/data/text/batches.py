"""Batches of sentences: length-bucketed training batches, length-sorted evaluation sets, and the
collate function that turns word lists into padded id tensors.

Training batches are planned per epoch (:func:`bucket_plan`): the sentences are permuted with a
seed of ``(seed, epoch)``, the permutation is cut into pools of ``bucket_batches * batch_size``
sentences, each pool is sorted by length and cut into batches of exactly ``batch_size``. Sentences
of a batch then have similar lengths, so little of the batch is padding, while every epoch still
mixes the corpus differently. :class:`BucketedBatches` serves the plan's batches as the items of a
dataset, so the ordinary training loader (:func:`lebm.data.loaders.training_loader` with
``batch_size=1``) shuffles them per epoch, shards them over DDP processes and resumes inside an epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lebm.data.keys import EpochKey, split_key
from lebm.data.text.vocabulary import Vocabulary
from lebm.randomness import derive_seed, run_seed

#: Purpose word of the bucketing permutation in :func:`lebm.randomness.derive_seed` (ASCII "buck").
BUCKET_PURPOSE = 0x6275636B

Words = list[str]


def bucket_plan(lengths: Sequence[int], batch_size: int, bucket_batches: int, seed: int, epoch: int) -> list[list[int]]:
    """The training batches of ``epoch``: ``len(lengths) // batch_size`` lists of ``batch_size``
    sentence indices (see the module docstring); the sentences left over are not used this epoch.

    Args:
        lengths: (N,) word count of each sentence.
        batch_size: sentences per batch.
        bucket_batches: batches per sorting pool; 1 = no bucketing (random batches).
        seed, epoch: the permutation's seed is ``derive_seed(seed, BUCKET_PURPOSE, epoch)``.
    """
    if batch_size < 1 or bucket_batches < 1:
        raise ValueError(f"need batch_size >= 1 and bucket_batches >= 1, got {batch_size} and {bucket_batches}")
    generator = torch.Generator().manual_seed(derive_seed(seed, BUCKET_PURPOSE, epoch))
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool_size = bucket_batches * batch_size
    batches = []
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start : start + pool_size], key=lengths.__getitem__)  # stable: ties stay random
        batches.extend(pool[b : b + batch_size] for b in range(0, len(pool) - batch_size + 1, batch_size))
    return batches


class BucketedBatches(Dataset):
    """Whole training batches as dataset items: item ``i`` of an epoch is that epoch's batch ``i``
    of :func:`bucket_plan`, a list of ``batch_size`` sentences (word lists).

    Receives :class:`~lebm.data.keys.EpochKey` keys from the training sampler, so the plan is
    the one of the key's epoch and seed; a plain int key reads epoch 0 with ``seed`` (None: the
    run's seed). The plan of the latest (epoch, seed) is cached.

    Args:
        sentences: the training sentences, each a list of words.
        batch_size: sentences per batch (``len(self) == len(sentences) // batch_size``).
        bucket_batches: batches per sorting pool (1 = no bucketing).
        seed: seed for plain int keys.
    """

    accepts_epoch_keys = True

    def __init__(self, sentences: Sequence[Words], batch_size: int, bucket_batches: int, seed: int | None = None):
        if len(sentences) < batch_size:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {len(sentences)} training sentences: no whole batch can be "
                "made; lower batch_size or use more training sentences"
            )
        self.sentences = sentences
        self.lengths = [len(sentence) for sentence in sentences]
        self.batch_size = batch_size
        self.bucket_batches = bucket_batches
        self.seed = seed
        self._cache: tuple[tuple[int, int], list[list[int]]] | None = None

    def __len__(self) -> int:
        return len(self.sentences) // self.batch_size

    def plan(self, epoch: int, seed: int) -> list[list[int]]:
        """The sentence indices of every batch of ``epoch`` (cached for the latest epoch and seed)."""
        if self._cache is None or self._cache[0] != (epoch, seed):
            self._cache = ((epoch, seed), bucket_plan(self.lengths, self.batch_size, self.bucket_batches, seed, epoch))
        return self._cache[1]

    def __getitem__(self, key: int | EpochKey) -> list[Words]:
        index, epoch_key = split_key(key)
        if epoch_key is None:
            epoch_key = EpochKey(index, 0, self.seed if self.seed is not None else run_seed())
        return [self.sentences[i] for i in self.plan(epoch_key.epoch, epoch_key.seed)[index]]


class SentenceDataset(Dataset):
    """Sentences (word lists) as dataset items, sorted by length (stable: equal lengths keep the
    order they were given in), so fixed-order evaluation batches are padded little."""

    def __init__(self, sentences: Sequence[Words]) -> None:
        self.sentences = sorted(sentences, key=len)

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, index: int) -> Words:
        return self.sentences[index]


class EncodeSentences:
    """Collate function: a list of sentences -> LongTensor (B, T) with :meth:`Vocabulary.to_tensor`
    (``[bos, ids..., eos, pad...]``).

    Args:
        vocabulary: the vocabulary to encode with.
        nested: the items are whole batches (lists of sentences, as :class:`BucketedBatches`
            serves them) whose sentences are concatenated.
    """

    def __init__(self, vocabulary: Vocabulary, nested: bool = False) -> None:
        self.vocabulary = vocabulary
        self.nested = nested

    def __call__(self, items: list) -> Tensor:
        sentences = [sentence for batch in items for sentence in batch] if self.nested else items
        return self.vocabulary.to_tensor(sentences)
