"""The anomaly score made of its terms (device: CPU): each term reads the part of the model it names,
the detection callback ranks by each term on its own, and the score can be averaged over latent
samples of the inference network."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from cases import damc, joint_hierarchical_ebm, latent_ebm, multistage_nce
from sklearn.metrics import average_precision_score
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import AnomalyDetection
from tests.helpers.trainers import quiet_trainer


def test_each_term_moves_with_its_own_part_of_the_model_only() -> None:
    model = latent_ebm()
    x, z = torch.randn(32, 2), torch.randn(32, 3)
    before = model.anomaly_terms(x, z)
    assert torch.allclose(before["score"], before["score_reconstruction_term"] + before["score_prior_term"])
    with torch.no_grad():
        for p in model.prior.parameters():  # another prior, the same decoder
            p.mul_(3.0)
    prior_changed = model.anomaly_terms(x, z)
    assert torch.equal(prior_changed["score_reconstruction_term"], before["score_reconstruction_term"])
    assert not torch.allclose(prior_changed["score_prior_term"], before["score_prior_term"])
    model.decoder.sigma = 0.1  # a sharper likelihood, the same prior
    decoder_changed = model.anomaly_terms(x, z)
    assert torch.equal(decoder_changed["score_prior_term"], prior_changed["score_prior_term"])
    assert (decoder_changed["score_reconstruction_term"] > 5 * prior_changed["score_reconstruction_term"]).all()


def test_a_score_of_the_reconstruction_alone_still_reports_both_terms() -> None:
    model = multistage_nce()
    model.hparams.anomaly_score = "nll"
    terms = model.anomaly_terms(torch.randn(8, 2), torch.randn(8, 3))
    assert torch.equal(terms["score"], terms["score_reconstruction_term"])
    assert terms["score_prior_term"].shape == (8,)


class DesignedTerms(L.LightningModule):
    """Evaluation outputs built so that the prior term separates the anomalies and the
    reconstruction term does not: a callback that mixes the terms up gets the AUPRCs wrong."""

    evaluation_outputs = ("score", "score_reconstruction_term", "score_prior_term")

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return self.weight.square().sum()

    def validation_step(self, batch, batch_idx):
        x, labels = batch
        prior = (labels == 4).double() * 3 + x[:, 0]  # anomalies high, plus noise
        reconstruction = x[:, 1] * 5  # noise only
        return {"score": prior + reconstruction, "score_prior_term": prior, "score_reconstruction_term": reconstruction}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_callback_ranks_by_each_term_on_its_own_and_keeps_their_histories(tmp_path) -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 10
    x = torch.randn(400, 2, generator=generator, dtype=torch.float64)
    loader = DataLoader(TensorDataset(x, labels), batch_size=50)
    callback = AnomalyDetection(anomaly_classes=[4], last_k=2)
    trainer = quiet_trainer(max_epochs=3, accelerator="cpu", limit_train_batches=1, callbacks=[callback])
    trainer.fit(DesignedTerms(), loader, loader)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    target = (labels == 4).numpy()
    prior = (target * 3 + x[:, 0].numpy()).astype(np.float64)
    assert metrics["val/auprc_prior_term"] == pytest.approx(average_precision_score(target, prior), abs=1e-6)
    assert metrics["val/auprc_prior_term"] > 0.8 > 0.2 > metrics["val/auprc_reconstruction_term"]
    assert metrics["val/auprc_prior_term"] > metrics["val/auprc"] > metrics["val/auprc_reconstruction_term"]
    assert set(callback.term_history) == {"reconstruction_term", "prior_term"}
    assert len(callback.term_history["prior_term"]) == len(callback.history) == 3
    assert metrics["val/auprc_prior_term_last_k_mean"] == pytest.approx(
        np.mean(callback.term_history["prior_term"][-2:])
    )
    restored = AnomalyDetection()
    restored.load_state_dict(callback.state_dict())
    assert restored.term_history == callback.term_history


def test_the_score_averaged_over_encoder_samples_has_less_spread_with_more_samples() -> None:
    torch.manual_seed(0)
    model = joint_hierarchical_ebm()
    x = torch.randn(16, 2)
    at_mean = model.score(x)
    assert torch.equal(at_mean, model.score(x, samples=0))  # 0: the encoder's mean, as before

    def spread(samples: int) -> float:
        draws = torch.stack(
            [model.score(x, samples=samples, generator=torch.Generator().manual_seed(s)) for s in range(20)]
        )
        return float(draws.std(0).mean())

    one, many = spread(1), spread(64)
    assert one > 0 and many < one / 4  # the average of 64 draws: about 1/8 of one draw's spread
    repeat = [model.score(x, samples=8, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*repeat)  # the evaluation stream fixes the draws
    model.score_samples = 8
    assert torch.equal(model.score(x, generator=torch.Generator().manual_seed(3)), repeat[0])  # the model's setting


def test_score_samples_is_a_checked_option_of_the_hierarchical_method() -> None:
    model = joint_hierarchical_ebm()
    assert model.score_samples == 0
    config = dict(model.hparams)
    config["score_samples"] = -1
    with pytest.raises(ValueError, match="score_samples must be an integer >= 0"):
        type(model)(**{k: v for k, v in config.items() if not k.startswith("_")})


def test_the_latent_analysis_splits_the_score_into_the_parts_of_the_model() -> None:
    """CPU. ``experiments/anomaly_latents.py`` reads the score the callback ranks: reconstruction
    plus prior energy, the prior split into its Gaussian reference and the EBM's tilt, and each
    layer's latent norm."""
    from tests.helpers.scripts import load_script

    score_parts = load_script("experiments/anomaly_latents.py").score_parts

    model = joint_hierarchical_ebm().eval()
    x = torch.randn(16, 2)
    parts = score_parts(model, x, torch.Generator().manual_seed(0))
    z = model.infer(x)  # the encoder's mean
    terms = model.anomaly_terms(x, z)
    assert torch.allclose(parts["reconstruction"] + parts["prior"], terms["score"])
    with torch.no_grad():
        assert torch.allclose(parts["tilt"], model.prior.residual_energy(z), atol=1e-5)
    assert set(parts) == {"reconstruction", "prior", "gaussian", "tilt", "norm_z1", "norm_z2"}
    assert torch.allclose(parts["norm_z2"], z[:, 1:].norm(dim=1))


def test_the_tilt_and_the_squared_error_are_returned_beside_the_terms() -> None:
    """Device: CPU. The tilt is the prior's energy without its Gaussian reference (``||z||^2 / 2``
    here), and the squared error is the decoder's, however it is found (decoded, from the known NLL,
    or DAMC's reconstruction term)."""
    model = latent_ebm()
    x, z = torch.randn(16, 2), torch.randn(16, 3)
    terms = model.anomaly_terms(x, z)
    assert set(model.score_parts) == {"score_tilt_term", "score_squared_error"}
    torch.testing.assert_close(terms["score_prior_term"] - terms["score_tilt_term"], z.square().sum(1) / 2)
    torch.testing.assert_close(terms["score_squared_error"], model.decoder.squared_error(x, z))
    nll = model.decoder.nll(x, z)  # the evaluation's known NLL: the squared error without decoding again
    torch.testing.assert_close(model.anomaly_terms(x, z, nll=nll)["score_squared_error"], terms["score_squared_error"])
    damc_model = damc()  # its reconstruction term is the squared error itself
    damc_terms = damc_model.anomaly_terms(x, z)
    torch.testing.assert_close(damc_terms["score_squared_error"], damc_model.decoder.squared_error(x, z))


@pytest.mark.parametrize(("sigma", "same_as"), [(2**-0.5, "score_sse"), (1.0, "score_sigma_1")])
def test_the_reweighted_scores_rank_as_the_score_at_the_sigma_that_gives_their_weights(
    tmp_path, sigma: float, same_as: str
) -> None:
    """Device: CPU. ``-log p(x, z)`` weighs the squared error by ``1 / (2 sigma^2)``: at sigma
    ``1/sqrt(2)`` the score is DAMC's ``||x - g(z)||^2 + U(z)`` (``score_sse``), at sigma 1 it is
    ``score_sigma_1``; the other form, whose weight differs by 2, ranks otherwise."""
    torch.manual_seed(0)
    model = latent_ebm()
    model.decoder.sigma = sigma
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(200) % 10
    x = torch.randn(200, 2, generator=generator) * (1 + (labels == 4).float())[:, None]
    loader = DataLoader(TensorDataset(x, labels), batch_size=50)
    trainer = quiet_trainer(accelerator="cpu", callbacks=[AnomalyDetection(anomaly_classes=[4])])
    metrics = {k: float(v) for k, v in trainer.validate(model, loader, verbose=False)[0].items()}
    other = ({"score_sse", "score_sigma_1"} - {same_as}).pop()
    assert metrics[f"val/auroc_{same_as}"] == pytest.approx(metrics["val/auroc"], abs=1e-9)
    assert metrics[f"val/auprc_{same_as}"] == pytest.approx(metrics["val/auprc"], abs=1e-9)
    assert metrics[f"val/auroc_{other}"] != pytest.approx(metrics["val/auroc"], abs=1e-4)
    assert "val/auprc_tilt_term" in metrics and "val/tilt_term_normal_mean" in metrics


def test_latents_of_another_width_or_count_are_named_in_one_line() -> None:
    """CPU. ``anomaly_terms(x, z)`` with ``z`` of the wrong width (or for other observations) says what
    it needs, not torch's ``mat1 and mat2 shapes cannot be multiplied``."""
    model = latent_ebm()
    x = torch.randn(32, 2)
    for z in (torch.randn(32, 5), torch.randn(31, 3)):
        with pytest.raises(ValueError, match=r"z must be \(B, latent_dim\) = \(32, 3\) .* got \(3[12], [35]\)"):
            model.anomaly_terms(x, z, samples=0)


@pytest.mark.parametrize("reconstruction", ["nll", "sse"])
def test_damcs_squared_error_is_the_squared_error_whichever_reconstruction_term_it_scores(reconstruction: str) -> None:
    """CPU. DAMC's ``score_squared_error`` (what ``AnomalyDetection`` weighs into DAMC's official
    score) is ``||x - g(z)||^2`` both when its reconstruction term is that squared error and when it
    is the NLL, which it must then not report in its place."""
    torch.manual_seed(0)
    model = damc(score_reconstruction=reconstruction)
    x = torch.randn(6, 2)
    z = torch.randn(6, model.prior.latent_dim)
    with torch.no_grad():
        terms = model.anomaly_terms(x, z, samples=0)
        expected = model.decoder.squared_error(x, z)
    assert torch.allclose(terms["score_squared_error"], expected, atol=1e-5)
    if reconstruction == "nll":
        assert not torch.allclose(terms["score_reconstruction_term"], expected, atol=1e-3)
