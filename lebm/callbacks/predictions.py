"""The prediction writer: what ``lebm predict`` leaves in the run folder (``docs/predict.md``).

``lebm predict`` adds a :class:`PredictionWriter` unless the recipe or the command line names a
prediction writer of its own; in Python, pass one to the Trainer::

    trainer = L.Trainer(callbacks=[PredictionWriter()], default_root_dir="runs/quickstart")
    trainer.predict(model, datamodule=datamodule, return_predictions=False)
"""

from __future__ import annotations

import contextlib
import csv
import glob
import os
import re
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torch import Tensor

from lebm.atomic import replaced_atomically
from lebm.callbacks.images import to_uint8_grid

__all__ = ["OUTPUT_FILES", "PREDICTIONS_DIR", "PredictionWriter", "merge_predictions", "remove_earlier_predictions"]

#: The folder of the run folder that predictions go to.
PREDICTIONS_DIR = "predictions"
#: The files a writer may write (before the suffix): each predict replaces those of the last one.
OUTPUT_FILES = (
    "predictions.pt",
    "scores.csv",
    "reconstructions.png",
    "samples.png",
    "reconstructions.txt",
    "samples.txt",
)


def _pad_to(tensor: Tensor, shape: Sequence[int]) -> Tensor:
    """``tensor`` right-padded with zeros (``<pad>``, id 0, for token ids) to ``shape`` beyond dim 0."""
    padding: list[int] = []
    for have, want in zip(reversed(tensor.shape[1:]), reversed(shape), strict=True):
        padding += [0, want - have]
    return torch.nn.functional.pad(tensor, padding)


def _merge(values: list[Any]) -> Any:
    if all(isinstance(value, Tensor) for value in values):
        trailing = {tuple(value.shape[1:]) for value in values}
        if len(trailing) == 1:
            return torch.cat(values)
        same_rank = len({len(shape) for shape in trailing}) == 1
        if same_rank and not values[0].is_floating_point():
            widest = [max(sizes) for sizes in zip(*trailing, strict=True)]
            return torch.cat([_pad_to(value, widest) for value in values])
        return values
    if all(isinstance(value, list) for value in values):
        return [item for value in values for item in value]
    return values


def merge_predictions(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One dict from the predictions of several batches: tensors concatenated along the batch
    dimension (integer tensors of different lengths, token ids, right-padded with 0, the ``<pad>``
    id), lists (sentences) joined; a key some batches lack holds the batches that have it."""
    keys: list[str] = []
    for part in parts:
        keys += [key for key in part if key not in keys]
    return {key: _merge([part[key] for part in parts if key in part]) for key in keys}


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value


def _is_image_tensor(value: Any) -> bool:
    return isinstance(value, Tensor) and value.dim() == 4 and value.is_floating_point()


def remove_earlier_predictions(folder: str) -> None:
    """Delete the files an earlier predict wrote into ``folder`` (every :data:`OUTPUT_FILES` name,
    with any ``_loader<i>``/``_rank<R>`` suffix), so that a predict replaces the last one's files
    whatever the number of ranks or loaders of either."""
    for name in OUTPUT_FILES:
        stem, extension = os.path.splitext(name)
        for path in glob.glob(os.path.join(folder, f"{glob.escape(stem)}*{extension}")):
            rest = os.path.basename(path)[len(stem) : -len(extension)]
            if rest == "" or re.fullmatch(r"(_loader\d+)?(_rank\d+)?", rest):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


class PredictionWriter(BasePredictionWriter):
    """Writes every prediction of a predict epoch into ``<run folder>/predictions/``.

    Each rank keeps its predictions on the CPU while the epoch runs and writes them at its end:

    - ``predictions.pt``: one dict (``torch.load(path)``) of the predictions merged over the
      batches (:func:`merge_predictions`): for data batches ``inputs``, ``latents``,
      ``reconstructions``, ``scores`` (and ``labels``), for sample requests ``samples``, each
      along dim 0 in loader order, the text model's sentences as lists of strings, plus
      ``indices`` ``(N,)``: the examples' indices in the prediction dataset (the requested
      samples' numbers for sample requests);
    - ``scores.csv``: ``index,score`` (``,label`` when the data have labels), one row per example;
    - images: ``reconstructions.png`` (up to ``grid_size`` inputs, each row of ``nrow`` images above
      its reconstructions) and ``samples.png`` (up to ``grid_size`` samples);
    - text: ``reconstructions.txt`` (``input<TAB>reconstruction<TAB>score`` per sentence, a header
      first) and ``samples.txt`` (one generated sentence per line).

    Under DDP every rank writes its own files, named ``..._rank<R>`` (``predictions_rank1.pt``);
    their ``indices`` say which examples each holds. With several prediction loaders the files of
    loader ``i`` are named ``..._loader<i>``. A predict into the same folder replaces the files of
    the last one (:data:`OUTPUT_FILES`).

    Args:
        output_dir: the folder (None: ``<trainer.default_root_dir>/predictions``).
        grid_size: the most images in a PNG grid.
        nrow: images per grid row.
    """

    def __init__(self, output_dir: str | None = None, grid_size: int = 64, nrow: int = 8) -> None:
        super().__init__(write_interval="batch")
        for name, value in (("grid_size", grid_size), ("nrow", nrow)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PredictionWriter {name} must be a whole number >= 1, got {value!r}")
        self.output_dir, self.grid_size, self.nrow = output_dir, grid_size, nrow
        self._parts: dict[int, list[dict[str, Any]]] = {}
        #: The files the last predict epoch wrote on this rank.
        self.written: list[str] = []

    def folder(self, trainer: L.Trainer) -> str:
        """Where the files go: ``output_dir``, or ``<trainer.default_root_dir>/predictions``."""
        return self.output_dir or os.path.join(trainer.default_root_dir, PREDICTIONS_DIR)

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parts = {}

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Keep the batch's prediction (on the CPU), with its dataset indices when known."""
        if not isinstance(prediction, dict):
            raise TypeError(
                f"PredictionWriter writes the dicts lebm's predict_step returns; {type(pl_module).__name__} returned "
                f"{type(prediction).__name__}"
            )
        part = _to_cpu(prediction)
        if "indices" not in part and batch_indices is not None:
            part["indices"] = torch.as_tensor(list(batch_indices), dtype=torch.int64)
        self._parts.setdefault(dataloader_idx, []).append(part)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write this rank's files."""
        folder = self.folder(trainer)
        os.makedirs(folder, exist_ok=True)
        if trainer.is_global_zero or trainer.world_size == 1:
            remove_earlier_predictions(folder)
        trainer.strategy.barrier("lebm_predictions_cleared")
        self.written = []
        several = len(self._parts) > 1
        for loader, parts in sorted(self._parts.items()):
            suffix = (f"_loader{loader}" if several else "") + (
                f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""
            )
            self.written += self.write(folder, merge_predictions(parts), suffix)
        self._parts = {}

    def write(self, folder: str, predictions: dict[str, Any], suffix: str = "") -> list[str]:
        """Write merged ``predictions`` into ``folder`` (made if missing; file names end in ``suffix``);
        returns the paths."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"predictions{suffix}.pt")
        with replaced_atomically(path, "wb") as file:
            torch.save(predictions, file)
        written = [path]
        scores = predictions.get("scores")
        if isinstance(scores, Tensor):
            written.append(self._write_scores(folder, predictions, suffix))
        inputs, reconstructions = predictions.get("inputs"), predictions.get("reconstructions")
        if _is_image_tensor(inputs) and _is_image_tensor(reconstructions):
            x, x_hat = inputs[: self.grid_size], reconstructions[: self.grid_size]
            rows = [torch.cat([x[i : i + self.nrow], x_hat[i : i + self.nrow]]) for i in range(0, len(x), self.nrow)]
            written.append(self._write_grid(folder, f"reconstructions{suffix}.png", torch.cat(rows)))
        samples = predictions.get("samples")
        if _is_image_tensor(samples):
            written.append(self._write_grid(folder, f"samples{suffix}.png", samples[: self.grid_size]))
        if isinstance(predictions.get("input_text"), list) and isinstance(predictions.get("reconstruction_text"), list):
            inputs_text, outputs_text = predictions["input_text"], predictions["reconstruction_text"]
            score_text = _score_column(scores, len(outputs_text))
            rows = zip(inputs_text, outputs_text, score_text, strict=True)
            lines = ["input\treconstruction\tscore", *("\t".join(row) for row in rows)]
            written.append(_write_lines(folder, f"reconstructions{suffix}.txt", lines))
        if isinstance(predictions.get("sample_text"), list):
            written.append(_write_lines(folder, f"samples{suffix}.txt", predictions["sample_text"]))
        return written

    def _write_scores(self, folder: str, predictions: dict[str, Any], suffix: str) -> str:
        scores = predictions["scores"]
        indices = predictions.get("indices")
        index = indices.tolist() if isinstance(indices, Tensor) and len(indices) == len(scores) else range(len(scores))
        labels = predictions.get("labels")
        labelled = isinstance(labels, Tensor) and len(labels) == len(scores)
        path = os.path.join(folder, f"scores{suffix}.csv")
        with replaced_atomically(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "score", *(["label"] if labelled else [])])
            for row, (i, score) in enumerate(zip(index, scores.tolist(), strict=True)):
                writer.writerow([i, f"{score:.8g}", *([labels[row].item()] if labelled else [])])
        return path

    def _write_grid(self, folder: str, name: str, images: Tensor) -> str:
        path = os.path.join(folder, name)
        with replaced_atomically(path, "wb") as file:
            Image.fromarray(to_uint8_grid(images, self.nrow)).save(file, format="PNG")
        return path


def _score_column(scores: Any, n: int) -> list[str]:
    return [f"{score:.6g}" for score in scores.tolist()] if isinstance(scores, Tensor) else [""] * n


def _write_lines(folder: str, name: str, lines: Sequence[str]) -> str:
    path = os.path.join(folder, name)
    with replaced_atomically(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{line}\n" for line in lines)
    return path
