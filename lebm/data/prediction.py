"""What ``lebm predict`` reads: a data module's prediction batches, or requests for generated samples.

- Every lebm data module predicts on its **test split** (:class:`PredictionSource`: its
  ``predict_dataloader`` is its ``test_dataloader``, in the same fixed order; a data module without
  a test split predicts on its validation batches), or, with ``predict_samples: N``, asks for ``N``
  generated samples instead::

      lebm predict -c quickstart --ckpt_path runs/quickstart/checkpoints/last.ckpt \\
          --data.init_args.predict_samples 64

- :class:`SampleRequests` is a data source of *counts* alone: its batches are :class:`SampleRequest`
  objects that ask the model for generated samples instead of holding data. From Python:
  ``trainer.predict(model, datamodule=SampleRequests(n=64))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lebm.data.errors import DataError
from lebm.data.loaders import evaluation_loader

__all__ = ["PredictionSource", "SampleRequest", "SampleRequests", "check_predict_samples", "is_sample_request"]


@dataclass
class SampleRequest:
    """A batch that asks for generated samples instead of holding data.

    Attributes:
        indices: ``(n,)`` int64, the numbers of the requested samples among all that the data
            source requests (``0 .. N-1``); ``len(request)`` is the batch's count ``n``.
    """

    indices: Tensor

    def __len__(self) -> int:
        return int(self.indices.numel())


def is_sample_request(batch: Any) -> bool:
    """Whether ``batch`` asks for generated samples (a :class:`SampleRequest`) rather than holding data."""
    return isinstance(batch, SampleRequest)


class _Counts(Dataset):
    """Items ``0 .. n-1``: the numbers of the requested samples."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return int(index)


def _collate_requests(items: list[int]) -> SampleRequest:
    return SampleRequest(torch.tensor(items, dtype=torch.int64))


class SampleRequests(L.LightningDataModule):
    """A data source of generated samples for ``lebm predict``: ``n`` samples in batches of at most
    ``batch_size``, each batch a :class:`SampleRequest`.

    Under DDP the requests are split over the ranks (Lightning's distributed sampler for
    prediction, without repeats), each rank drawing its samples from its own evaluation stream.
    The data module only feeds prediction: fit, validate and test need data.

    Args:
        n: how many samples to generate in all.
        batch_size: the most samples one batch asks for.
    """

    def __init__(self, n: int = 64, batch_size: int = 64) -> None:
        super().__init__()
        for name, value in (("n", n), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SampleRequests {name} must be a whole number >= 1, got {value!r}")
        self.n, self.batch_size = n, batch_size

    def predict_dataloader(self) -> DataLoader:
        """Batches of sample requests, in order (the last one may ask for fewer); draws nothing from
        torch's global RNG."""
        return evaluation_loader(_Counts(self.n), self.batch_size, collate_fn=_collate_requests)

    def _data_needed(self) -> DataLoader:
        raise DataError(
            "lebm.data.SampleRequests only asks a model for generated samples (lebm predict); fit, validate and "
            "test need a data module with data, e.g. the recipe's"
        )

    train_dataloader = val_dataloader = test_dataloader = _data_needed


def check_predict_samples(value: Any) -> int:
    """``predict_samples`` as a count: a whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"predict_samples must be a whole number >= 0 (0: predict on the test split), got {value!r}")
    return value


class PredictionSource:
    """Mixed into lebm's data modules (before ``LightningDataModule`` among the bases): what
    ``predict_dataloader`` reads, set by the data module's ``predict_samples`` argument.

    - ``predict_samples = 0`` (default): the test split's batches (``test_dataloader``: the same
      batches, in the same fixed order, as ``lebm test``), or the validation batches for a data
      module without a test split;
    - ``predict_samples = N > 0``: requests for ``N`` generated samples (:class:`SampleRequests`),
      in batches of the data module's ``eval_batch_size`` (else ``batch_size``). From the command
      line: ``lebm predict -c RECIPE --ckpt_path ... --data.init_args.predict_samples 64``.
    """

    #: 0: predict on the test split; N > 0: predict N generated samples.
    predict_samples: int = 0

    def predict_dataloader(self) -> Any:
        """The batches ``lebm predict`` reads (see the class docstring)."""
        if self.predict_samples:
            batch_size = getattr(self, "eval_batch_size", None) or getattr(self, "batch_size", None) or 64
            return SampleRequests(self.predict_samples, batch_size=int(batch_size)).predict_dataloader()
        if is_overridden("test_dataloader", self, L.LightningDataModule):
            return self.test_dataloader()  # type: ignore[attr-defined]
        return self.val_dataloader()  # type: ignore[attr-defined]
