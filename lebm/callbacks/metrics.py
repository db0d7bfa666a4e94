"""Evaluation metrics as callbacks: reconstruction MSE and anomaly-detection AUPRC/AUROC.

They work for any method. Each reads a per-example value the method's validation/test step
returns (``mse``, ``score``); a method lists those in ``evaluation_outputs``, and a callback that
needs a value the method does not return stops the run before it starts, naming both. Values
accumulate in torchmetrics objects whose ``compute()`` gathers every rank's examples, so
under DDP one number is logged and it equals the single-process number for the same examples
(Lightning's distributed sampler pads an evaluation set whose size is not a multiple of the
number of processes by repeating at most ``world_size - 1`` examples).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torchmetrics import CatMetric, MeanMetric

from lebm.callbacks.gathered import log_gathered
from lebm.callbacks.schedule import evaluation_stage
from lebm.metrics.no_model import (
    NO_MODEL_SCORES,
    UNTRAINED_LEVEL,
    mean_image,
    no_model_baseline,
    no_model_scores,
    output_level,
)
from lebm.metrics.ranking import one_class, ranking_metrics, trapezoid_auprc


def _per_example(outputs: Any, key: str, callback: str) -> Tensor:
    value = outputs.get(key) if isinstance(outputs, dict) else None
    if value is None:
        raise RuntimeError(f"{callback}: the evaluation step returned no per-example {key!r} (got {outputs!r:.200})")
    return value


def require_evaluation_output(callback: L.Callback, pl_module: L.LightningModule, key: str) -> None:
    """Fail before the run starts when ``pl_module``'s evaluation step does not return ``key``."""
    declared = tuple(getattr(pl_module, "evaluation_outputs", ()))
    if key not in declared:
        name, method = type(callback).__name__, type(pl_module).__name__
        raise ValueError(
            f"{name} reads the per-example {key!r} that the method's validation/test step returns, but "
            f"{method} returns {declared or 'nothing'} (its evaluation_outputs). Remove the {name} callback, or "
            f"use a method/decoder that reports {key!r}."
        )


def class_statistics(values: np.ndarray, anomalous: np.ndarray) -> dict[str, float]:
    """Mean and standard deviation of per-example ``values`` ``(N,)`` on the normal and on the
    ``anomalous`` ``(N,)`` (bool) examples: ``normal_mean``, ``normal_std``, ``anomaly_mean``,
    ``anomaly_std`` (NaN for a class with no example)."""
    statistics = {}
    for label, members in (("normal", values[~anomalous]), ("anomaly", values[anomalous])):
        statistics[f"{label}_mean"] = float(members.mean()) if members.size else float("nan")
        statistics[f"{label}_std"] = float(members.std()) if members.size else float("nan")
    return statistics


#: Updates before which an anomaly reading is labelled untrained (``AnomalyDetection(untrained_below=)``):
#: runs of the MNIST anomaly recipes read their generator's output level for about 16 updates and
#: leave it by about 24 (``docs/results_notes.md``, "Selections"); 100 leaves a margin.
UNTRAINED_BELOW = 100


def closing_line(stage: str, reading: dict[str, Any], untrained_below: int) -> str:
    """One line on an anomaly reading: its AUPRC with AUROC, chance and the no-model baseline, and
    whether it was taken in the untrained regime or does not beat the baseline."""
    score, baseline = reading["score"], reading["no_model"]
    line = (
        f"anomaly {stage}/auprc {score['auprc']:.3f} (AUROC {score['auroc']:.3f}; chance {reading['chance']:.3f}; "
        f"no-model baseline {baseline['auprc']:.3f}, {baseline['best']}) after {reading['update']} updates"
    )
    if reading["untrained"]:
        return (
            f"{line}: untrained regime (under {untrained_below} updates): the reading measures the untrained "
            "generator's output level, not a model"
        )
    if score["auprc"] <= baseline["auprc"]:
        return f"{line}: no better than the no-model baseline"
    return line


#: A test split whose AUPRC reading is this uncertain (twice its standard error) is too small to
#: compare with a paper's figure (the papers' readings differ from each other by about this much).
TOO_UNCERTAIN = 0.05


def paper_comparison(auprc: float, chance: float, n_examples: int, paper: float, digits: Any, label: str) -> str:
    """The paper's figure beside a test AUPRC: the figure, the held-out digits it is for, and how
    uncertain the reading is by the size of the test split (the standard error of a precision over
    the held-out examples, ``sqrt(a (1 - a) / n_positive)``); said too small to compare when twice
    that exceeds :data:`TOO_UNCERTAIN`."""
    positives = max(1, round(chance * n_examples))
    error = (max(auprc * (1 - auprc), 0.0) / positives) ** 0.5
    line = (
        f"the paper's figure for held-out {digits}: {paper:.3f} ({label}), {auprc - paper:+.3f} from it; "
        f"this reading's standard error is about {error:.3f} ({positives} held-out examples of {n_examples})"
    )
    if 2 * error > TOO_UNCERTAIN:
        return f"{line}: the test split is too small to compare with it (give a larger one, e.g. the full pool)"
    return line


def test_selection(ckpt_path: str | None) -> str:
    """How a ``lebm test`` figure was selected, against how the papers selected theirs."""
    where = f"the checkpoint {ckpt_path}" if ckpt_path else "the model's current weights"
    return (
        f"compare test/auprc with the paper's figure: read once on the test split at {where}; LEBM's papers average "
        "the test readings of the last 10 epochs, DAMC's code keeps the best of its test readings "
        "(docs/results_notes.md, Selections)"
    )


class EvaluationMetric(L.Callback):
    """Wires validation and test hooks to three steps: ``_start`` an evaluation epoch,
    ``_update`` with each batch and the step's per-example ``outputs``, ``_finish`` by logging.
    ``requires`` names the per-example output it reads (checked at set-up)."""

    requires: str = ""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.check_method(pl_module)

    def check_method(self, pl_module: L.LightningModule) -> None:
        """``ValueError`` (one line) unless the method's evaluation step returns what the metric reads
        (the ``lebm`` CLI calls it when the run is built, ``Method.check_trainer`` when a run starts)."""
        if self.requires:
            require_evaluation_output(self, pl_module, self.requires)

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError

    def _update(self, pl_module: L.LightningModule, outputs: Any, batch: Any) -> None:
        raise NotImplementedError

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, pl_module)

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(pl_module, outputs, batch)

    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, pl_module)

    on_test_epoch_end = on_validation_epoch_end


class ReconstructionMSE(EvaluationMetric):
    """Per-pixel MSE ``mean((x - x_hat)^2)`` of reconstructions of the validation/test images,
    the papers' reconstruction metric (images in [-1, 1]); logged as ``{val,test}/<output>``.

    Args:
        output: the per-example value of the evaluation step to average: ``mse`` (every method's
            reconstruction), or another the method declares, e.g. DualMCMC's ``mse_inf`` (the
            inference network's mean without posterior refinement).
    """

    def __init__(self, output: str = "mse") -> None:
        if not isinstance(output, str) or not output:
            raise ValueError(f"ReconstructionMSE output must be the name of a per-example value, got {output!r}")
        self.requires = output
        self._mean: MeanMetric | None = None

    @property
    def logged_metric_names(self) -> tuple[str, ...]:
        """What it logs (what a callback can ``monitor``): ``val/<output>``, ``test/<output>``."""
        return (f"val/{self.requires}", f"test/{self.requires}")

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mean = MeanMetric(sync_on_compute=True).to(pl_module.device)

    def _update(self, pl_module: L.LightningModule, outputs: Any, batch: Any) -> None:
        self._mean.update(_per_example(outputs, self.requires, "ReconstructionMSE").detach())

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._mean is None:
            return
        log_gathered(pl_module, f"{evaluation_stage(trainer)}/{self.requires}", self._mean.compute())
        self._mean = None


class AnomalyDetection(EvaluationMetric):
    """AUPRC and AUROC of ``score(x)`` (higher = more anomalous) with the held-out classes as positives.

    Logs ``{stage}/auprc`` and ``{stage}/auroc`` per evaluation, and the mean and standard
    deviation of the AUPRC over the last ``last_k`` validation evaluations
    (``val/auprc_last_k_mean``, ``val/auprc_last_k_std``): the papers average over the last 10 epochs.
    The best validation AUPRC so far (``val/auprc_best``, ``val/auprc_trapezoid_best``) is DAMC's
    official reading (``train_anomaly_det.py`` keeps the checkpoint of the best AUPRC); to keep that
    checkpoint, monitor ``val/auprc_trapezoid`` with ``ModelCheckpoint(mode="max", save_top_k=1)``.

    **Two readings of AUPRC.** ``auprc`` is the average precision (scikit-learn's step-wise area);
    ``auprc_trapezoid`` is the trapezoid rule over the same curve, ``auc(recall, precision)``, as the
    protocol code the papers cite computes it (:func:`lebm.metrics.trapezoid_auprc`). Both are
    logged at every evaluation, with their last-``k`` means and spreads, and kept in
    ``history``/``trapezoid_history`` (saved in checkpoints, read by the experiment runners).

    **The score's terms.** A latent-variable method's score ``-log p(x, z)`` is the sum of a
    reconstruction term ``-log p(x|z)`` and a prior term ``U(z)``; its evaluation step returns both
    (``score_reconstruction_term``, ``score_prior_term``). Each is then ranked on its own too:
    ``{stage}/auprc_reconstruction_term``, ``{stage}/auprc_prior_term`` (and ``auroc_...``), with
    their own last-``k`` means, so a record shows which term carries the detection. With a learned
    prior the tilt ``E(z)`` alone (``score_tilt_term``, without the Gaussian reference) is ranked as
    ``tilt_term`` (the joint hierarchical EBM's "EBM prior alone"), and with a decoder that returns
    its squared error the score is also ranked under two other weights (:attr:`FORMS`):
    ``score_sse`` = ``||x - g(z)||^2 + U(z)`` (DAMC's official score) and ``score_sigma_1`` =
    ``||x - g(z)||^2 / 2 + U(z)`` (``-log p(x, z)`` at sigma 1), at the same latents.

    **Reading against chance.** A random score has an AUPRC equal to the split's share of
    anomalies (0.388 for MNIST held-out 1), and a score that ranks the anomalies as *more normal*
    than the normal examples (AUROC below 0.5) reads higher as it gets noisier. So every evaluation
    also logs ``{stage}/auprc_chance`` (that share), ``{stage}/auprc_above_chance`` (AUPRC minus
    it), ``{stage}/n_examples``, and, for the score and each term, its mean and standard deviation
    on the normal and on the anomalous examples (``{stage}/<name>_normal_mean``, ``..._normal_std``,
    ``..._anomaly_mean``, ``..._anomaly_std`` with ``<name>`` ``score``, ``reconstruction_term``,
    ``prior_term``; in the units the score adds them: nats for ``-log p``). An AUPRC below chance
    is said in one line, once a run. ``readings`` keeps every validation evaluation's figures with
    its update count (saved in checkpoints): ``val/auprc_best`` is then "best of
    ``len(readings)`` readings", selected on the split the loop validates on.

    **Reading against a score with no model.** Every evaluation also ranks three no-model scores
    of the same images (:mod:`lebm.metrics.no_model`: the squared distance to the untrained
    generator's output level, its mean pixel measured when the fit starts and kept in checkpoints,
    0 when never measured; to the background; to the mean training image) and logs
    each (``{stage}/auprc_no_model_<name>``, ``auroc_...``), the highest as the baseline
    (``{stage}/auprc_no_model``, ``{stage}/auroc_no_model``, ``{stage}/auprc_above_no_model``), and
    its name in ``readings``. A reading taken before ``untrained_below`` updates is in the
    *untrained regime*: an untrained generator draws a near-constant image, so its score is a
    no-model score (on MNIST held-out 1 it reads AUPRC near 0.98 at chance 0.39). A later reading
    that does not beat the baseline is said in one line, once a run. At the end of ``fit`` and of
    ``lebm test`` one line gives the last reading with its AUROC, chance, baseline and regime; after
    ``test`` it also names the checkpoint read and how the papers selected the figures they report
    (:meth:`test_closing_line`, which the CLI prints after Lightning's table).

    Args:
        anomaly_classes: labels counted as anomalies; default: the datamodule's ``anomaly_classes``.
        last_k: how many recent validation evaluations to average.
        untrained_below: readings taken before this many updates are labelled untrained
            (``docs/results.md``, "The untrained regime", measures where the readings leave it).
    """

    requires = "score"
    #: Term name in the logs -> the per-example output of the evaluation step that holds it.
    TERMS = {
        "reconstruction_term": "score_reconstruction_term",
        "prior_term": "score_prior_term",
        "tilt_term": "score_tilt_term",
    }
    #: The score under other weights, from the squared error and the prior term (when the method
    #: returns both): ``score_sse`` = ``||x - g(z)||^2 + U(z)`` (DAMC's official weights) and
    #: ``score_sigma_1`` = ``||x - g(z)||^2 / 2 + U(z)`` (``-log p(x, z)`` with the observation
    #: noise at 1), both at the evaluation's latents.
    FORMS = {"score_sse": 1.0, "score_sigma_1": 0.5}
    #: The no-model scores' columns: ``no_model_<name>`` for each of :data:`NO_MODEL_SCORES`.
    NO_MODEL = tuple(f"no_model_{name}" for name in NO_MODEL_SCORES)

    def __init__(
        self, anomaly_classes: list[int] | None = None, last_k: int = 10, untrained_below: int = UNTRAINED_BELOW
    ) -> None:
        if isinstance(last_k, bool) or not isinstance(last_k, int) or last_k < 1:
            raise ValueError(f"AnomalyDetection last_k must be an integer >= 1, got {last_k!r}")
        if isinstance(untrained_below, bool) or not isinstance(untrained_below, int) or untrained_below < 0:
            raise ValueError(
                f"AnomalyDetection untrained_below must be an integer >= 0 (updates before which a reading is "
                f"labelled untrained; 0 labels none), got {untrained_below!r}"
            )
        self.anomaly_classes = anomaly_classes
        self.last_k = last_k
        self.untrained_below = untrained_below
        self._mean_image_of: tuple[Any, Tensor | None] | None = None  # (training dataset, its mean image)
        self.untrained_level: float | None = None  # the generator's mean pixel at the fit's start
        self._last_reading: dict[str, dict[str, Any]] = {}
        self.history: list[float] = []
        self.trapezoid_history: list[float] = []
        self.term_history: dict[str, list[float]] = {}
        self.readings: list[dict[str, Any]] = []
        self._said_below_chance = False
        self._collected: dict[str, CatMetric] | None = None

    @property
    def logged_metric_names(self) -> tuple[str, ...]:
        """What it logs (what a callback can ``monitor``): AUPRC and AUROC of the score and of its
        terms, their recent means, the chance figures and each term's class statistics."""
        per_stage = (
            "auprc*",
            "auroc*",
            "n_examples",
            "updates",
            "untrained",
            "*_normal_mean",
            "*_normal_std",
            "*_anomaly_mean",
            "*_anomaly_std",
        )
        return tuple(f"{stage}/{name}" for stage in ("val", "test") for name in per_stage)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": list(self.history),
            "trapezoid_history": list(self.trapezoid_history),
            "term_history": {k: list(v) for k, v in self.term_history.items()},
            "readings": [dict(reading) for reading in self.readings],
            "untrained_level": self.untrained_level,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.trapezoid_history = list(state_dict.get("trapezoid_history", []))
        self.term_history = {k: list(v) for k, v in state_dict.get("term_history", {}).items()}
        self.readings = [dict(reading) for reading in state_dict.get("readings", [])]
        self.untrained_level = state_dict.get("untrained_level")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Measure the untrained generator's output level (its mean pixel) before the first update;
        a resumed fit keeps the level its checkpoint holds."""
        if trainer.global_step == 0 and self.untrained_level is None:
            self.untrained_level = output_level(pl_module)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._said_below_chance = False  # once a run: each fit, validate or test says it again
        self._said_below_no_model = False
        self._last_reading = {}
        self._checkpoint_updates: int | None = None
        if stage == "fit":  # a new fit measures its own level; a resumed one gets its checkpoint's back
            self.untrained_level = None

    def _mean_training_image(self, trainer: L.Trainer) -> Tensor | None:
        """The datamodule's mean training image (C, H, W), computed once per dataset; None when the
        datamodule has no ``train_dataset`` of images."""
        dataset = getattr(trainer.datamodule, "train_dataset", None) if trainer.datamodule is not None else None
        if dataset is None:
            return None
        if self._mean_image_of is None or self._mean_image_of[0] is not dataset:
            self._mean_image_of = (dataset, mean_image(dataset))
        return self._mean_image_of[1]

    def _say_if_below_no_model(self, stage: str, reading: dict[str, Any]) -> None:
        """One line, once a run, when a trained model's AUPRC does not beat the no-model baseline."""
        baseline = reading["no_model"]
        if self._said_below_no_model or reading["untrained"] or not reading["score"]["auprc"] <= baseline["auprc"]:
            return
        self._said_below_no_model = True
        rank_zero_warn(
            f"AnomalyDetection: {stage} AUPRC {reading['score']['auprc']:.3f} after {reading['update']} updates does "
            f"not beat the no-model baseline {baseline['auprc']:.3f} ({NO_MODEL_SCORES[baseline['best']]}, AUROC "
            f"{baseline['auroc']:.3f}) on the same split: the model ranks no better than a fixed image; compare "
            f"{stage}/auprc_above_no_model"
        )

    def _say_if_below_chance(self, stage: str, auprc: float, auroc: float, chance: float) -> None:
        """One line, once a run, when the score's AUPRC is below the AUPRC of a random score."""
        if self._said_below_chance or not auprc < chance:
            return
        self._said_below_chance = True
        rank_zero_warn(
            f"AnomalyDetection: {stage} AUPRC {auprc:.3f} is below chance ({chance:.3f}, the share of anomalies in "
            f"the split; AUROC {auroc:.3f}): the score ranks the anomalies as more normal than the normal examples, "
            f"and a noisier score would read higher; compare {stage}/auroc or {stage}/auprc_above_chance"
        )

    def _classes(self, trainer: L.Trainer) -> Tensor:
        classes = self.anomaly_classes
        if classes is None:
            classes = getattr(trainer.datamodule, "anomaly_classes", None) if trainer.datamodule is not None else None
        if not classes:
            raise ValueError(
                "AnomalyDetection needs the anomalous labels: set `anomaly_classes` on the callback or use a "
                "datamodule with an `anomaly_classes` attribute (e.g. lebm.data.MNISTAnomalyDataModule)"
            )
        return torch.as_tensor(list(classes))

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._classes_tensor = self._classes(trainer).to(pl_module.device)
        declared = tuple(getattr(pl_module, "evaluation_outputs", ()))
        self._terms = {name: key for name, key in self.TERMS.items() if key in declared}
        if "score_squared_error" in declared and "prior_term" in self._terms:
            self._terms["squared_error"] = "score_squared_error"
        # raw scores and targets, gathered from every rank at compute(); the ranking metrics are
        # computed on the host in float64 (torchmetrics' binary metrics would squash scores
        # outside [0, 1] through a sigmoid, which saturates for energies in the hundreds)
        self._mean_image = self._mean_training_image(trainer)
        no_model = self.NO_MODEL if self._mean_image is not None else self.NO_MODEL[:-1]
        names = ["target", "score", *self._terms, *no_model]
        self._collected = {
            name: CatMetric(sync_on_compute=True).to(pl_module.device).set_dtype(torch.float64) for name in names
        }  # CatMetric stores float32 unless told (and .to() resets it): energies near 300 differing by 1e-5 would tie

    def _update(self, pl_module: L.LightningModule, outputs: Any, batch: Any) -> None:
        labels = batch[1]
        target = torch.isin(labels.to(pl_module.device), self._classes_tensor)
        self._collected["target"].update(target.double())
        self._collected["score"].update(_per_example(outputs, "score", "AnomalyDetection").detach().double())
        for name, key in self._terms.items():
            self._collected[name].update(_per_example(outputs, key, "AnomalyDetection").detach().double())
        level = UNTRAINED_LEVEL if self.untrained_level is None else self.untrained_level
        for name, scores in no_model_scores(batch[0].to(pl_module.device), self._mean_image, level).items():
            self._collected[f"no_model_{name}"].update(scores)

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._collected is None:
            return
        stage = evaluation_stage(trainer)
        values = {name: metric.compute().cpu().numpy() for name, metric in self._collected.items()}
        self._collected = None
        targets = values.pop("target")
        no_model = {name.removeprefix("no_model_"): values.pop(name) for name in self.NO_MODEL if name in values}
        squared_error = values.pop("squared_error", None)
        if squared_error is not None:
            for form, weight in self.FORMS.items():
                values[form] = weight * squared_error + values["prior_term"]
        if one_class(targets):
            rank_zero_warn("AnomalyDetection: the evaluation set holds only one class; AUPRC/AUROC are NaN")
        anomalous = targets > 0.5
        chance = float(anomalous.mean()) if anomalous.size else float("nan")
        updates = self._updates(trainer)
        reading: dict[str, Any] = {"update": updates, "n_examples": int(anomalous.size)}
        reading["chance"] = chance
        reading["untrained"] = updates < self.untrained_below
        reading["no_model"] = self._log_no_model(pl_module, stage, no_model, targets)
        log_gathered(pl_module, f"{stage}/updates", float(updates))  # beside each reading in metrics.csv
        log_gathered(pl_module, f"{stage}/untrained", float(reading["untrained"]))
        log_gathered(pl_module, f"{stage}/auprc_chance", chance)
        log_gathered(pl_module, f"{stage}/n_examples", float(anomalous.size))
        for name, scores in values.items():
            suffix = "" if name == "score" else f"_{name}"
            auprc, auroc = ranking_metrics(scores, targets)
            log_gathered(pl_module, f"{stage}/auprc{suffix}", auprc)
            log_gathered(pl_module, f"{stage}/auroc{suffix}", auroc)
            spread = class_statistics(scores, anomalous)
            for statistic, value in spread.items():
                log_gathered(pl_module, f"{stage}/{name}_{statistic}", value)
            reading[name] = {"auprc": float(auprc), "auroc": float(auroc), **spread}
            if name == "score":
                log_gathered(pl_module, f"{stage}/auprc_above_chance", auprc - chance)
                log_gathered(pl_module, f"{stage}/auprc_above_no_model", auprc - reading["no_model"]["auprc"])
                self._say_if_below_chance(stage, auprc, auroc, chance)
            if name == "score":
                trapezoid = trapezoid_auprc(scores, targets)
                log_gathered(pl_module, f"{stage}/auprc_trapezoid", trapezoid)
                if stage == "val":
                    self.trapezoid_history.append(float(trapezoid))
                    recent_trapezoid = np.asarray(self.trapezoid_history[-self.last_k :])
                    log_gathered(pl_module, "val/auprc_trapezoid_last_k_mean", float(recent_trapezoid.mean()))
                    log_gathered(pl_module, "val/auprc_trapezoid_last_k_std", float(recent_trapezoid.std()))
                    log_gathered(pl_module, "val/auprc_trapezoid_best", max(self.trapezoid_history))
            if stage != "val":
                continue
            history = self.history if name == "score" else self.term_history.setdefault(name, [])
            if name == "score":
                self.readings.append(reading)  # filled in place by the terms that follow
            history.append(float(auprc))
            recent = np.asarray(history[-self.last_k :])
            log_gathered(pl_module, f"val/auprc{suffix}_last_k_mean", float(recent.mean()))
            if name == "score":
                log_gathered(pl_module, "val/auprc_last_k_std", float(recent.std()))
                log_gathered(pl_module, "val/auprc_best", max(history))
                log_gathered(pl_module, "val/auprc_best_of", float(len(history)))
        self._last_reading[stage] = reading
        self._say_if_below_no_model(stage, reading)

    def _log_no_model(
        self, pl_module: L.LightningModule, stage: str, scores: dict[str, np.ndarray], targets: np.ndarray
    ) -> dict[str, Any]:
        """Log every no-model score's AUPRC and AUROC and the baseline (the highest); returns the
        reading's ``no_model`` entry: the baseline's name, AUPRC and AUROC, and each score's."""
        baseline = no_model_baseline(scores, targets)
        for name, (auprc, auroc) in baseline.readings.items():
            log_gathered(pl_module, f"{stage}/auprc_no_model_{name}", auprc)
            log_gathered(pl_module, f"{stage}/auroc_no_model_{name}", auroc)
        log_gathered(pl_module, f"{stage}/auprc_no_model", baseline.auprc)
        log_gathered(pl_module, f"{stage}/auroc_no_model", baseline.auroc)
        return {
            "best": baseline.name,
            "untrained_level": UNTRAINED_LEVEL if self.untrained_level is None else self.untrained_level,
            "auprc": float(baseline.auprc),
            "auroc": float(baseline.auroc),
            "scores": {name: {"auprc": float(p), "auroc": float(r)} for name, (p, r) in baseline.readings.items()},
        }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The run's closing line on its last validation reading (kept across resumes in ``readings``)."""
        if self.readings and "no_model" in self.readings[-1]:
            rank_zero_info(f"lebm: {closing_line('val', self.readings[-1], self.untrained_below)}")

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Keep the updates of the checkpoint an evaluation reads (``lebm test`` runs at step 0)."""
        self._checkpoint_updates = int(checkpoint.get("global_step", 0))

    def _updates(self, trainer: L.Trainer) -> int:
        """The updates the evaluated weights hold: the fit's step, or the loaded checkpoint's."""
        loaded = getattr(self, "_checkpoint_updates", None)
        return int(trainer.global_step) if trainer.state.fn == "fit" or loaded is None else loaded

    @property
    def held_out(self) -> list[int] | None:
        """The labels counted as anomalies (the held-out digits) of the last evaluation (None: none yet)."""
        classes = getattr(self, "_classes_tensor", None)
        return None if classes is None else [int(label) for label in classes.tolist()]

    def test_closing_line(self, ckpt_path: str | None) -> str | None:
        """The line ``lebm test`` ends with: the test reading against chance and the no-model
        baseline, and how it was selected against how the papers selected theirs (None: no test
        reading in this process)."""
        if "test" not in self._last_reading:
            return None
        reading = self._last_reading["test"]
        line = f"{held_out_words(self.held_out)}: {closing_line('test', reading, self.untrained_below)}"
        if reading["untrained"]:  # no paper's figure compares with an untrained generator's level
            return line
        return f"{line}; {test_selection(ckpt_path)}"

    def paper_comparison(self, paper: float, digits: Any, label: str) -> str | None:
        """:func:`paper_comparison` of the last test reading (None: none, or an untrained one)."""
        reading = self._last_reading.get("test")
        if reading is None or reading["untrained"]:
            return None
        score = reading["score"]["auprc"]
        return paper_comparison(score, reading["chance"], int(reading["n_examples"]), paper, digits, label)

    def test_record(self, ckpt_path: str | None) -> dict[str, Any] | None:
        """What ``lebm test`` keeps of its anomaly reading in the run folder (``test_readings.jsonl``):
        the checkpoint read, its updates and untrained flag, AUPRC, AUROC, chance, the no-model
        baseline and the closing line (None: no test reading in this process)."""
        if "test" not in self._last_reading:
            return None
        reading = self._last_reading["test"]
        return {
            "callback": type(self).__name__,
            "held_out": self.held_out,
            "ckpt_path": ckpt_path,
            "updates": reading["update"],
            "untrained": reading["untrained"],
            "n_examples": reading["n_examples"],
            "auprc": reading["score"]["auprc"],
            "auroc": reading["score"]["auroc"],
            "chance": reading["chance"],
            "no_model": {key: reading["no_model"][key] for key in ("best", "auprc", "auroc")},
            "line": self.test_closing_line(ckpt_path),
        }


def held_out_words(classes: list[int] | None) -> str:
    """``"held-out digit 4"``, ``"held-out digits 1, 7"`` (``"held-out digits unknown"`` for None)."""
    if not classes:
        return "held-out digits unknown"
    return f"held-out digit{'s' if len(classes) > 1 else ''} {', '.join(str(label) for label in classes)}"
