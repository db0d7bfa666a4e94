"""``MarginalLikelihood``: importance-sampled NLL ``-log p(x)`` of the evaluation set (the text
papers' NLL column), per example and per word, with its standard error.

In a recipe::

    trainer:
      callbacks+:
        - class_path: lebm.callbacks.MarginalLikelihood
          init_args: {n_samples: 500, proposal: posterior, stages: [test]}

Logs, for each evaluated stage: ``{stage}/nll_is`` (mean ``-log p(x)`` per example, nats),
``{stage}/nll_is_stderr`` (its Monte-Carlo standard error), and when the method returns the
per-example ``words`` (a text decoder does: predicted tokens, eos included)
``{stage}/nll_is_per_word`` and ``{stage}/ppl_is = exp(sum nll / sum words)``; also
``{stage}/log_normalizer`` (the prior's ``log Z``). Sums are gathered over ranks, so under DDP the
logged numbers are the ones one process computes over the same examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torchmetrics import SumMetric

from lebm.callbacks.metrics import EvaluationMetric
from lebm.callbacks.schedule import STAGES, evaluation_stage
from lebm.data.batches import batch_observations
from lebm.metrics.likelihood import PROPOSALS, Estimate, importance_sampled_log_likelihood, prior_log_normalizer
from lebm.randomness import derive_seed, run_seed

#: Purpose word of the normaliser's draws in :func:`lebm.randomness.derive_seed` (ASCII "logZ").
NORMALIZER_PURPOSE = 0x6C6F675A


class MarginalLikelihood(EvaluationMetric):
    """Importance-sampled ``-log p(x)`` on the validation and/or test set (see
    :mod:`lebm.metrics.likelihood` for the estimator and the proposals).

    Args:
        n_samples: importance samples per example.
        proposal: ``"posterior"`` (a Gaussian fitted to posterior chain samples), ``"encoder"``
            or ``"prior"``.
        posterior_samples: posterior runs per example that the ``"posterior"`` proposal is fitted to.
        scale: widening of the proposal's standard deviation.
        prior_mixture: share of the prior's Gaussian reference in the proposal (defensive).
        normalizer_samples: Gaussian draws for the prior's ``log Z`` (the same on every rank).
        stages: where to estimate: ``["test"]`` (default; it is slow), ``["val"]`` or both.
        every_n_epochs: in validation, estimate every this many epochs (and never in sanity checks).
        every_n_batches: estimate on every this-many-th evaluation batch of each rank (1: all). The
            text datamodules sort their evaluation sets by length, so a stride keeps a subset that
            spans every sentence length (the first batches alone would be the shortest sentences).
        chunk: importance samples evaluated together per example.
    """

    def __init__(
        self,
        n_samples: int = 500,
        proposal: str = "posterior",
        posterior_samples: int = 10,
        scale: float = 1.5,
        prior_mixture: float = 0.1,
        normalizer_samples: int = 100_000,
        stages: Sequence[str] = ("test",),
        every_n_epochs: int = 1,
        every_n_batches: int = 1,
        chunk: int = 50,
    ) -> None:
        if proposal not in PROPOSALS:
            raise ValueError(f"MarginalLikelihood proposal must be one of {PROPOSALS}, got {proposal!r}")
        unknown = [stage for stage in stages if stage not in STAGES]
        if unknown or not stages:
            raise ValueError(f"MarginalLikelihood stages must be a non-empty subset of {STAGES}, got {list(stages)}")
        if n_samples < 2 or every_n_epochs < 1 or normalizer_samples < 2:
            raise ValueError("MarginalLikelihood needs n_samples >= 2, normalizer_samples >= 2, every_n_epochs >= 1")
        if every_n_batches < 1:
            raise ValueError(f"MarginalLikelihood every_n_batches must be >= 1, got {every_n_batches}")
        self.estimator_options = dict(
            n_samples=n_samples,
            proposal=proposal,
            posterior_samples=posterior_samples,
            scale=scale,
            prior_mixture=prior_mixture,
            chunk=chunk,
        )
        self.normalizer_samples = normalizer_samples
        self.stages, self.every_n_epochs, self.every_n_batches = tuple(stages), every_n_epochs, every_n_batches
        self._sums: dict[str, SumMetric] | None = None
        self._normalizer: Estimate | None = None
        self._batches = 0

    @property
    def logged_metric_names(self) -> tuple[str, ...]:
        """What it logs (what a callback can ``monitor``): the estimate, its standard error, ``log Z``
        and, for text, per word and as a perplexity, as ``<stage>/...``."""
        names = ("nll_is", "nll_is_stderr", "log_normalizer", "nll_is_per_word", "ppl_is")
        return tuple(f"{stage}/{name}" for stage in ("val", "test") for name in names)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.check_method(pl_module)

    def check_method(self, pl_module: L.LightningModule) -> None:
        """``ValueError`` (one line) unless ``pl_module``'s decoder has a normalised likelihood (and an
        encoder for ``proposal='encoder'``); the ``lebm`` CLI calls it when the run is built,
        ``Method.check_trainer`` when a run starts."""
        model = pl_module
        if not getattr(getattr(model, "decoder", None), "normalised_likelihood", False):
            raise ValueError(
                "MarginalLikelihood needs a decoder whose nll(x, z) is a normalised -log p(x|z) "
                f"(normalised_likelihood = True, e.g. lebm.nets.CategoricalDecoder); {type(model).__name__}'s "
                f"decoder is {type(getattr(model, 'decoder', None)).__name__}. Remove the callback."
            )
        if self.estimator_options["proposal"] == "encoder" and getattr(model, "encoder", None) is None:
            raise ValueError(
                "MarginalLikelihood proposal='encoder' needs a method with an inference network; use "
                "proposal: posterior"
            )

    def _active(self, trainer: L.Trainer) -> bool:
        stage = evaluation_stage(trainer)
        if trainer.sanity_checking or stage not in self.stages:
            return False
        return stage == "test" or (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sums = None
        if not self._active(trainer):
            return
        self._batches = 0
        names = ("nll", "nll_variance", "examples", "words")
        self._sums = {
            name: SumMetric(sync_on_compute=True).set_dtype(torch.float64).to(pl_module.device) for name in names
        }
        generator = torch.Generator(device=pl_module.device)
        generator.manual_seed(derive_seed(run_seed(), NORMALIZER_PURPOSE, trainer.current_epoch))
        self._normalizer = prior_log_normalizer(pl_module.prior, self.normalizer_samples, generator=generator)

    def _update(self, pl_module: L.LightningModule, outputs: Any, batch: Any) -> None:
        if self._sums is None:
            return
        self._batches += 1
        if (self._batches - 1) % self.every_n_batches:
            return
        x = batch_observations(batch)
        if x.is_inference():
            with torch.inference_mode(False):
                x = x.clone()
        with torch.inference_mode(False), torch.enable_grad():
            estimate = importance_sampled_log_likelihood(
                pl_module, x, self._normalizer, generator=pl_module.eval_generator, **self.estimator_options
            )
        sampled_variance = estimate.std_error.square() - self._normalizer.std_error.square()
        self._sums["nll"].update(-estimate.value.sum())
        self._sums["nll_variance"].update(sampled_variance.sum())
        self._sums["examples"].update(torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device))
        words = outputs.get("words") if isinstance(outputs, dict) else None
        if words is not None:
            self._sums["words"].update(words.double().sum())

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._sums is None:
            return
        totals = {name: float(metric.compute()) for name, metric in self._sums.items()}
        self._sums = None
        stage = evaluation_stage(trainer)
        count = max(totals["examples"], 1.0)
        # per-example errors are independent; log Z's error is shared by every example
        stderr = math.sqrt(totals["nll_variance"] / count**2 + float(self._normalizer.std_error) ** 2)
        logs = {
            f"{stage}/nll_is": totals["nll"] / count,
            f"{stage}/nll_is_stderr": stderr,
            f"{stage}/log_normalizer": float(self._normalizer.value),
        }
        if totals["words"] > 0:
            logs[f"{stage}/nll_is_per_word"] = totals["nll"] / totals["words"]
            logs[f"{stage}/ppl_is"] = math.exp(totals["nll"] / totals["words"])
        for name, value in logs.items():
            pl_module.log(name, value, sync_dist=False)
