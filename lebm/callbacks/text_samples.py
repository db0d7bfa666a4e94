"""Sentences a text run writes into its run folder, whatever the logger: ``<run>/samples/*.txt``.

The text counterpart of the image grids: at the end of every ``every_n_epochs``-th training epoch
and of the last one, on global rank 0,

- ``samples/generated_epoch<EEEE>.txt``: ``n`` sentences of ``generate(n)``;
- ``samples/reconstructions_epoch<EEEE>.txt``: the first ``n`` validation sentences, each followed by
  its reconstruction ``reconstruct(sentences)`` on the next line (marked ``>``).

Each file opens with a ``#`` line naming the epoch and the chain that drew the latents. The
sentences are drawn as the grids are (:func:`~lebm.callbacks.images.quiet_evaluation`): training
draws the same random numbers whichever epochs write them.

A folder that cannot be written (a file named ``samples`` in the way, a full disk) is a warning,
said once, when the run starts or at the first epoch that meets it; training goes on (the files are
a view of the run, its checkpoints are what it keeps).
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from lebm.atomic import os_reason
from lebm.callbacks.images import chain_description, quiet_evaluation
from lebm.callbacks.schedule import grid_epoch
from lebm.callbacks.text import write_text_atomically

#: The folder of the sentence files inside the run folder.
SAMPLES_FOLDER = "samples"


class TextSamples(L.Callback):
    """Write generated and reconstructed sentences to ``<run>/samples/`` (see the module docstring).

    Args:
        n: sentences per file.
        every_n_epochs: how often (in epochs); the last epoch always writes.
        seed: seeds the chains, so files of successive epochs are comparable.
    """

    def __init__(self, n: int = 20, every_n_epochs: int = 5, seed: int | None = 0) -> None:
        for label, value in (("n", n), ("every_n_epochs", every_n_epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TextSamples {label} must be an int >= 1, got {value!r}")
        self.n, self.every_n_epochs, self.seed = n, every_n_epochs, seed
        self._warned = False

    def check_method(self, pl_module: L.LightningModule) -> None:
        """``ValueError`` (one line) unless the method's decoder speaks text (``lebm.nets.CategoricalDecoder``)."""
        if not callable(getattr(getattr(pl_module, "decoder", None), "present", None)):
            raise ValueError(
                f"TextSamples writes sentences, but {type(pl_module).__name__}'s decoder does not produce text: "
                "use lebm.nets.CategoricalDecoder, or remove the callback (image runs have SampleGrid)"
            )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Before training: warn when a file named ``samples`` is where the folder should be."""
        folder = os.path.join(trainer.default_root_dir, SAMPLES_FOLDER)
        if stage == "fit" and trainer.is_global_zero and os.path.exists(folder) and not os.path.isdir(folder):
            self._warn(folder, "a file of that name is in the way", f"move the file {folder} away")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not grid_epoch(trainer, self.every_n_epochs):
            return
        folder = os.path.join(trainer.default_root_dir, SAMPLES_FOLDER)
        try:
            self.write_epoch(trainer, pl_module, folder)
        except OSError as error:
            self._warn(folder, os_reason(error), f"make {folder} a writable folder")

    def _warn(self, folder: str, reason: str, fix: str) -> None:
        """One warning for the run, naming the folder, the reason and the fix."""
        if not self._warned:
            self._warned = True
            rank_zero_warn(
                f"TextSamples cannot write the sentence files into {folder}: {reason}; training goes on without "
                f"them. To keep them, {fix} (the next epoch that writes tries again)"
            )

    def write_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, folder: str) -> None:
        """Write this epoch's generated sentences and, when the data have validation sentences, their
        reconstructions into ``folder``."""
        epoch = trainer.current_epoch
        prior = chain_description(getattr(pl_module, "generation_sampler", None))
        with quiet_evaluation(pl_module):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            generated = list(pl_module.generate(self.n))
        header = f"# epoch {epoch}: {len(generated)} sentences of generate(n); prior chain: {prior}"
        write_text_atomically(os.path.join(folder, f"generated_epoch{epoch:04d}.txt"), [header, *generated])
        originals = self.validation_sentences(trainer)
        if not originals:
            return
        with quiet_evaluation(pl_module):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            rebuilt = list(pl_module.reconstruct(originals))
        posterior = chain_description(getattr(pl_module, "posterior_sampler", None))
        header = (
            f"# epoch {epoch}: validation sentences, each followed by its reconstruction (posterior chain: {posterior})"
        )
        pairs = [line for original, copy in zip(originals, rebuilt, strict=True) for line in (original, f"> {copy}")]
        write_text_atomically(os.path.join(folder, f"reconstructions_epoch{epoch:04d}.txt"), [header, *pairs])

    def validation_sentences(self, trainer: L.Trainer) -> list[str]:
        """The datamodule's first ``n`` validation sentences as text ([] when it has none)."""
        sentences: Any = getattr(trainer.datamodule, "val_sentences", None)
        return [" ".join(words) for words in (sentences or [])[: self.n]]
