"""``MarginalLikelihood`` end to end: ``lebm``'s test loop on a text model with a 1-d latent logs
the importance-sampled NLL of the test sentences within its stated error of the exact value
(quadrature), and the per-word figures divide by the predicted tokens."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest

from lebm.callbacks.likelihood import MarginalLikelihood
from lebm.data import TextDataModule
from lebm.models import GaussianPrior, LatentEBM
from tests.helpers.ddp import forked_ranks
from tests.helpers.text_cases import quadrature_log_likelihood, tiny_text_model
from tests.helpers.trainers import quiet_trainer


def run_test(model: LatentEBM, data: TextDataModule, callback: MarginalLikelihood, tmp_path) -> dict[str, float]:
    trainer = quiet_trainer(
        accelerator="cpu", inference_mode=False, callbacks=[callback], default_root_dir=str(tmp_path)
    )
    (logged,) = trainer.test(model, data, verbose=False)
    return logged


def templates(vocab: int = 7) -> TextDataModule:
    """Template sentences with a 7-token vocabulary (3 words: the rest become <unk>)."""
    return TextDataModule(dataset="templates", n_train=64, n_val=8, n_test=24, max_vocab_size=vocab, batch_size=8)


def test_the_logged_nll_is_the_exact_one_within_its_error(tmp_path, one_thread: object) -> None:
    model = tiny_text_model()
    data = templates()
    callback = MarginalLikelihood(n_samples=400, chunk=200, normalizer_samples=100_000)
    logged = run_test(model, data, callback, tmp_path)
    x = data.vocabulary.to_tensor(data.test_sentences)
    exact = -quadrature_log_likelihood(model, x)
    assert abs(logged["test/nll_is"] - float(exact.mean())) < 4 * logged["test/nll_is_stderr"] + 0.01
    assert 0 < logged["test/nll_is_stderr"] < 0.05
    words = float((x[:, 1:] != 0).sum())  # predicted tokens: words and eos, not bos or padding
    assert logged["test/nll_is_per_word"] == pytest.approx(float(exact.sum()) / words, abs=0.01)
    assert logged["test/ppl_is"] == pytest.approx(math.exp(logged["test/nll_is_per_word"]), rel=1e-6)


def test_a_stride_estimates_on_every_nth_batch(tmp_path, one_thread: object) -> None:
    model = tiny_text_model()
    data = templates()
    every = run_test(model, data, MarginalLikelihood(n_samples=50, normalizer_samples=1000), tmp_path)
    strided = MarginalLikelihood(n_samples=50, normalizer_samples=1000, every_n_batches=2)
    logged = run_test(model, data, strided, tmp_path)
    assert strided._batches == 3 and logged["test/nll_is"] != every["test/nll_is"]


def test_a_decoder_without_a_normalised_likelihood_is_refused_before_testing(tmp_path) -> None:
    from lebm.nets import GaussianDecoder, MLPGenerator

    model = LatentEBM(GaussianDecoder(MLPGenerator(2, [2], hidden=4)), GaussianPrior(2))
    with pytest.raises(ValueError, match="normalised"):
        run_test(model, templates(), MarginalLikelihood(n_samples=4), tmp_path)
    with pytest.raises(ValueError, match="stages"):
        MarginalLikelihood(stages=["train"])


class RecordTestMetrics(L.Callback):
    """Each rank writes what it logged to ``<folder>/rank<r>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = {key: float(value) for key, value in trainer.callback_metrics.items()}
        (Path(self.folder) / f"rank{trainer.global_rank}.json").write_text(json.dumps(values))


@pytest.mark.slow
def test_two_processes_sum_every_sentence_once(tmp_path, one_thread: object) -> None:
    """Under DDP each rank estimates its share; the logged NLL (per sentence and per word) is the
    exact one over the WHOLE test set within its error, on every rank alike."""
    model = tiny_text_model()
    data = templates()  # 24 test sentences: 12 per rank, no padding by the distributed sampler
    callbacks = [MarginalLikelihood(n_samples=400, chunk=200, normalizer_samples=100_000), RecordTestMetrics(tmp_path)]
    trainer = quiet_trainer(
        accelerator="cpu",
        devices=2,
        strategy=forked_ranks(),
        inference_mode=False,
        callbacks=callbacks,
        default_root_dir=str(tmp_path),
    )
    trainer.test(model, data, verbose=False)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert ranks[0] == ranks[1]
    data.setup("test")
    x = data.vocabulary.to_tensor(data.test_sentences)
    exact = -quadrature_log_likelihood(model, x)
    logged = ranks[0]
    assert abs(logged["test/nll_is"] - float(exact.mean())) < 4 * logged["test/nll_is_stderr"] + 0.01
    words = float((x[:, 1:] != 0).sum())
    assert logged["test/nll_is_per_word"] == pytest.approx(float(exact.sum()) / words, abs=0.01)
