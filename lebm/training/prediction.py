"""Predictions: what ``predict_step`` and ``forward`` return, for every method (``docs/predict.md``).

:class:`Predictions` is mixed into :class:`lebm.models.Method`, so every method, the text model
included, predicts the same way:

- a **data batch** ``x`` or ``(x, y, ...)`` ->
  ``{"inputs", "latents", "reconstructions", "scores"}`` (plus ``"labels"`` when the batch has
  them);
- a **sample request** (:class:`lebm.data.SampleRequest`, the batches of
  :class:`lebm.data.SampleRequests`) -> ``{"samples", "indices"}``.

For a decoder that presents its observations as text (the text model) each tensor of
observations also comes as strings: ``"input_text"``, ``"reconstruction_text"``,
``"sample_text"``. Under a Trainer the chains draw from the method's evaluation stream, reseeded
at the start of every predict epoch from the run's seed, the rank and the epoch (as validation and
test are), so the same checkpoint and seed predict the same values. Prediction leaves inference
mode for its own work (chains need gradients), so ``Trainer(inference_mode=True)``, Lightning's
default, works too.

Exporting: a method's predictions run MCMC chains, which neither TorchScript nor ``torch.export``
capture: ``to_torchscript()``/``to_onnx()`` fail with one line naming what to export instead (the
generator ``model.decoder.net``), and ``torch.compile(model)`` warns once and runs ``forward``
eagerly (compile the nets instead: ``lebm.speed.FastNets``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import torch
from torch import Tensor

from lebm.data.batches import batch_observations
from lebm.data.errors import DataError
from lebm.data.prediction import SampleRequest, is_sample_request
from lebm.training.hooks import MethodHooks
from lebm.training.inputs import api_call

__all__ = [
    "DATA_KEYS",
    "SAMPLE_KEYS",
    "TEXT_KEYS",
    "Predictions",
    "batch_labels",
    "export_message",
    "predict_batch",
    "predict_data",
    "with_text",
]

#: The keys of a data batch's prediction, each a tensor with the batch's examples along dim 0:
#: ``inputs`` ``(B, *x_shape)`` (as the model read them: token ids ``(B, T)`` for text), ``latents``
#: ``(B, latent_dim)`` (posterior latents, ``infer``), ``reconstructions`` ``(B, *x_shape)``
#: (``decode(latents)``), ``scores`` ``(B,)`` (anomaly scores, ``score``: higher is more anomalous),
#: ``labels`` ``(B,)`` (the batch's second item, when it has one).
DATA_KEYS = ("inputs", "latents", "reconstructions", "scores", "labels")
#: The keys of a sample request's prediction: ``samples`` ``(n, *x_shape)`` (``generate``, raw: token
#: ids for text) and ``indices`` ``(n,)`` (the requested samples' numbers).
SAMPLE_KEYS = ("samples", "indices")
#: ``{tensor key: text key}``: the strings a text decoder presents a tensor of observations as.
TEXT_KEYS = {"inputs": "input_text", "reconstructions": "reconstruction_text", "samples": "sample_text"}


def export_message(model: Any, what: str) -> str:
    """The one line that says why ``what`` (``"to_torchscript()"``, ...) cannot export ``model`` whole,
    and what to export or compile instead."""
    name = type(model).__name__
    generator = (
        "the generator, latents (B, latent_dim) -> observations: torch.export.export(model.decoder.net, (z,)) "
        "(docs/predict.md); "
        if hasattr(model, "decoder")
        else "its nets one by one; "
    )
    return (
        f"{name}.{what} cannot export the whole method: its predictions run MCMC chains (a gradient to the "
        f"latents at every step, random streams), which TorchScript and torch.export do not capture. Export "
        f"{generator}to speed up the chains, compile the nets with lebm.speed.FastNets(compile=True) or "
        "lebm.speed.apply_fast_paths(model, compile=True) (docs/performance.md)"
    )


def batch_labels(batch: Any, size: int) -> Tensor | None:
    """The labels ``(B,)`` of a batch ``(x, y, ...)``: its second item when that is a tensor of one
    value per example; None otherwise."""
    if isinstance(batch, (tuple, list)) and len(batch) > 1:
        labels = batch[1]
        if isinstance(labels, Tensor) and labels.dim() == 1 and len(labels) == size:
            return labels
    return None


def with_text(decoder: Any, prediction: dict[str, Any]) -> dict[str, Any]:
    """``prediction`` with, for each tensor of observations (:data:`TEXT_KEYS`) that the decoder
    presents as something else than a tensor (strings, for text), that form under its text key."""
    present = getattr(decoder, "present", None)
    if not callable(present):
        return prediction
    for key, text_key in TEXT_KEYS.items():
        value = prediction.get(key)
        if isinstance(value, Tensor):
            presented = present(value)
            if not isinstance(presented, Tensor):
                prediction[text_key] = presented
    return prediction


def _normal_tensors(batch: Any) -> Any:
    """``batch`` with its inference tensors (made by an inference-mode loop) cloned into normal ones."""
    if isinstance(batch, Tensor):
        return batch.clone() if batch.is_inference() else batch
    if isinstance(batch, SampleRequest):
        return SampleRequest(_normal_tensors(batch.indices))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_normal_tensors(item) for item in batch)
    if isinstance(batch, Mapping):
        return {key: _normal_tensors(value) for key, value in batch.items()}
    return batch


def _observations_of(batch: Any) -> Any:
    """The observations of a batch: its first item for a batch ``(x, y, ...)``; the batch itself
    when it is a list of sentences (its first item a string: no ``(x, y)`` batch starts with one)
    or empty (which the input check refuses in one line)."""
    if isinstance(batch, (tuple, list)) and (not batch or isinstance(batch[0], str)):
        return batch
    return batch_observations(batch)


def predict_batch(
    model: Any, batch: Any, *, generator: torch.Generator | None = None, batch_idx: int | None = None
) -> dict[str, Any]:
    """The prediction of one batch (observations ``x`` ``(B, *x_shape)``, a batch ``(x, y, ...)`` or a
    :class:`~lebm.data.SampleRequest` of ``n``): :data:`DATA_KEYS` tensors ``(B, ...)`` or
    :data:`SAMPLE_KEYS` tensors ``(n, ...)``, computed outside inference mode; ``batch_idx`` (in a predict loop)
    names the batch when its data cannot be read, as a :class:`~lebm.data.errors.DataError` (which
    the ``lebm`` command prints without a traceback)."""
    with torch.inference_mode(False):
        batch = _normal_tensors(batch)
        if is_sample_request(batch):
            prediction = model.predict_samples(len(batch), generator=generator)
            prediction["indices"] = batch.indices
            return prediction
        prediction = predict_data(model, _observations_of(batch), generator=generator, batch_idx=batch_idx)
        labels = batch_labels(batch, len(prediction["inputs"]))
        if labels is not None:
            prediction["labels"] = labels
        return prediction


def predict_data(
    model: Any, data: Any, *, generator: torch.Generator | None = None, batch_idx: int | None = None
) -> dict[str, Any]:
    """The prediction of observations ``data`` (a tensor ``(B, *x_shape)``, or what the decoder's
    ``prepare`` takes: sentences) as :data:`DATA_KEYS` tensors ``(B, ...)``, outside inference mode:
    the model's ``prediction_input`` check (the user API's input contract, :mod:`lebm.training.inputs`),
    then its ``predict_observations``, as one call of the user API
    (:func:`~lebm.training.inputs.api_call`: the ``infer``/``score`` it makes do not check
    again); see :func:`predict_batch` for ``batch_idx``."""
    with torch.inference_mode(False), api_call(model):
        try:
            x = model.prediction_input(_normal_tensors(data))
        except (ValueError, TypeError) as error:
            if batch_idx is None:
                raise
            raise DataError(f"lebm predict: batch {batch_idx} cannot be read: {error}") from None
        return model.predict_observations(x, generator=generator)


@contextlib.contextmanager
def _global_rng_from(generator: torch.Generator | None) -> Iterator[None]:
    """Inside the block torch's global RNG is seeded from ``generator`` (restored after); with None,
    nothing changes. For a method whose user API does not take a generator."""
    if generator is None:
        yield
        return
    devices = [torch.cuda.current_device()] if generator.device.type == "cuda" else []
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.compiler.disable
def _eager_forward(model: Any, x: Any) -> dict[str, Any]:
    """``forward`` run eagerly when a compiled model calls it, with one warning per model."""
    if not getattr(model, "_warned_compile", False):
        model._warned_compile = True
        warnings.warn(
            f"torch.compile runs {type(model).__name__}'s forward eagerly: its predictions run MCMC chains (a "
            "gradient to the latents at every step, random streams), which do not compile as one graph. Compile "
            "the nets instead: lebm.speed.FastNets(compile=True) or lebm.speed.apply_fast_paths(model, compile=True) "
            "(every net the chains evaluate), or torch.compile(model.decoder.net) for the generator alone "
            "(docs/performance.md)",
            UserWarning,
            stacklevel=3,
        )
    return predict_data(model, x)


class Predictions:
    """Prediction for every method (mixed into :class:`lebm.models.Method`); the hooks a method
    overrides are :meth:`prediction_input`, :meth:`predict_observations` and :meth:`predict_samples`
    (:class:`~lebm.models.latent_generator.LatentGeneratorModel` does, for all lebm methods).

    The defaults here serve any method with the user API: ``infer``, ``reconstruct`` and ``score``
    (those it implements) for a data batch, ``generate`` for a sample request, with torch's global
    RNG seeded from the evaluation stream."""

    def on_predict_epoch_start(self) -> None:
        """Reseed the evaluation stream (as every validation and test epoch does): predictions are
        reproducible from the run's seed, the rank and the step of the weights (:attr:`weights_step`)."""
        self.random_streams.start_evaluation(self.device, self.global_rank, self.weights_step)  # type: ignore[attr-defined]

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """The prediction of one batch, chains drawing from the evaluation stream.

        A data batch ``x`` or ``(x, y, ...)`` -> ``{"inputs": (B, *x_shape), "latents": (B, latent_dim),
        "reconstructions": (B, *x_shape), "scores": (B,)}``, plus ``"labels": (B,)`` when the batch
        has them; a :class:`~lebm.data.SampleRequest` of ``n`` -> ``{"samples": (n, *x_shape),
        "indices": (n,)}``. A text model adds the strings: ``"input_text"``, ``"reconstruction_text"``,
        ``"sample_text"`` (lists of ``str``). See :data:`DATA_KEYS`, :data:`SAMPLE_KEYS`."""
        return predict_batch(self, batch, generator=self.eval_generator, batch_idx=batch_idx)  # type: ignore[attr-defined]

    def forward(self, x: Any) -> dict[str, Any]:
        """The prediction of observations ``x`` ``(B, *x_shape)`` (or what the decoder's ``prepare``
        takes: sentences for text): ``predict_step``'s dict for a data batch, chains drawing from
        torch's global RNG as the user API does. Under ``torch.compile`` it runs eagerly (one warning)."""
        if torch.compiler.is_compiling():
            return _eager_forward(self, x)
        return predict_data(self, x)

    # ------------------------------------------------------------------------------- hooks
    def prediction_input(self, data: Any) -> Any:
        """A batch's observations as the model reads them, checked like the user API's input
        (raise ``ValueError``/``TypeError`` naming the fix). Default: as they are."""
        return data

    def predict_observations(self, x: Any, *, generator: torch.Generator | None = None) -> dict[str, Any]:
        """``{"inputs": (B, *x_shape), "latents": (B, latent_dim), "reconstructions": (B, *x_shape),
        "scores": (B,)}`` of observations ``x`` ``(B, *x_shape)``, each of the
        last three when the method implements ``infer``, ``reconstruct``, ``score``; torch's global
        RNG seeded from ``generator``."""
        prediction: dict[str, Any] = {"inputs": x}
        with _global_rng_from(generator):
            for key, name in (("latents", "infer"), ("reconstructions", "reconstruct"), ("scores", "score")):
                if getattr(type(self), name) is not getattr(MethodHooks, name):
                    prediction[key] = getattr(self, name)(x)
        return prediction

    def predict_samples(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Any]:
        """``{"samples": generate(n)}``, torch's global RNG seeded from ``generator``."""
        with _global_rng_from(generator):
            return {"samples": self.generate(n)}  # type: ignore[attr-defined]

    # ----------------------------------------------------------------------------- export
    def to_torchscript(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused, with what to export instead (:func:`export_message`)."""
        raise NotImplementedError(export_message(self, "to_torchscript()"))

    def to_onnx(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused, with what to export instead (:func:`export_message`)."""
        raise NotImplementedError(export_message(self, "to_onnx()"))
