"""Text-generation metrics as a callback: FPPL, RPPL and the share of distinct generated sentences.

In a recipe::

    trainer:
      callbacks:
        - class_path: lebm.callbacks.TextGenerationMetrics
          init_args:
            n_samples: 1000
            every_n_epochs: 5
            lm: {epochs: 10, hidden_dim: 256}

After a validation (every ``every_n_epochs`` epochs of ``fit``; always in ``validate``) and after a
test epoch it logs, with ``stage`` = ``val`` or ``test`` (Pang et al., NeurIPS 2020, arXiv 2006.08205, Table 2):

- ``{stage}/fppl``, the forward perplexity: perplexity of ``n_samples`` generated sentences under
  an LSTM language model trained on the real training split (fluency; low is fluent);
- ``{stage}/rppl``, the reverse perplexity: perplexity of the real ``eval_split`` sentences under
  an LSTM language model trained on the generated sentences (coverage; high when the samples
  collapse onto a few modes);
- ``{stage}/distinct_sentences``: the fraction of the generated sentences that are distinct.

Perplexity is ``exp(sum NLL / sum predicted tokens)`` over the corpus, the predicted tokens being
the words and eos of each sentence (:mod:`lebm.metrics.language_model`).

Under DDP each rank generates ``ceil(n_samples / world_size)`` sentences from its evaluation
stream; the sentences are gathered in rank order and cut to ``n_samples``, and global rank 0
trains the language models and broadcasts the values, so every rank logs the same numbers, and
they depend only on the gathered sentences (not on the number of ranks). The language models'
randomness comes from ``seed`` (the real-data model from ``seed`` alone, the one on generated text
from ``(seed, epoch)``), so runs compared with the same ``seed`` use the same metric. The real-data
model is trained once per ``fit`` (cached in the callback and reused by a later ``test``).

``log_samples`` generated sentences are written to ``<run>/samples/<stage>_epoch<EEEE>.txt``
whatever the logger, and logged as a W&B table ``{stage}/samples`` (columns epoch, sentence) with a
``WandbLogger``.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from lebm.atomic import replaced_atomically
from lebm.callbacks.gathered import log_gathered
from lebm.callbacks.schedule import epoch_ends
from lebm.metrics.language_model import (
    LANGUAGE_MODEL_DEFAULTS,
    canonical_sentences,
    perplexity,
    train_language_model,
    trim_padding,
)
from lebm.nets.text import DECODINGS, LSTMTextGenerator
from lebm.randomness import derive_seed

STAGES = ("val", "test")
SPLITS = ("train", "val", "test")
#: Purpose words of this callback's seeds in :func:`lebm.randomness.derive_seed` (ASCII "rlm", "glm", "gen").
REAL_LM_PURPOSE, GENERATED_LM_PURPOSE, SAMPLING_PURPOSE = 0x726C6D, 0x676C6D, 0x67656E
#: The values it logs under ``val/`` and ``test/``.
METRIC_NAMES = ("fppl", "rppl", "distinct_sentences")


# ------------------------------------------------------------------------------ small helpers
def distinct_fraction(x: Tensor, pad_id: int = 0) -> float:
    """The fraction of distinct sentences among the rows of ``x`` ``(N, T)`` (padding ignored: rows
    are compared up to the last non-padding token)."""
    rows = {tuple(token for token in row if token != pad_id) for row in x.tolist()}
    return len(rows) / max(len(x), 1)


def within_vocabulary(x: Tensor, vocab_size: int, unk_id: int) -> Tensor:
    """``x`` with ids outside ``[0, vocab_size)`` replaced by ``unk_id`` (a decoder's token table
    may be larger than the data's vocabulary)."""
    return x.masked_fill((x < 0) | (x >= vocab_size), unk_id)


def gather_sentences(trainer: L.Trainer, local: Tensor, pad_id: int) -> Tensor:
    """Every rank's ``local`` sentences ``(k, T_rank)`` (the same ``k`` on each rank), in rank
    order: ``(world_size * k, max T)``, right-padded with ``pad_id``. Collective under DDP."""
    if trainer.world_size == 1:
        return local
    strategy = trainer.strategy
    width = int(strategy.all_gather(torch.tensor(local.shape[1], device=local.device)).max())
    padded = torch.nn.functional.pad(local, (0, width - local.shape[1]), value=pad_id)
    return strategy.all_gather(padded).reshape(-1, width)


def write_text_atomically(path: str, lines: Sequence[str]) -> None:
    """Write ``lines`` (one per line) to ``path`` through a temporary file in the same folder and
    ``os.replace``, so that a reader never sees a half-written file."""
    with replaced_atomically(path, "w", encoding="utf-8") as file:
        file.writelines(f"{line}\n" for line in lines)


def accepts_keywords(function: Any, *names: str) -> bool:
    """Whether ``function`` can be called with every keyword in ``names`` (or takes ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True  # cannot tell: the call itself will say
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return True
    return set(names) <= {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}


@contextmanager
def generation_mode(pl_module: L.LightningModule, seed: int, decoding: str | None) -> Iterator[None]:
    """Eval mode, torch's global RNG forked and seeded with ``seed`` (a sampled decoding that
    draws from it is reproducible, and training's random numbers are untouched), and the
    decoder's ``decoding`` set to ``decoding`` (None: left as it is); all restored afterwards."""
    was_training = pl_module.training
    decoder = getattr(pl_module, "decoder", None)
    previous = getattr(decoder, "decoding", None)
    devices = [pl_module.device] if pl_module.device.type == "cuda" else []
    pl_module.eval()
    try:
        if decoding is not None:
            decoder.decoding = decoding
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        if decoding is not None:
            decoder.decoding = previous
        pl_module.train(was_training)


# ------------------------------------------------------------------------------ the callback
class TextGenerationMetrics(L.Callback):
    """FPPL, RPPL and the distinct-sentence fraction of generated text (see the module docstring).

    Args:
        n_samples: sentences generated per evaluation (split over the ranks).
        every_n_epochs: during ``fit``, evaluate after every ``every_n_epochs``-th epoch (those
            that validate); ``validate`` and ``test`` always evaluate.
        stages: where to evaluate: ``"val"`` and/or ``"test"``.
        decoding: ``"greedy"`` or ``"sample"`` to override the decoder's ``decoding`` while
            generating; None uses the decoder's own.
        lm: the language models' settings, any of ``embed_dim, hidden_dim, num_layers, dropout,
            epochs, batch_size, lr, clip`` (:func:`lebm.metrics.train_language_model`; defaults:
            embed 128, hidden 256, 1 layer, dropout 0.3, 10 epochs, batches of 64, lr 1e-3, clip 5).
        eval_split: the real sentences RPPL is measured on: ``"train"``, ``"val"`` or ``"test"``
            (the datamodule's ``<split>_sentences``).
        log_samples: how many generated sentences to log (0: none).
        seed: seed of the language models (and of the sampling of a model without an evaluation stream).
        batch_size: sentences per ``generate`` call.
    """

    def __init__(
        self,
        n_samples: int = 1000,
        every_n_epochs: int = 1,
        stages: Sequence[str] = STAGES,
        decoding: str | None = None,
        lm: dict[str, Any] | None = None,
        eval_split: str = "test",
        log_samples: int = 20,
        seed: int = 0,
        batch_size: int = 500,
    ) -> None:
        if isinstance(stages, str):
            stages = (stages,)
        for label, value, minimum in (
            ("n_samples", n_samples, 2),
            ("every_n_epochs", every_n_epochs, 1),
            ("log_samples", log_samples, 0),
            ("batch_size", batch_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"TextGenerationMetrics {label} must be an int >= {minimum}, got {value!r}")
        if not stages or any(stage not in STAGES for stage in stages):
            raise ValueError(f"TextGenerationMetrics stages must be a non-empty subset of {STAGES}, got {stages!r}")
        if decoding is not None and decoding not in DECODINGS:
            raise ValueError(f"TextGenerationMetrics decoding must be None or one of {DECODINGS}, got {decoding!r}")
        if eval_split not in SPLITS:
            raise ValueError(f"TextGenerationMetrics eval_split must be one of {SPLITS}, got {eval_split!r}")
        unknown = sorted(set(lm or {}) - set(LANGUAGE_MODEL_DEFAULTS))
        if unknown:
            raise ValueError(
                f"TextGenerationMetrics lm has unknown settings {unknown}; the settings are "
                f"{sorted(LANGUAGE_MODEL_DEFAULTS)}"
            )
        self.n_samples, self.every_n_epochs, self.stages = n_samples, every_n_epochs, tuple(stages)
        self.decoding, self.eval_split, self.log_samples = decoding, eval_split, log_samples
        self.seed, self.batch_size = int(seed), batch_size
        self.lm = {**LANGUAGE_MODEL_DEFAULTS, **(lm or {})}
        self._real_lm: LSTMTextGenerator | None = None
        self._reference: Tensor | None = None  # the eval_split sentences as ids
        #: the values of the last evaluation, ``{"fppl": ..., "rppl": ..., "distinct_sentences": ...}``
        self.last_metrics: dict[str, float] = {}

    @property
    def logged_metric_names(self) -> tuple[str, ...]:
        """What it logs (what a callback can ``monitor``): ``<stage>/fppl``, ``<stage>/rppl`` and
        ``<stage>/distinct_sentences``."""
        return tuple(f"{stage}/{name}" for stage in ("val", "test") for name in METRIC_NAMES)

    # ------------------------------------------------------------------------------- set-up
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the data and the model can give what the metrics read; a new ``fit`` retrains the
        real-data language model."""
        self._check_data(trainer)
        self.check_method(pl_module)
        if stage == TrainerFn.FITTING:
            self._real_lm, self._reference = None, None

    def _check_data(self, trainer: L.Trainer) -> None:
        datamodule = trainer.datamodule
        needed = ("vocabulary", "train_sentences", f"{self.eval_split}_sentences")
        missing = [name for name in needed if getattr(datamodule, name, None) is None]
        if missing:
            raise ValueError(
                f"TextGenerationMetrics reads the datamodule's {', '.join(needed)}, but "
                f"{type(datamodule).__name__ if datamodule is not None else 'the run (no datamodule)'} has no "
                f"{', '.join(missing)}: train with a text datamodule (lebm.data.TextDataModule), or remove the callback"
            )

    def check_method(self, pl_module: L.LightningModule) -> None:
        """``ValueError`` (one line) unless the method generates and reconstructs text as the metrics
        read it (the ``lebm`` CLI calls it when the run is built, ``Method.check_trainer`` when a run
        starts)."""
        method = type(pl_module).__name__
        generate = getattr(pl_module, "generate", None)
        if not callable(generate) or not accepts_keywords(generate, "raw", "generator"):
            raise ValueError(
                f"TextGenerationMetrics needs token ids from {method}.generate(n, generator=..., raw=True), which "
                f"{method} does not take: use a latent-variable method (e.g. lebm.models.LatentEBM) with a text "
                "decoder (lebm.nets.CategoricalDecoder), or remove the callback"
            )
        decoder = getattr(pl_module, "decoder", None)
        if decoder is not None and not callable(getattr(decoder, "present", None)):
            raise ValueError(
                f"TextGenerationMetrics needs generated sentences, but {method}'s decoder "
                f"{type(decoder).__name__} does not produce text: use lebm.nets.CategoricalDecoder, or "
                "remove the callback"
            )
        if self.decoding is not None and not hasattr(decoder, "decoding"):
            raise ValueError(
                f"TextGenerationMetrics decoding={self.decoding!r} sets the decoder's `decoding`, which {method} "
                f"has not ({type(decoder).__name__}): set decoding: null"
            )

    # ---------------------------------------------------------------------------------- hooks
    def _due_in_validation(self, trainer: L.Trainer) -> bool:
        if trainer.sanity_checking or "val" not in self.stages:
            return False
        if trainer.state.fn != TrainerFn.FITTING:
            return True
        return epoch_ends(trainer) and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due_in_validation(trainer):
            self._evaluate_and_log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "test" in self.stages:
            self._evaluate_and_log(trainer, pl_module, "test")

    def _evaluate_and_log(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        values = self.evaluate(trainer, pl_module, stage)
        for name, value in values.items():
            log_gathered(pl_module, f"{stage}/{name}", value)

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str = "val") -> dict[str, float]:
        """Generate, gather, score on global rank 0 and broadcast (collective under DDP); logs the
        samples. Returns ``{"fppl", "rppl", "distinct_sentences"}``, the same on every rank. An
        error on rank 0 is raised on every rank (none is left waiting for the values)."""
        generated = self.generate(trainer, pl_module)
        folder = trainer.default_root_dir if self.log_samples else None
        outcome: dict[str, float] | str | None = None
        if trainer.is_global_zero:
            try:
                sentences = self.prepare(trainer, generated)
                outcome = self.score(trainer, sentences, pl_module.device)
                if self.log_samples:
                    texts = trainer.datamodule.vocabulary.to_text(sentences[: self.log_samples].cpu())
                    self._log_samples(trainer, texts, stage, folder)
            except Exception as error:
                if trainer.world_size == 1:
                    raise
                outcome = f"{type(error).__name__}: {error}"
                trainer.strategy.broadcast(outcome, src=0)
                raise
        outcome = trainer.strategy.broadcast(outcome, src=0)
        if isinstance(outcome, str):
            raise RuntimeError(f"TextGenerationMetrics failed on global rank 0: {outcome}")
        self.last_metrics = dict(outcome)
        return outcome

    def generate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Tensor:
        """``n_samples`` generated sentences ``(n_samples, T)`` long (collective under DDP): this
        rank's ``ceil(n_samples / world_size)`` from its evaluation stream, gathered in rank order."""
        vocabulary = trainer.datamodule.vocabulary
        rank, world_size, epoch = trainer.global_rank, trainer.world_size, trainer.current_epoch
        share = math.ceil(self.n_samples / world_size)
        generator = getattr(pl_module, "eval_generator", None)
        if not isinstance(generator, torch.Generator):
            generator = torch.Generator(pl_module.device).manual_seed(derive_seed(self.seed, rank, epoch))
        chunks = []
        with generation_mode(pl_module, derive_seed(self.seed, SAMPLING_PURPOSE, rank, epoch), self.decoding):
            for start in range(0, share, self.batch_size):
                count = min(self.batch_size, share - start)
                chunks.append(self._checked(pl_module, pl_module.generate(count, generator=generator, raw=True), count))
        width = max(chunk.shape[1] for chunk in chunks)
        local = torch.cat(
            [torch.nn.functional.pad(c, (0, width - c.shape[1]), value=vocabulary.pad_id) for c in chunks]
        )
        gathered = gather_sentences(trainer, local.to(pl_module.device), vocabulary.pad_id)
        return trim_padding(gathered[: self.n_samples], vocabulary.pad_id)

    @staticmethod
    def _checked(pl_module: L.LightningModule, tokens: Any, count: int) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dtype != torch.long or tokens.ndim != 2 or len(tokens) != count:
            got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(
                f"TextGenerationMetrics: {type(pl_module).__name__}.generate({count}, raw=True) returned {got}, not "
                f"token ids ({count}, T) int64: use a text decoder (lebm.nets.CategoricalDecoder)"
            )
        return tokens.detach()

    def prepare(self, trainer: L.Trainer, generated: Tensor) -> Tensor:
        """Generated ids ``(N, T)`` ready to score: ids outside the vocabulary become unk, and the
        sentences are put in the layout ``[bos, w.., eos, pad..]``
        (:func:`lebm.metrics.language_model.canonical_sentences`)."""
        vocabulary = trainer.datamodule.vocabulary
        inside = within_vocabulary(generated, len(vocabulary), vocabulary.unk_id)
        ids = (vocabulary.pad_id, vocabulary.bos_id, vocabulary.eos_id, vocabulary.unk_id)
        return canonical_sentences(inside, *ids)

    def score(self, trainer: L.Trainer, sentences: Tensor, device: torch.device) -> dict[str, float]:
        """``{"fppl", "rppl", "distinct_sentences"}`` of prepared generated ``sentences`` ``(N, T)``
        (:meth:`prepare`; this process only)."""
        vocabulary = trainer.datamodule.vocabulary
        size, sentences = len(vocabulary), sentences.to(device)
        fppl = perplexity(self.real_language_model(trainer, device), sentences)
        seed = derive_seed(self.seed, GENERATED_LM_PURPOSE, trainer.current_epoch)
        generated_lm = self._train(sentences, size, seed, device, vocabulary.pad_id)
        rppl = perplexity(generated_lm, self.reference_sentences(trainer).to(device))
        return {"fppl": fppl, "rppl": rppl, "distinct_sentences": distinct_fraction(sentences, vocabulary.pad_id)}

    def real_language_model(self, trainer: L.Trainer, device: torch.device) -> LSTMTextGenerator:
        """The language model of the real training sentences (trained on first use, once per fit)."""
        if self._real_lm is None:
            datamodule = trainer.datamodule
            vocabulary = datamodule.vocabulary
            sentences = vocabulary.to_tensor(list(datamodule.train_sentences))
            seed = derive_seed(self.seed, REAL_LM_PURPOSE)
            self._real_lm = self._train(sentences, len(vocabulary), seed, device, vocabulary.pad_id)
        return self._real_lm.to(device)

    def reference_sentences(self, trainer: L.Trainer) -> Tensor:
        """The ``eval_split`` sentences as ids ``(N, T)`` (encoded on first use, once per fit)."""
        if self._reference is None:
            datamodule = trainer.datamodule
            self._reference = datamodule.vocabulary.to_tensor(list(getattr(datamodule, f"{self.eval_split}_sentences")))
        return self._reference

    def _train(
        self, sentences: Tensor, vocab_size: int, seed: int, device: torch.device, pad_id: int
    ) -> LSTMTextGenerator:
        generator = torch.Generator().manual_seed(seed)
        return train_language_model(sentences, vocab_size, **self.lm, pad_id=pad_id, generator=generator, device=device)

    # ----------------------------------------------------------------------------- samples
    def _log_samples(self, trainer: L.Trainer, sentences: list[str], stage: str, folder: str | None) -> None:
        """``<folder>/samples/<stage>_epoch<E>.txt`` (``validate_epoch<E>.txt`` for a ``validate``
        outside ``fit``, which leaves the fit's files alone), and a W&B table ``{stage}/samples`` with
        a WandbLogger."""
        epoch = trainer.current_epoch
        state = getattr(getattr(trainer, "state", None), "fn", None)
        prefix = "validate" if stage == "val" and state == TrainerFn.VALIDATING else stage
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text(
                    key=f"{stage}/samples", columns=["epoch", "sentence"], data=[[epoch, s] for s in sentences]
                )
        if folder is not None:
            write_text_atomically(os.path.join(folder, "samples", f"{prefix}_epoch{epoch:04d}.txt"), sentences)
