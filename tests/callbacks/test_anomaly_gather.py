"""AnomalyDetection scores the union of every rank's examples (device: CPU, one process, a mocked
two-rank gather): the fast stand-in for the slow multi-process DDP test.

torchmetrics syncs a metric's states at ``compute()`` only when its ``distributed_available_fn``
(by default ``torchmetrics.metric.jit_distributed_available``, read when the metric is built)
says a process group is up, and then gathers each state with ``torchmetrics.metric.gather_all_tensors``
(the name ``Metric.sync`` looks up at call time; patching ``torchmetrics.utilities.distributed``'s
copy would not reach it). Both are patched here so that this process acts as rank 0 of two and its
gather returns its own states followed by a second rank's. A callback whose states are not synced
(``sync_on_compute=False``, or a compute that skips the gather) ranks rank 0's examples alone.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torchmetrics.metric
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import AnomalyDetection
from tests.helpers.trainers import quiet_trainer

ANOMALY = 4
PER_RANK = 40  # 4 batches of 10 on each rank; 4 anomalies each


class TermsAreTheData(L.LightningModule):
    """The evaluation step returns the data as the score's terms: column 0 the reconstruction
    term, column 1 the prior term, their sum the score."""

    evaluation_outputs = ("score", "score_reconstruction_term", "score_prior_term")

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def validation_step(self, batch, batch_idx):
        x = batch[0]
        return {"score": x[:, 0] + x[:, 1], "score_reconstruction_term": x[:, 0], "score_prior_term": x[:, 1]}


def rank_data(seed: int, prior_sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One rank's examples: the prior term puts the anomalies ``prior_sign * 3`` above the rest."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(PER_RANK) % 10
    x = torch.randn(PER_RANK, 2, generator=generator, dtype=torch.float64)
    x[:, 1] += prior_sign * 3.0 * (labels == ANOMALY).double()
    return x, labels


def states(x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-example values one rank's callback collects (as float64, in the loader's order)."""
    return {
        "target": (labels == ANOMALY).double(),
        "score": x[:, 0] + x[:, 1],
        "reconstruction_term": x[:, 0],
        "prior_term": x[:, 1],
        # the no-model scores of the "images" x (B, 2): ||x - 0||^2 and ||x - (-1)||^2 (no training set here)
        "no_model_untrained_level": x.square().sum(1),
        "no_model_background": (x + 1.0).square().sum(1),
    }


def test_every_rank_scores_the_union_of_the_gathered_examples(monkeypatch) -> None:
    """Rank 0's prior term ranks its anomalies first and rank 1's ranks them last: the logged AUPRC/AUROC
    (of the score and of each term) are scikit-learn's on the union of both ranks, not rank 0's."""
    x0, labels0 = rank_data(seed=0, prior_sign=+1.0)
    x1, labels1 = rank_data(seed=1, prior_sign=-1.0)
    local, remote = states(x0, labels0), states(x1, labels1)
    gathered: list[str] = []

    def two_rank_gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        """``gather_all_tensors`` on rank 0 of two: [rank 0's state, rank 1's state]."""
        names = [name for name, value in local.items() if torch.equal(value.to(tensor.dtype), tensor)]
        assert len(names) == 1, f"gathered a state that is none of rank 0's collected values: {tensor}"
        gathered.append(names[0])
        return [tensor, remote[names[0]].to(tensor)]

    monkeypatch.setattr(torchmetrics.metric, "jit_distributed_available", lambda: True)
    monkeypatch.setattr(torchmetrics.metric, "gather_all_tensors", two_rank_gather)

    loader = DataLoader(TensorDataset(x0, labels0), batch_size=10)
    trainer = quiet_trainer(accelerator="cpu", devices=1, callbacks=[AnomalyDetection(anomaly_classes=[ANOMALY])])
    trainer.validate(TermsAreTheData(), loader)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}

    target = torch.cat([local["target"], remote["target"]]).numpy()
    for name, suffix in (("score", ""), ("reconstruction_term", "_reconstruction_term"), ("prior_term", "_prior_term")):
        union = torch.cat([local[name], remote[name]]).numpy()
        auprc, auroc = average_precision_score(target, union), roc_auc_score(target, union)
        assert metrics[f"val/auprc{suffix}"] == pytest.approx(auprc, abs=1e-6), name
        assert metrics[f"val/auroc{suffix}"] == pytest.approx(auroc, abs=1e-6), name
    assert sorted(gathered) == sorted(local)  # each collected state went through the gather once
    no_model = {
        name: average_precision_score(
            target, torch.cat([local[f"no_model_{name}"], remote[f"no_model_{name}"]]).numpy()
        )
        for name in ("untrained_level", "background")
    }
    for name, auprc in no_model.items():
        assert metrics[f"val/auprc_no_model_{name}"] == pytest.approx(auprc, abs=1e-6), name
    assert metrics["val/auprc_no_model"] == pytest.approx(max(no_model.values()), abs=1e-6)

    # the data make the union's numbers far from rank 0's alone, so a callback that skips the gather fails
    for name, suffix in (("score", ""), ("prior_term", "_prior_term")):
        alone = local[name].numpy(), local["target"].numpy()
        assert abs(metrics[f"val/auprc{suffix}"] - average_precision_score(alone[1], alone[0])) > 0.2, name
        assert abs(metrics[f"val/auroc{suffix}"] - roc_auc_score(alone[1], alone[0])) > 0.2, name


def test_scores_are_ranked_in_float64() -> None:
    """Energies in the hundreds that differ by 1e-6 keep their order (float32 would tie them at
    300.0 and give AUROC 0.5): the collected scores are stored in float64, as the docstring says."""
    labels = torch.arange(PER_RANK) % 10
    is_anomaly = (labels == ANOMALY).double()
    x = torch.stack(
        [
            torch.full((PER_RANK,), 300.0, dtype=torch.float64) + 1e-6 * is_anomaly,
            torch.zeros(PER_RANK, dtype=torch.float64),
        ],
        1,
    )
    trainer = quiet_trainer(accelerator="cpu", devices=1, callbacks=[AnomalyDetection(anomaly_classes=[ANOMALY])])
    trainer.validate(TermsAreTheData(), DataLoader(TensorDataset(x, labels), batch_size=10))
    assert float(trainer.callback_metrics["val/auroc"]) == pytest.approx(1.0)
