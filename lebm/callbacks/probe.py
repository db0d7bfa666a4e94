"""The hierarchical representation probe as a callback: per-layer test accuracy of a classifier
trained on each latent layer (Cui, Wu & Han, ICCV 2023, arXiv 2310.09604, Table 1; see :mod:`lebm.metrics.probe`).

In a recipe::

    trainer:
      callbacks:
        - class_path: lebm.callbacks.LatentProbe
          init_args:
            after_test: false              # probe once, when the fit ends
            fit_kwargs: {epochs: 30}

When: once at the end of ``fit`` and once at the end of ``test``, each switchable. The end of
``fit`` is Lightning's ``on_train_end`` hook (after the last epoch, or when training stops early;
not after an interrupted fit), not ``on_fit_end``: by ``on_fit_end`` the trainer has already moved
the model to the CPU, where inferring the whole training set would be slow. The end of ``test``
is ``on_test_end``. The model probed is the one the trainer holds then (for ``test`` with
``ckpt_path``, the checkpoint's weights). The classifiers train on the CPU unless
``fit_kwargs`` names a ``device``.

Data: the latents of the whole training set (``trainer.datamodule.train_dataset`` in a fixed
order, every image once: not the shuffled training loader) train the classifiers, and those of
``trainer.datamodule.test_dataloader()`` test them. ``model.infer(x)`` gives the latents
(:func:`lebm.metrics.probe.collect_latents`).

Under DDP every rank would compute the same numbers: only global rank 0 probes (on its own
device, over the whole sets), and nothing is broadcast or synchronised. The other ranks go on
meanwhile; when they wait for rank 0 in a collective after the hook, a long probe must finish
within the process group's timeout (30 minutes by default).
"""

from __future__ import annotations

import json
import os
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lebm.atomic import replaced_atomically
from lebm.data.loaders import evaluation_loader
from lebm.metrics.probe import collect_latents, layer_names, probe_collected

#: The batch size of the feature loaders when neither the callback nor the datamodule gives one.
DEFAULT_BATCH_SIZE = 256


def write_json_atomically(path: str, content: dict[str, Any]) -> None:
    """Write ``content`` to ``path`` via a temporary file in the same folder and ``os.replace``,
    so that a reader never sees a half-written file."""
    with replaced_atomically(path) as file:
        json.dump(content, file, indent=2, default=str)
        file.write("\n")


class LatentProbe(L.Callback):
    """Per-layer classification accuracy of the model's latents (the hierarchical representation probe).

    For each latent layer (``pl_module.latent_groups``, bottom first; one layer ``"z"`` without
    groups) a :class:`~lebm.metrics.LayerProbe` (``Linear(d, 256) - ReLU - Linear(256, classes)``)
    is trained on the layer's latents of the training images and scored on the test images
    (:func:`lebm.metrics.fit_probe`). The paper reports 32.60 / 58.32 / 67.64 % on MNIST for
    layers 1..3.

    Reports:
        - ``probe/acc_<layer name>`` (accuracy in [0, 1]) to every logger, at ``trainer.global_step``;
        - :attr:`results`: ``{layer name: accuracy}`` of the last probe;
        - ``<trainer.default_root_dir>/<filename>``: JSON with ``accuracy`` (``{name: acc}``),
          ``layers`` (names, bottom first), ``sizes``, ``epoch`` (``trainer.current_epoch``: the
          epochs completed when ``fit`` ends), ``global_step``, ``stage`` (``"fit"``/``"test"``),
          ``n_train``, ``n_test`` and ``fit_kwargs``; rewritten (atomically) by each probe.

    Needs a datamodule with ``train_dataset`` and ``test_dataloader()`` whose batches are
    ``(x, y)`` with integer labels ``y``. Runs on global rank 0 only (see the module docs).

    Args:
        after_fit: probe when ``fit`` ends (``on_train_end``).
        after_test: probe when ``test`` ends (``on_test_end``).
        max_train_batches: probe on the first ``max_train_batches`` batches of the (unshuffled)
            training set only; None: all of it.
        max_test_batches: the same for the test loader.
        batch_size: the batch size of the training-set feature loader; None: the datamodule's
            ``eval_batch_size``, else its ``batch_size``, else 256.
        fit_kwargs: keyword arguments of :func:`lebm.metrics.fit_probe` (``epochs``, ``lr``,
            ``batch_size``, ``seed``, ``standardize``, ...).
        filename: the JSON file's name inside ``trainer.default_root_dir``.
    """

    def __init__(
        self,
        after_fit: bool = True,
        after_test: bool = True,
        max_train_batches: int | None = None,
        max_test_batches: int | None = None,
        batch_size: int | None = None,
        fit_kwargs: dict[str, Any] | None = None,
        filename: str = "probe.json",
    ) -> None:
        for name, value in (("max_train_batches", max_train_batches), ("max_test_batches", max_test_batches)):
            if value is not None and value < 1:
                raise ValueError(f"LatentProbe {name} must be None or >= 1, got {value}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"LatentProbe batch_size must be None or >= 1, got {batch_size}")
        self.after_fit = after_fit
        self.after_test = after_test
        self.max_train_batches = max_train_batches
        self.max_test_batches = max_test_batches
        self.batch_size = batch_size
        self.fit_kwargs = dict(fit_kwargs or {})
        self.filename = filename
        self.results: dict[str, float] = {}

    # ------------------------------------------------------------------------------- hooks
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The end of ``fit`` (see the module docs for why not ``on_fit_end``)."""
        if self.after_fit:
            self.probe(trainer, pl_module, "fit")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.after_test:
            self.probe(trainer, pl_module, "test")

    # ------------------------------------------------------------------------------- probe
    def probe(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> dict[str, float]:
        """Probe every layer, log, keep and write the accuracies (global rank 0 only; other ranks
        return :attr:`results` unchanged)."""
        if not trainer.is_global_zero:
            return self.results
        train_loader, test_loader = self._loaders(trainer)
        train, train_labels = collect_latents(pl_module, train_loader, self.max_train_batches)
        test, test_labels = collect_latents(pl_module, test_loader, self.max_test_batches)
        names = layer_names(pl_module)
        self.results = probe_collected(names, train, train_labels, test, test_labels, **self.fit_kwargs)

        metrics = {f"probe/acc_{name}": accuracy for name, accuracy in self.results.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        record = {
            "accuracy": dict(self.results),
            "layers": list(names),
            "sizes": [int(layer.shape[1]) for layer in train],
            "epoch": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "stage": stage,
            "n_train": int(train_labels.shape[0]),
            "n_test": int(test_labels.shape[0]),
            "fit_kwargs": self.fit_kwargs,
        }
        write_json_atomically(os.path.join(trainer.default_root_dir, self.filename), record)
        summary = ", ".join(f"{name} {100 * accuracy:.2f}%" for name, accuracy in self.results.items())
        rank_zero_info(f"LatentProbe ({stage}): test accuracy per layer: {summary}")
        return self.results

    def _loaders(self, trainer: L.Trainer) -> tuple[Any, Any]:
        datamodule = trainer.datamodule
        train_dataset = getattr(datamodule, "train_dataset", None) if datamodule is not None else None
        if train_dataset is None or not hasattr(datamodule, "test_dataloader"):
            raise ValueError(
                "LatentProbe needs a datamodule with a `train_dataset` (set up) and a `test_dataloader()`, "
                f"got {type(datamodule).__name__}"
            )
        batch_size = self.batch_size
        for attribute in ("eval_batch_size", "batch_size"):
            if batch_size is None:
                batch_size = getattr(datamodule, attribute, None)
        num_workers = int(getattr(datamodule, "num_workers", 0) or 0)
        train_loader = evaluation_loader(train_dataset, int(batch_size or DEFAULT_BATCH_SIZE), num_workers=num_workers)
        return train_loader, datamodule.test_dataloader()
