"""``TextDataModule``: sentence corpora (PTB, SNLI, Yahoo, any one-sentence-per-line files, and a
toy template grammar) as padded batches of word ids.

Batches are LongTensors ``x`` of shape (B, T) (not tuples): row b is
``[<bos>, w1, ..., wn, <eos>, <pad>, ...]`` with T = the longest sentence of the batch + 2. The
ids come from :attr:`TextDataModule.vocabulary` (``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2,
``<unk>`` = 3), built on the training split; it is saved in checkpoints, and a resumed run
encodes with the checkpoint's vocabulary.

Training batches are bucketed by length (:mod:`lebm.data.text.batches`): batches hold sentences
of similar lengths, their order is shuffled per epoch, and like every lebm training loader they
depend only on the seed and the epoch, are sharded over DDP processes and resume inside an epoch.
Evaluation batches come in a fixed order, the sentences sorted by length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from lebm.data.content import ContentSources
from lebm.data.errors import DataError
from lebm.data.loaders import evaluation_loader, training_loader
from lebm.data.prediction import PredictionSource, check_predict_samples
from lebm.data.text.batches import BucketedBatches, EncodeSentences, SentenceDataset
from lebm.data.text.files import check_sentence_counts, check_text_files, read_sentences, text_split_paths
from lebm.data.text.grammar import TemplateGrammar
from lebm.data.text.vocabulary import Vocabulary
from lebm.randomness import derive_seed, run_seed

#: The ``dataset`` names TextDataModule knows.
TEXT_DATASETS = ("ptb", "snli", "yahoo", "lines", "templates")
LONG_SENTENCES = ("truncate", "drop")
VALIDATE_ON = ("val", "test")
#: Purpose word of the template splits' seeds in :func:`lebm.randomness.derive_seed` (ASCII "tmpl").
TEMPLATE_PURPOSE = 0x746D706C
#: A vocabulary that maps more than this share of the training words to <unk> is warned about.
SUSPICIOUS_UNKNOWN_SHARE = 0.2

Words = list[str]


class TextDataModule(PredictionSource, L.LightningDataModule):
    """Sentences as (B, T) LongTensors of word ids, with a vocabulary built on the training split.

    Datasets and their files inside ``root`` (every file: one sentence, or for Yahoo one document,
    per line, tokens separated by whitespace, empty lines skipped; lebm downloads none of them):

    * ``ptb``: ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` (Mikolov's preprocessed PTB;
      its ``<unk>`` is the vocabulary's ``<unk>``). Without the training file (offline), train on
      the validation file: ``train_file: ptb.valid.txt, val_file: ptb.test.txt``;
    * ``snli``: ``snli.train.txt``, ``snli.valid.txt``, ``snli.test.txt`` (text-VAE layout);
    * ``yahoo``: ``yahoo.train.txt``, ``yahoo.valid.txt``, ``yahoo.test.txt`` (SA-VAE layout);
    * ``lines``: the ``train_file``, ``val_file`` and ``test_file`` given;
    * ``templates``: ``n_train``/``n_val``/``n_test`` sentences of
      :class:`~lebm.data.text.grammar.TemplateGrammar` (no files), drawn with seeds derived
      from ``seed`` (a different one per split).

    The arguments are checked when the module is built, including a look for the files, so a
    wrong config fails before a model is built; :meth:`setup` reads the sentences.

    Args:
        dataset: one of ``ptb``, ``snli``, ``yahoo``, ``lines``, ``templates``.
        root: folder of the files (``$VARS`` and ``~`` expanded); optional for ``lines``, ignored
            by ``templates``.
        train_file: file name (or path) replacing the layout's training file, relative to ``root``
            when given; ``lines`` needs all three files. It may name the validation file (offline
            PTB).
        val_file: the same for the validation file.
        test_file: the same for the test file.
        max_vocab_size: the most tokens in the vocabulary, the 4 specials included (>= 5); the
            least frequent words become ``<unk>``. None: every training word.
        min_freq: training words seen fewer times become ``<unk>``.
        max_length: the most words of a sentence (``<bos>``/``<eos>`` not counted); None: no limit.
        long_sentences: what happens to longer training sentences: ``"truncate"`` (keep the first
            ``max_length`` words) or ``"drop"`` (leave them out). Only the training split is ever
            dropped from: validation and test sentences are always truncated, so the evaluation
            sets are never made smaller silently.
        lowercase: lower-case the text as it is read.
        batch_size: training sentences per batch (every training batch is full; the sentences left
            over are left out of that epoch, a different few each epoch).
        eval_batch_size: validation/test batch size; None = ``batch_size``.
        bucket_batches: size, in batches, of the pools sorted by length to form training batches;
            1 = no bucketing (random batches, more padding).
        num_workers: DataLoader worker processes (workers persist between epochs when > 0).
        validate_on: the split ``val_dataloader`` reads: ``"val"`` (default) or ``"test"``.
        seed: seed of the training order (and of the template sentences); None = the run's seed
            (``seed_everything``'s, see :func:`lebm.randomness.run_seed`).
        n_train: ``templates`` only: how many sentences the training split draws.
        n_val: ``templates`` only: how many sentences the validation split draws.
        n_test: ``templates`` only: how many sentences the test split draws.
        predict_samples: what ``lebm predict`` reads: 0 (default) the test split; N > 0 requests for N
            generated samples (:class:`~lebm.data.prediction.PredictionSource`).

    Attributes:
        vocabulary: the :class:`~lebm.data.text.vocabulary.Vocabulary` (None until :meth:`setup` or
            :meth:`load_state_dict`); ``pad_id`` its padding id (0); ``vocab_size`` its length.
        sample_shape: None (sentences have no fixed shape).
        train_sentences, val_sentences, test_sentences: the splits as lists of word lists, in file
            order, after ``lowercase``, ``max_length`` and ``long_sentences`` (set by :meth:`setup`).
        paths: ``{"train", "val", "test"}`` -> file path (empty for ``templates``).
        grammar: the :class:`~lebm.data.text.grammar.TemplateGrammar` of ``templates``, else None.
    """

    pad_id = Vocabulary.pad_id

    #: The settings that decide which examples each split holds (``lebm.data.fingerprint``): a
    #: checkpoint keeps them, and a command that scores or resumes it on other ones refuses.
    split_settings: ClassVar[tuple[str, ...]] = (
        "dataset",
        "train_file",
        "val_file",
        "test_file",
        "max_vocab_size",
        "min_freq",
        "max_length",
        "long_sentences",
        "lowercase",
        "validate_on",
        "seed",
        "n_train",
        "n_val",
        "n_test",
    )

    def __init__(
        self,
        dataset: str = "templates",
        root: str | None = None,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        max_vocab_size: int | None = 10000,
        min_freq: int = 1,
        max_length: int | None = None,
        long_sentences: Literal["truncate", "drop"] = "truncate",
        lowercase: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        bucket_batches: int = 50,
        num_workers: int = 0,
        validate_on: Literal["test", "val"] = "val",
        seed: int | None = None,
        n_train: int = 2000,
        n_val: int = 200,
        n_test: int = 200,
        predict_samples: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.predict_samples = check_predict_samples(predict_samples)
        if dataset not in TEXT_DATASETS:
            raise ValueError(f"unknown text dataset {dataset!r}; valid names are: {', '.join(TEXT_DATASETS)}")
        self.dataset_name = dataset
        if max_vocab_size is not None and (_not_int(max_vocab_size) or max_vocab_size < 5):
            raise ValueError(
                f"max_vocab_size counts the 4 special tokens (<pad>, <bos>, <eos>, <unk>), so it must be an int >= 5 "
                f"to hold any word (or None for no limit), got {max_vocab_size!r}"
            )
        self.max_vocab_size = max_vocab_size
        self.min_freq = _positive("min_freq", min_freq)
        self.max_length = _positive("max_length", max_length) if max_length is not None else None
        if long_sentences not in LONG_SENTENCES:
            raise ValueError(f"long_sentences must be 'truncate' or 'drop', got {long_sentences!r}")
        self.long_sentences = long_sentences
        self.lowercase = bool(lowercase)
        self.batch_size = _positive("batch_size", batch_size)
        self.eval_batch_size = _positive("eval_batch_size", batch_size if eval_batch_size is None else eval_batch_size)
        self.bucket_batches = _positive("bucket_batches", bucket_batches)
        if _not_int(num_workers) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        self.num_workers = num_workers
        if validate_on not in VALIDATE_ON:
            raise ValueError(f"validate_on must be 'val' or 'test', got {validate_on!r}")
        self.validate_on = validate_on
        if seed is not None and _not_int(seed):
            raise ValueError(f"seed must be an int or None (the run's seed), got {seed!r}")
        self.seed = seed
        self.sizes = self._check_template_sizes(n_train, n_val, n_test)
        self.grammar = TemplateGrammar() if dataset == "templates" else None
        self.paths: dict[str, Path] = self._locate_files(root, train_file, val_file, test_file)

        self.sample_shape = None
        self.vocabulary: Vocabulary | None = None
        self.train_sentences: list[Words] | None = None
        self.val_sentences: list[Words] | None = None
        self.test_sentences: list[Words] | None = None

    # ----------------------------------------------------------------------------------- checks
    def _check_template_sizes(self, n_train: int, n_val: int, n_test: int) -> tuple[int, int, int]:
        if self.dataset_name != "templates":
            return n_train, n_val, n_test
        if any(_not_int(n) or n < 0 for n in (n_train, n_val, n_test)):
            raise ValueError(f"n_train, n_val and n_test must be ints >= 0, got {n_train!r}, {n_val!r}, {n_test!r}")
        if n_train < self.batch_size:
            raise ValueError(
                f"n_train={n_train} template sentences cannot fill one training batch of batch_size={self.batch_size}; "
                "raise n_train or lower batch_size"
            )
        return n_train, n_val, n_test

    def _locate_files(
        self, root: str | None, train_file: str | None, val_file: str | None, test_file: str | None
    ) -> dict[str, Path]:
        if self.dataset_name == "templates":
            given = [
                name
                for name, value in (("train_file", train_file), ("val_file", val_file), ("test_file", test_file))
                if value
            ]
            if given:
                raise ValueError(
                    "dataset 'templates' draws its sentences from a grammar and reads no files, but "
                    f"{', '.join(given)} was given; remove it, or use dataset 'lines' (or ptb/snli/yahoo) to read files"
                )
            return {}
        paths = text_split_paths(self.dataset_name, root, train_file, val_file, test_file)
        check_text_files(self.dataset_name, root, paths)
        dropped_above = self.max_length if self.long_sentences == "drop" else None
        check_sentence_counts(paths, self.batch_size, dropped_above)  # at build: no run starts on them
        return paths

    def content_sources(self) -> ContentSources | None:
        """What the splits were read from (:mod:`lebm.data.content`): the three sentence files (none
        for ``templates``, drawn from the grammar and the seed alone); None before :meth:`setup`."""
        if self.train_sentences is None:
            return None
        files = sorted({path.resolve() for path in self.paths.values() if path.is_file()})
        return ContentSources(files, {}, None)

    # ------------------------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int | None:
        """Tokens in the vocabulary, specials included (None before :meth:`setup`)."""
        return None if self.vocabulary is None else len(self.vocabulary)

    def state_dict(self) -> dict[str, Any]:
        """``{"vocabulary": ...}`` (saved in Lightning checkpoints); empty before there is one."""
        return {} if self.vocabulary is None else {"vocabulary": self.vocabulary.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Use the saved vocabulary from now on (Lightning calls this after :meth:`setup` when a run
        resumes; loaders made afterwards encode with it). Loaded before :meth:`setup`, it is kept:
        setup then builds none."""
        if "vocabulary" in state_dict:
            self.vocabulary = Vocabulary.from_state_dict(state_dict["vocabulary"])

    # ------------------------------------------------------------------------------ lightning
    def setup(self, stage: str | None = None) -> None:
        """Read (or draw) the three splits and, unless one was loaded, build the vocabulary on the
        training split (idempotent: a second call does nothing)."""
        if self.train_sentences is not None:
            return
        train, val, test = self._read_splits()
        train = self._fit_training_lengths(train)
        val, test = self._truncate(val), self._truncate(test)
        if self.vocabulary is None:
            self.vocabulary = Vocabulary.build(train, max_size=self.max_vocab_size, min_freq=self.min_freq)
            unknown = self.vocabulary.unknown_share(train)
            if unknown > SUSPICIOUS_UNKNOWN_SHARE:
                rank_zero_warn(
                    f"the vocabulary ({len(self.vocabulary)} tokens: max_vocab_size={self.max_vocab_size}, "
                    f"min_freq={self.min_freq}) maps {unknown:.0%} of the training words to <unk>: the model learns "
                    "mostly <unk>; raise data.init_args.max_vocab_size (the papers keep 10000 words for PTB)"
                )
        self.train_sentences, self.val_sentences, self.test_sentences = train, val, test

    def _read_splits(self) -> tuple[list[Words], list[Words], list[Words]]:
        if self.grammar is not None:
            seed = self._data_seed()
            splits = []
            for index, n in enumerate(self.sizes):
                generator = torch.Generator().manual_seed(derive_seed(seed, TEMPLATE_PURPOSE, index))
                sentences = self.grammar.sample(n, generator)
                splits.append([(s.lower() if self.lowercase else s).split() for s in sentences])
            return splits[0], splits[1], splits[2]
        train, val, test = (read_sentences(self.paths[split], self.lowercase) for split in ("train", "val", "test"))
        for split, sentences in (("train", train), ("val", val), ("test", test)):
            if not sentences:
                raise DataError(
                    f"the {split} file {self.paths[split]} holds no sentence (every line is empty); "
                    "point the data module at a file with one sentence per line"
                )
        return train, val, test

    def _fit_training_lengths(self, train: list[Words]) -> list[Words]:
        """``long_sentences`` applied to the training split; checks that a batch can still be made."""
        if self.max_length is not None and self.long_sentences == "drop":
            kept = [sentence for sentence in train if len(sentence) <= self.max_length]
            if not kept:
                raise DataError(
                    f"long_sentences='drop' with max_length={self.max_length} drops every one of the {len(train)} "
                    "training sentences (the training split is empty); raise max_length or use 'truncate'"
                )
            train = kept
        if len(train) < self.batch_size:
            raise DataError(
                f"batch_size={self.batch_size} exceeds the {len(train)} training sentences, so no whole training "
                "batch can be made; lower batch_size"
            )
        return self._truncate(train)

    def _truncate(self, sentences: list[Words]) -> list[Words]:
        if self.max_length is None:
            return sentences
        return [sentence[: self.max_length] for sentence in sentences]

    def _data_seed(self) -> int:
        return self.seed if self.seed is not None else run_seed()

    # ---------------------------------------------------------------------------- dataloaders
    def train_dataloader(self) -> DataLoader:
        """Length-bucketed training batches (B, T), shuffled per epoch from ``(seed, epoch)``;
        ``len(train_sentences) // batch_size`` batches per epoch (split over DDP processes), and a
        fit resumed from a mid-epoch checkpoint goes on with the epoch's next batch."""
        self.setup()
        assert self.train_sentences is not None and self.vocabulary is not None
        batches = BucketedBatches(self.train_sentences, self.batch_size, self.bucket_batches, seed=self.seed)
        return training_loader(
            batches,
            batch_size=1,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            trainer=self.trainer,
            collate_fn=EncodeSentences(self.vocabulary, nested=True),
            seed=self.seed,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches (B, T) in a fixed order (sentences sorted by length), from the
        ``validate_on`` split."""
        self.setup()
        return self._evaluation_loader(self.val_sentences if self.validate_on == "val" else self.test_sentences)

    def test_dataloader(self) -> DataLoader:
        """Test batches (B, T) in a fixed order (sentences sorted by length)."""
        self.setup()
        return self._evaluation_loader(self.test_sentences)

    def _evaluation_loader(self, sentences: list[Words] | None) -> DataLoader:
        assert sentences is not None and self.vocabulary is not None
        return evaluation_loader(
            SentenceDataset(sentences),
            self.eval_batch_size,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            collate_fn=EncodeSentences(self.vocabulary),
        )


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def _positive(name: str, value: int) -> int:
    if _not_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
