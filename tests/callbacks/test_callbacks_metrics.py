"""Metric callbacks: AUPRC/AUROC agree with scikit-learn, DDP gives the single-process number,
the last-K average follows the history, and the reconstruction MSE is the per-pixel mean."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import AnomalyDetection, ReconstructionMSE
from tests.helpers.ddp import forked_ranks
from tests.helpers.trainers import quiet_trainer

N = 400  # a multiple of 2 processes x batch 20: no padding by the distributed sampler


def fixed_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(N) % 10
    x = torch.randn(N, 1, 2, 2, generator=gen)
    x[:, 0, 0, 0] += (labels == 4).float() * 1.5  # the anomalous class scores higher on average
    return x, labels


class ScoreOnly(L.LightningModule):
    """Scores = the first pixel (+ an epoch-dependent offset on anomalies); recon = 0.5 x."""

    evaluation_outputs = ("score", "mse")

    def __init__(self, drift: float = 0.0, offset: float = 0.0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.drift, self.offset = drift, offset

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + x[:, 0, 0, 0] + self.drift * self.current_epoch * (x[:, 0, 0, 1] > 0).float()

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x

    def training_step(self, batch, batch_idx):
        return (self.weight**2).sum() + 0 * batch[0].sum()

    def validation_step(self, batch, batch_idx):
        x = batch[0]
        return {"score": self.scores(x), "mse": (self.reconstruct(x) - x).square().flatten(1).mean(1)}

    test_step = validation_step

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def run(
    tmp_path,
    devices: int = 1,
    epochs: int = 1,
    drift: float = 0.0,
    last_k: int = 10,
    offset: float = 0.0,
    strategy: object = "auto",
) -> dict:
    x, labels = fixed_data()
    loader = DataLoader(TensorDataset(x, labels), batch_size=20)
    trainer = quiet_trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        num_sanity_val_steps=0,
        limit_train_batches=1,
        default_root_dir=str(tmp_path),
        callbacks=[AnomalyDetection(anomaly_classes=[4], last_k=last_k), ReconstructionMSE()],
    )
    trainer.fit(ScoreOnly(drift, offset), loader, loader)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def expected(drift_epoch: float = 0.0) -> tuple[float, float]:
    x, labels = fixed_data()
    scores = x[:, 0, 0, 0] + drift_epoch * (x[:, 0, 0, 1] > 0).float()
    target = (labels == 4).numpy()
    return average_precision_score(target, scores.numpy()), roc_auc_score(target, scores.numpy())


def test_auprc_and_auroc_match_scikit_learn(tmp_path) -> None:
    metrics = run(tmp_path)
    auprc, auroc = expected()
    assert metrics["val/auprc"] == pytest.approx(auprc, abs=1e-5)
    assert metrics["val/auroc"] == pytest.approx(auroc, abs=1e-5)
    assert 0.1 < auprc < 0.95  # a non-trivial ranking, so the comparison can fail


def test_scores_of_any_scale_keep_their_ranking(tmp_path) -> None:
    """Energies are in the hundreds: a sigmoid inside the metric would tie them all (AUROC 0.5)."""
    metrics = run(tmp_path, offset=300.0)
    auprc, auroc = expected()
    assert metrics["val/auprc"] == pytest.approx(auprc, abs=1e-5)
    assert metrics["val/auroc"] == pytest.approx(auroc, abs=1e-5)


def test_reconstruction_mse_is_the_per_pixel_mean(tmp_path) -> None:
    x, _ = fixed_data()
    assert run(tmp_path)["val/mse"] == pytest.approx(float((0.25 * x.square()).mean()), rel=1e-5)


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tmp_path) -> None:
    single = run(tmp_path / "one")
    double = run(tmp_path / "two", devices=2, strategy=forked_ranks(lightning=True))
    for key in ("val/auprc", "val/auroc", "val/mse", "val/auprc_chance", "val/n_examples", "val/score_anomaly_mean"):
        assert double[key] == pytest.approx(single[key], abs=1e-6), key


def test_last_k_average_over_the_evaluation_history(tmp_path) -> None:
    metrics = run(tmp_path, epochs=4, drift=0.3, last_k=2)
    history = [expected(drift_epoch=0.3 * epoch)[0] for epoch in range(4)]
    recent = torch.tensor(history[-2:], dtype=torch.float64)
    assert metrics["val/auprc"] == pytest.approx(history[-1], abs=1e-5)
    assert metrics["val/auprc_last_k_mean"] == pytest.approx(float(recent.mean()), abs=1e-5)
    assert metrics["val/auprc_last_k_std"] == pytest.approx(float(recent.std(unbiased=False)), abs=1e-5)
    assert abs(history[-1] - history[0]) > 0.01  # the drift really changes the AUPRC


def test_the_trapezoid_reading_is_logged_with_its_last_k_mean(tmp_path) -> None:
    """Device: CPU. ``auprc_trapezoid`` is scikit-learn's ``auc(recall, precision)`` of the same
    scores, with the anomalies as positives; its last-k mean follows its own history."""
    from sklearn.metrics import auc, precision_recall_curve

    metrics = run(tmp_path, epochs=3, drift=0.3, last_k=2)
    x, labels = fixed_data()
    areas = []
    for epoch in range(3):
        scores = x[:, 0, 0, 0] + 0.3 * epoch * (x[:, 0, 0, 1] > 0).float()
        precision, recall, _ = precision_recall_curve((labels == 4).numpy(), scores.numpy())
        areas.append(auc(recall, precision))
    assert metrics["val/auprc_trapezoid"] == pytest.approx(areas[-1], abs=1e-5)
    assert metrics["val/auprc_trapezoid_last_k_mean"] == pytest.approx(sum(areas[-2:]) / 2, abs=1e-5)
    assert metrics["val/auprc_trapezoid"] != pytest.approx(metrics["val/auprc"], abs=1e-4)  # two readings


class NoScores(ScoreOnly):
    """A method whose evaluation step returns the MSE only."""

    evaluation_outputs = ("mse",)


def test_a_callback_needing_an_output_the_method_lacks_fails_before_training(tmp_path) -> None:
    x, labels = fixed_data()
    loader = DataLoader(TensorDataset(x, labels), batch_size=20)
    model = NoScores()
    before = model.weight.detach().clone()
    trainer = quiet_trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[AnomalyDetection(anomaly_classes=[4])],
        default_root_dir=str(tmp_path),
    )
    with pytest.raises(
        ValueError, match=r"AnomalyDetection reads the per-example 'score'.*NoScores returns \('mse',\)"
    ):
        trainer.fit(model, loader, loader)
    assert torch.equal(model.weight, before) and trainer.global_step == 0


def test_missing_anomaly_classes_is_a_clear_error(tmp_path) -> None:
    x, labels = fixed_data()
    loader = DataLoader(TensorDataset(x, labels), batch_size=20)
    trainer = quiet_trainer(accelerator="cpu", callbacks=[AnomalyDetection()], default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match="anomaly_classes"):
        trainer.validate(ScoreOnly(), loader)


def test_an_evaluation_set_without_anomalies_gives_nan_not_a_crash(tmp_path) -> None:
    x, labels = fixed_data()
    loader = DataLoader(TensorDataset(x, labels), batch_size=20)
    trainer = quiet_trainer(
        accelerator="cpu", default_root_dir=str(tmp_path), callbacks=[AnomalyDetection(anomaly_classes=[11])]
    )
    with pytest.warns(UserWarning, match="only one class"):
        metrics = trainer.validate(ScoreOnly(), loader)[0]
    assert torch.isnan(torch.tensor(metrics["val/auprc"])) and torch.isnan(
        torch.tensor(metrics["val/auprc_last_k_mean"])
    )


class Inverted(ScoreOnly):
    """Ranks the anomalies as the most normal examples: the first pixel negated."""

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return -super().scores(x)


def fit_with(tmp_path, model: L.LightningModule, epochs: int) -> tuple[AnomalyDetection, dict]:
    x, labels = fixed_data()
    loader = DataLoader(TensorDataset(x, labels), batch_size=20)
    callback = AnomalyDetection(anomaly_classes=[4], last_k=2)
    trainer = quiet_trainer(
        max_epochs=epochs,
        accelerator="cpu",
        num_sanity_val_steps=0,
        limit_train_batches=1,
        default_root_dir=str(tmp_path),
        callbacks=[callback],
    )
    trainer.fit(model, loader, loader)
    return callback, {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_each_evaluation_reads_against_chance_with_the_class_statistics(tmp_path) -> None:
    """Device: CPU. The chance AUPRC is the share of anomalies (40 of 400 here), the figure above
    chance the AUPRC minus it, and the score's mean and spread on each class are those of its
    values (the first pixel): the anomalous class sits 1.5 higher."""
    _, metrics = fit_with(tmp_path, ScoreOnly(), epochs=1)
    x, labels = fixed_data()
    scores, anomalous = x[:, 0, 0, 0].double(), labels == 4
    assert metrics["val/auprc_chance"] == pytest.approx(0.1)
    assert metrics["val/n_examples"] == N
    assert metrics["val/auprc_above_chance"] == pytest.approx(metrics["val/auprc"] - 0.1, abs=1e-6)
    assert metrics["val/score_normal_mean"] == pytest.approx(float(scores[~anomalous].mean()), abs=1e-5)
    assert metrics["val/score_anomaly_mean"] == pytest.approx(float(scores[anomalous].mean()), abs=1e-5)
    assert metrics["val/score_normal_std"] == pytest.approx(float(scores[~anomalous].std(unbiased=False)), abs=1e-5)
    assert metrics["val/score_anomaly_std"] == pytest.approx(float(scores[anomalous].std(unbiased=False)), abs=1e-5)
    assert metrics["val/score_anomaly_mean"] - metrics["val/score_normal_mean"] > 1.0  # the classes differ


def test_every_validation_reading_is_kept_with_its_update_and_survives_a_checkpoint(tmp_path) -> None:
    """Device: CPU. ``readings`` holds one entry per validation (the best-of-N bookkeeping: N is
    its length, logged as ``val/auprc_best_of``), each with the update it was read after, and
    comes back from ``state_dict``."""
    callback, metrics = fit_with(tmp_path, ScoreOnly(drift=0.3), epochs=3)
    assert [r["update"] for r in callback.readings] == [1, 2, 3]
    assert [r["score"]["auprc"] for r in callback.readings] == pytest.approx(callback.history)
    assert metrics["val/auprc_best_of"] == 3
    assert metrics["val/auprc_best"] == pytest.approx(max(callback.history))
    assert all(r["chance"] == pytest.approx(0.1) and r["n_examples"] == N for r in callback.readings)
    restored = AnomalyDetection(anomaly_classes=[4])
    restored.load_state_dict(callback.state_dict())
    assert restored.readings == callback.readings


def test_an_auprc_below_chance_is_said_once_a_run(tmp_path, recwarn) -> None:
    """Device: CPU. A score that ranks the anomalies as the most normal examples reads an AUPRC
    below the share of anomalies: one warning over two evaluations; a good score: none."""
    _, metrics = fit_with(tmp_path / "inverted", Inverted(), epochs=2)
    said = [w for w in recwarn if "below chance" in str(w.message)]
    assert metrics["val/auprc"] < 0.1 and metrics["val/auroc"] < 0.5
    assert len(said) == 1 and "AUPRC" in str(said[0].message) and "0.100" in str(said[0].message)
    recwarn.clear()
    fit_with(tmp_path / "good", ScoreOnly(), epochs=2)
    assert not [w for w in recwarn if "below chance" in str(w.message)]


class WithTrainingImages(L.LightningDataModule):
    """The fixed data for validation and test; a training set of its own whose mean image is known."""

    def __init__(self) -> None:
        super().__init__()
        x, labels = fixed_data()
        self.eval_set = TensorDataset(x, labels)
        train = torch.zeros(10, 1, 2, 2)
        train[:, 0, 1, 1] = torch.linspace(0.0, 4.0, 10)  # mean image: 2.0 at pixel (1, 1), 0 elsewhere
        self.train_dataset = TensorDataset(train, torch.zeros(10, dtype=torch.int64))

    def train_dataloader(self):
        return DataLoader(self.train_dataset, batch_size=10)

    def val_dataloader(self):
        return DataLoader(self.eval_set, batch_size=20)

    test_dataloader = val_dataloader


def test_every_evaluation_ranks_three_no_model_scores_and_names_the_best_as_the_baseline(tmp_path) -> None:
    """Device: CPU. The squared distances of the images to 0 (the untrained generator's level), to -1
    (the background) and to the datamodule's mean training image are ranked as scikit-learn ranks
    them; the highest AUPRC is the baseline (``val/auprc_no_model``), named in the reading."""
    callback = AnomalyDetection(anomaly_classes=[4])
    trainer = quiet_trainer(
        max_epochs=1, accelerator="cpu", num_sanity_val_steps=0, limit_train_batches=1,
        default_root_dir=str(tmp_path), callbacks=[callback],
    )  # fmt: skip
    trainer.fit(ScoreOnly(), datamodule=WithTrainingImages())
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    x, labels = fixed_data()
    target = (labels == 4).numpy()
    mean = torch.zeros(1, 2, 2)
    mean[0, 1, 1] = 2.0
    references = {"untrained_level": 0.0, "background": -1.0, "mean_training_image": mean}
    expected = {}
    for name, reference in references.items():
        distance = (x.double() - (reference.double() if torch.is_tensor(reference) else reference)).square()
        scores = distance.flatten(1).sum(1).numpy()
        expected[name] = average_precision_score(target, scores)
        assert metrics[f"val/auprc_no_model_{name}"] == pytest.approx(expected[name], abs=1e-6), name
        assert metrics[f"val/auroc_no_model_{name}"] == pytest.approx(roc_auc_score(target, scores), abs=1e-6), name
    best = max(expected, key=expected.get)
    assert metrics["val/auprc_no_model"] == pytest.approx(expected[best], abs=1e-6)
    assert callback.readings[-1]["no_model"]["best"] == best
    assert metrics["val/auprc_above_no_model"] == pytest.approx(metrics["val/auprc"] - expected[best], abs=1e-6)
    assert len(set(round(v, 6) for v in expected.values())) == 3  # three different readings: none is a copy


def test_an_untrained_reading_is_labelled_and_lebm_test_names_its_figure_and_selection(tmp_path, caplog) -> None:
    """Device: CPU. A fit of one update ends with a line that calls its reading the untrained regime;
    ``trainer.test`` ends with the test reading, the checkpoint it read and the papers' selections.
    With ``untrained_below=0`` the same reading is not labelled."""
    x, labels = fixed_data()
    loader = DataLoader(TensorDataset(x, labels), batch_size=20)
    for below, labelled in ((100, True), (0, False)):
        caplog.clear()
        callback = AnomalyDetection(anomaly_classes=[4], untrained_below=below)
        trainer = quiet_trainer(
            max_epochs=1, accelerator="cpu", num_sanity_val_steps=0, limit_train_batches=1,
            default_root_dir=str(tmp_path / str(below)), callbacks=[callback],
        )  # fmt: skip
        with caplog.at_level("INFO"):
            trainer.fit(ScoreOnly(), loader, loader)
        closing = [r.getMessage() for r in caplog.records if "anomaly val/auprc" in r.getMessage()]
        assert len(closing) == 1 and "after 1 updates" in closing[0] and "chance 0.100" in closing[0]
        assert ("untrained regime (under 100 updates)" in closing[0]) is labelled
        assert callback.readings[-1]["untrained"] is labelled
    trainer.save_checkpoint(tmp_path / "read.ckpt")
    assert callback.test_closing_line(None) is None  # no test reading yet
    tester = quiet_trainer(accelerator="cpu", default_root_dir=str(tmp_path / "test"), callbacks=[callback])
    tester.test(ScoreOnly(), ckpt_path=str(tmp_path / "read.ckpt"), dataloaders=loader)
    line = callback.test_closing_line(tester.ckpt_path)
    assert "anomaly test/auprc" in line and "after 1 updates" in line  # the checkpoint's updates, not step 0
    assert "compare test/auprc with the paper's figure" in line and f"checkpoint {tmp_path / 'read.ckpt'}" in line
    assert "best of its test readings" in line and "last 10 epochs" in line


def test_a_trained_reading_no_better_than_the_no_model_baseline_is_said_once_a_run(tmp_path, recwarn) -> None:
    """Device: CPU. An inverted score after the untrained regime (``untrained_below=1``) reads below
    the baseline: one line over two evaluations; the same score while untrained, or a good score:
    none."""

    def fit(model: L.LightningModule, below: int, folder: str) -> None:
        x, labels = fixed_data()
        loader = DataLoader(TensorDataset(x, labels), batch_size=20)
        trainer = quiet_trainer(
            max_epochs=2, accelerator="cpu", num_sanity_val_steps=0, limit_train_batches=1,
            default_root_dir=str(tmp_path / folder),
            callbacks=[AnomalyDetection(anomaly_classes=[4], untrained_below=below)],
        )  # fmt: skip
        trainer.fit(model, loader, loader)

    fit(Inverted(), below=1, folder="trained")
    said = [str(w.message) for w in recwarn if "does not beat the no-model baseline" in str(w.message)]
    assert len(said) == 1 and "after 1 updates" in said[0] and "squared distance" in said[0]
    recwarn.clear()
    fit(Inverted(), below=500, folder="untrained")
    fit(ScoreOnly(), below=1, folder="good")
    assert not [w for w in recwarn if "does not beat the no-model baseline" in str(w.message)]


class GreyDecoder(torch.nn.Module):
    latent_dim = 3

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.full((z.shape[0], 1, 2, 2), 0.7)


class DrawsGrey(ScoreOnly):
    """A method whose untrained decoder draws the constant image 0.7."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = self.prior = GreyDecoder()


def test_the_untrained_level_is_measured_when_a_fit_starts_and_kept_in_its_checkpoint(tmp_path) -> None:
    """Device: CPU. The level of the first no-model score is the generator's mean pixel at the start
    of the fit (0.7 here, not the default 0); it is ranked as ``||x - 0.7||^2`` and comes back with
    the callback's state, so ``lebm test`` of the checkpoint reads the same baseline."""
    callback, metrics = fit_with(tmp_path, DrawsGrey(), epochs=1)
    x, labels = fixed_data()
    expected = average_precision_score((labels == 4).numpy(), (x.double() - 0.7).square().flatten(1).sum(1).numpy())
    assert callback.untrained_level == pytest.approx(0.7)
    assert callback.readings[-1]["no_model"]["untrained_level"] == pytest.approx(0.7)
    assert metrics["val/auprc_no_model_untrained_level"] == pytest.approx(expected, abs=1e-6)
    restored = AnomalyDetection(anomaly_classes=[4])
    restored.load_state_dict(callback.state_dict())
    assert restored.untrained_level == pytest.approx(0.7)


def test_lightnings_sync_dist_advice_is_silenced_for_the_gathered_values_only(recwarn) -> None:
    """CPU. Under DDP Lightning advises ``sync_dist=True`` for every epoch-level value logged without
    it; the metrics gather every rank's examples before they log, so for their names the advice
    misleads and is silenced, for a user's own name it still shows."""
    import warnings

    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from lebm.callbacks.gathered import log_gathered

    logged = []

    class Module:
        def log(self, name, value, sync_dist):
            logged.append((name, value, sync_dist))

    log_gathered(Module(), "val/gathered_here", 1.0)
    assert logged == [("val/gathered_here", 1.0, False)]
    advice = "It is recommended to use `self.log({!r}, ..., sync_dist=True)` when logging on epoch level"
    warnings.warn(advice.format("val/gathered_here"), PossibleUserWarning, stacklevel=1)
    warnings.warn(advice.format("val/users_own"), PossibleUserWarning, stacklevel=1)
    shown = [str(w.message) for w in recwarn if "It is recommended" in str(w.message)]
    assert shown == [advice.format("val/users_own")]


@pytest.mark.parametrize("kind", ["FID", "TextGenerationMetrics"])
def test_fid_and_the_text_metrics_log_their_gathered_values_without_the_advice(kind, monkeypatch, recwarn) -> None:
    """CPU. FID and the text metrics score every rank's samples together and broadcast the result, so
    Lightning's ``sync_dist`` advice is silenced for what they log (through ``log_gathered``)."""
    import warnings

    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from lebm.callbacks import FID, TextGenerationMetrics

    callback = FID(name="fid_gathered_test") if kind == "FID" else TextGenerationMetrics()
    values = {"fid": 3.0} if kind == "FID" else {"fppl": 30.0}
    monkeypatch.setattr(callback, "evaluate", lambda *args, **kwargs: dict(values))
    logged = []

    class Module:
        def log(self, name, value, **settings):
            logged.append((name, value, settings.get("sync_dist")))

    callback.on_test_epoch_end(None, Module())
    ((name, value, sync_dist),) = logged
    assert name.startswith("test/") and value in values.values() and sync_dist is False
    advice = f"It is recommended to use `self.log({name!r}, ..., sync_dist=True)` when logging on epoch level"
    warnings.warn(advice, PossibleUserWarning, stacklevel=1)
    assert not [w for w in recwarn if "It is recommended" in str(w.message)]


def test_each_reading_logs_its_updates_and_untrained_flag_and_an_untrained_test_never_points_to_the_paper(
    tmp_path,
) -> None:
    """Device: CPU. A one-update fit logs ``val/updates`` 1 and ``val/untrained`` 1 beside its AUPRC
    (so metrics.csv carries them); its test reading's closing line calls it untrained and names no
    paper, and the record ``lebm test`` keeps in the run folder says so too."""
    x, labels = fixed_data()
    loader = DataLoader(TensorDataset(x, labels), batch_size=20)
    callback = AnomalyDetection(anomaly_classes=[4])
    trainer = quiet_trainer(
        max_epochs=1, accelerator="cpu", num_sanity_val_steps=0, limit_train_batches=1,
        default_root_dir=str(tmp_path), callbacks=[callback],
    )  # fmt: skip
    trainer.fit(ScoreOnly(), loader, loader)
    assert float(trainer.callback_metrics["val/updates"]) == 1.0
    assert float(trainer.callback_metrics["val/untrained"]) == 1.0
    trainer.save_checkpoint(tmp_path / "read.ckpt")
    tester = quiet_trainer(accelerator="cpu", default_root_dir=str(tmp_path / "test"), callbacks=[callback])
    tester.test(ScoreOnly(), ckpt_path=str(tmp_path / "read.ckpt"), dataloaders=loader)
    assert float(tester.callback_metrics["test/untrained"]) == 1.0
    line = callback.test_closing_line(tester.ckpt_path)
    assert "untrained regime" in line and "paper" not in line
    record = callback.test_record(tester.ckpt_path)
    assert record["untrained"] is True and record["updates"] == 1 and record["line"] == line
    assert record["chance"] == pytest.approx(0.1) and record["no_model"]["best"]


def test_the_record_lebm_test_keeps_holds_the_test_auprc_and_auroc_each_under_its_name(tmp_path) -> None:
    """Device: CPU. The record of a test reading (``test_readings.jsonl`` in the run folder) gives the
    split's AUPRC and AUROC as scikit-learn computes them, each under its own name, as logged."""
    x, labels = fixed_data()
    callback = AnomalyDetection(anomaly_classes=[4])
    tester = quiet_trainer(accelerator="cpu", default_root_dir=str(tmp_path), callbacks=[callback])
    tester.test(ScoreOnly(), dataloaders=DataLoader(TensorDataset(x, labels), batch_size=20))
    record = callback.test_record(None)
    auprc, auroc = expected()
    assert record["auprc"] == pytest.approx(auprc, abs=1e-5) and record["auroc"] == pytest.approx(auroc, abs=1e-5)
    assert record["auprc"] == pytest.approx(float(tester.callback_metrics["test/auprc"]))
    assert record["auroc"] == pytest.approx(float(tester.callback_metrics["test/auroc"]))


def test_the_papers_figure_is_printed_beside_a_test_reading_with_how_uncertain_it_is() -> None:
    """CPU. The closing line's comparison: the paper's figure and its digit, the difference, and the
    reading's standard error from the held-out examples; a split too small to compare says so."""
    from lebm.callbacks.metrics import paper_comparison

    small = paper_comparison(0.45, 0.1, 500, 0.630, [4], "paper")  # 50 held-out digits
    assert "held-out [4]: 0.630 (paper), -0.180 from it" in small and "50 held-out examples of 500" in small
    assert "too small to compare" in small and "0.070" in small  # sqrt(0.45 * 0.55 / 50)
    full = paper_comparison(0.56, 0.34, 14000, 0.630, [4], "paper")  # 4,760 held-out digits
    assert "too small" not in full and "standard error is about 0.007" in full
