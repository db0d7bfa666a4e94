"""Text metrics: perplexity of fixed toy language models equals the hand-computed value (eos counted,
bos given, padding masked), a language model fits a one-sentence corpus, and the
TextGenerationMetrics callback scores fluent / garbage / collapsed / covering samples as it should,
writes its samples, fails early on a run it cannot score, and logs the single-process numbers on
both ranks of a 2-process run."""

from __future__ import annotations

import json
import math
import os
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor
from torch.utils.data import DataLoader

from lebm.callbacks import TextGenerationMetrics
from lebm.data.text.vocabulary import Vocabulary
from lebm.metrics import (
    canonical_sentences,
    nll_totals,
    perplexity,
    perplexity_from_totals,
    sentence_nll,
    train_language_model,
)
from lebm.models import LatentEBM, Method, TiltedGaussianPrior
from lebm.nets import EnergyMLP
from lebm.nets.text import CategoricalDecoder, LSTMTextGenerator
from lebm.samplers import Langevin
from tests.helpers.ddp import forked_ranks
from tests.helpers.trainers import quiet_trainer

PAD, BOS, EOS = 0, 1, 2


# ----------------------------------------------------------------------------- toy models
def unigram_model(probabilities: list[float]) -> LSTMTextGenerator:
    """A language model whose next-token distribution is ``probabilities`` at every position
    (output weights zero, bias = log-probabilities)."""
    model = LSTMTextGenerator(len(probabilities), embed_dim=3, hidden_dim=4, pad_id=PAD)
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.copy_(torch.tensor(probabilities).log())
    return model.eval()


# five tokens: pad, bos, eos, and the words 3 and 4; probabilities of each as the next token
UNIGRAM = [0.05, 0.15, 0.2, 0.35, 0.25]
SENTENCES = torch.tensor(
    [
        [BOS, 3, 4, 3, EOS],  # predicted: 3, 4, 3, eos
        [BOS, 4, EOS, PAD, PAD],  # predicted: 4, eos
        [BOS, EOS, PAD, PAD, PAD],  # predicted: eos
    ]
)


def hand_perplexity() -> float:
    """3 appears twice, 4 twice, eos three times: 7 predicted tokens (bos and padding are not)."""
    p = UNIGRAM
    log_likelihood = 2 * math.log(p[3]) + 2 * math.log(p[4]) + 3 * math.log(p[EOS])
    return math.exp(-log_likelihood / 7)


def test_unigram_model_perplexity_is_the_hand_computed_value() -> None:
    model = unigram_model(UNIGRAM)
    assert perplexity(model, SENTENCES) == pytest.approx(hand_perplexity(), rel=1e-6)
    nll, tokens = nll_totals(model, SENTENCES)
    assert nll.dtype == tokens.dtype == torch.float64 and float(tokens) == 7
    per_sentence = sentence_nll(model, SENTENCES)
    expected = -torch.tensor(
        [
            2 * math.log(UNIGRAM[3]) + math.log(UNIGRAM[4]) + math.log(UNIGRAM[EOS]),
            math.log(UNIGRAM[4]) + math.log(UNIGRAM[EOS]),
            math.log(UNIGRAM[EOS]),
        ]
    )
    torch.testing.assert_close(per_sentence, expected.float(), rtol=1e-5, atol=1e-6)


def test_a_uniform_model_has_the_vocabulary_size_as_perplexity() -> None:
    for size in (5, 11):
        model = unigram_model([1.0 / size] * size)
        sentences = torch.randint(3, size, (6, 7))
        sentences[:, 0], sentences[:, -1] = BOS, EOS
        assert perplexity(model, sentences) == pytest.approx(size, rel=1e-5)


def test_padding_batching_and_splitting_leave_the_perplexity_unchanged() -> None:
    model = unigram_model(UNIGRAM)
    reference = perplexity(model, SENTENCES)
    padded = torch.nn.functional.pad(SENTENCES, (0, 6), value=PAD)
    assert perplexity(model, padded) == pytest.approx(reference, rel=1e-6)
    assert perplexity(model, SENTENCES, batch_size=1) == pytest.approx(reference, rel=1e-6)
    assert perplexity(model, [SENTENCES[:1], padded[1:]]) == pytest.approx(reference, rel=1e-6)
    # the totals of two halves (two ranks) add up to the whole corpus
    first, second = nll_totals(model, SENTENCES[:2]), nll_totals(model, SENTENCES[2:])
    summed = perplexity_from_totals(first[0] + second[0], first[1] + second[1])
    assert summed == pytest.approx(reference, rel=1e-9)


def test_bad_inputs_are_refused_with_the_fix() -> None:
    model = unigram_model(UNIGRAM)
    with pytest.raises(ValueError, match="Vocabulary.to_tensor"):
        perplexity(model, SENTENCES.float())
    with pytest.raises(ValueError, match="no.*token|at least one predicted token"):
        perplexity_from_totals(0.0, 0.0)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\)"):
        train_language_model(SENTENCES, 4, generator=torch.Generator(), epochs=1)


def test_generated_sentences_are_put_in_the_canonical_layout() -> None:
    generated = torch.tensor(
        [
            [BOS, 4, PAD, 5, EOS, PAD],  # padding inside the words -> unk
            [BOS, 4, EOS, 7, 8, EOS],  # words after the first eos are dropped
            [BOS, 4, 5, PAD, PAD, PAD],  # no eos: one is appended after the last word
            [BOS, BOS, 4, 4, 4, 4],  # bos inside, no room for eos: the sentence gets a column more
        ]
    )
    expected = torch.tensor(
        [
            [BOS, 4, 3, 5, EOS, PAD, PAD],
            [BOS, 4, EOS, PAD, PAD, PAD, PAD],
            [BOS, 4, 5, EOS, PAD, PAD, PAD],
            [BOS, 3, 4, 4, 4, 4, EOS],
        ]
    )
    assert torch.equal(canonical_sentences(generated), expected)
    assert torch.equal(canonical_sentences(expected), expected)


# ------------------------------------------------------------------------ training a model
TINY_LM = dict(embed_dim=16, hidden_dim=32, dropout=0.0, epochs=30, batch_size=16, lr=1e-2)


def test_a_language_model_learns_a_one_sentence_corpus(one_thread) -> None:
    sentence = torch.tensor([[BOS, 4, 5, 6, 7, EOS]])
    other = torch.tensor([[BOS, 7, 6, 5, 4, 8, 9, EOS]])
    rng_state = torch.get_rng_state()
    model = train_language_model(sentence.repeat(64, 1), 10, generator=torch.Generator().manual_seed(0), **TINY_LM)
    assert torch.equal(torch.get_rng_state(), rng_state), "training must not draw from torch's global RNG"
    assert not model.training
    assert perplexity(model, sentence) < 1.1
    assert perplexity(model, other) > 20


def test_the_generator_seed_fixes_the_weights(one_thread) -> None:
    corpus = torch.tensor([[BOS, 4, 5, EOS, PAD], [BOS, 6, 5, 4, EOS]]).repeat(8, 1)
    settings = dict(TINY_LM, epochs=2, dropout=0.3)

    def weights(seed: int) -> list[Tensor]:
        model = train_language_model(corpus, 8, generator=torch.Generator().manual_seed(seed), **settings)
        return [p.detach() for p in model.parameters()]

    same = zip(weights(3), weights(3), strict=True)
    assert all(torch.equal(a, b) for a, b in same)
    assert any(not torch.equal(a, b) for a, b in zip(weights(3), weights(4), strict=True))


# ------------------------------------------------------------------------ the callback
TEMPLATES = [
    ["the", "cat", "sat"],
    ["a", "dog", "ran", "far", "away"],
    ["my", "bird", "sings"],
    ["one", "fox", "jumps", "over", "fences", "today"],
]
VOCABULARY = Vocabulary.build(TEMPLATES)
CALLBACK_LM = dict(embed_dim=16, hidden_dim=32, dropout=0.0, epochs=15, batch_size=20, lr=1e-2)


class Sentences(L.LightningDataModule):
    """A stand-in text datamodule: the four templates, 25 (train) and 5 (val, test) times each."""

    def __init__(self) -> None:
        super().__init__()
        self.vocabulary = VOCABULARY
        self.train_sentences = [list(s) for s in TEMPLATES * 25]
        self.val_sentences = [list(s) for s in TEMPLATES * 5]
        self.test_sentences = [list(s) for s in TEMPLATES * 5]

    def _loader(self, sentences: list[list[str]]) -> DataLoader:
        return DataLoader(list(self.vocabulary.to_tensor(sentences)), batch_size=10)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_sentences)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_sentences)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_sentences)


class FixedSentences(Method):
    """A method whose ``generate`` returns rows of a fixed pool, in order: rank r's calls of an
    evaluation read ``pool[r * rank_stride + drawn ...]``, so the ranks together produce the pool's
    first rows whatever their number (``rank_stride`` = each rank's share)."""

    def __init__(self, pool: list[list[str]], rank_stride: int = 0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.pool, self.rank_stride, self.drawn = pool, rank_stride, 0

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.drawn = 0

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.drawn = 0

    def generate(self, n: int, *, generator: torch.Generator | None = None, raw: bool = False) -> Any:
        start = self.global_rank * self.rank_stride + self.drawn
        self.drawn += n
        rows = [self.pool[(start + i) % len(self.pool)] for i in range(n)]
        tokens = VOCABULARY.to_tensor(rows).to(self.device)
        return tokens if raw else VOCABULARY.to_text(tokens)

    def evaluation_step(self, batch: Tensor, stage: str) -> dict[str, Tensor]:
        return {}

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        self.step_optimizers(self.optimizers(), (self.weight - 1).square().sum() + 0 * batch.sum())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(tmp_path, callbacks: list[L.Callback], **kwargs: Any) -> L.Trainer:
    settings: dict[str, Any] = dict(
        max_epochs=1, accelerator="cpu", devices=1, default_root_dir=str(tmp_path), callbacks=callbacks
    )
    settings.update(kwargs)
    return quiet_trainer(**settings)


def validate(tmp_path, pool: list[list[str]], n_samples: int = 40, **options: Any) -> dict[str, float]:
    callback = TextGenerationMetrics(n_samples=n_samples, lm=CALLBACK_LM, batch_size=16, **options)
    (metrics,) = trainer(tmp_path, [callback]).validate(FixedSentences(pool), datamodule=Sentences())
    assert callback.last_metrics == pytest.approx({k.split("/")[1]: v for k, v in metrics.items()})
    return metrics


def test_fppl_is_low_for_fluent_samples_and_high_for_garbage(tmp_path, one_thread) -> None:
    fluent = validate(tmp_path / "fluent", TEMPLATES)
    garbage_pool = [list(reversed(s)) for s in TEMPLATES] + [["fences", "the", "my", "cat", "dog"]]
    garbage = validate(tmp_path / "garbage", garbage_pool)
    # four equally likely templates: about exp(log 4 / 5.25 predicted tokens) = 1.3 per token
    assert fluent["val/fppl"] < 1.5
    assert garbage["val/fppl"] > 10 * fluent["val/fppl"]
    assert fluent["val/distinct_sentences"] == pytest.approx(4 / 40)
    assert garbage["val/distinct_sentences"] == pytest.approx(5 / 40)


def test_rppl_is_high_when_the_samples_collapse_to_one_sentence(tmp_path, one_thread) -> None:
    covering = validate(tmp_path / "covering", TEMPLATES)
    collapsed = validate(tmp_path / "collapsed", TEMPLATES[:1])
    assert covering["val/rppl"] < 2.0
    assert collapsed["val/rppl"] > 10 * covering["val/rppl"]
    assert collapsed["val/distinct_sentences"] == pytest.approx(1 / 40)
    assert collapsed["val/fppl"] < 2.0  # the collapsed sentence is fluent: only RPPL sees the collapse


def test_samples_are_written_and_evaluations_follow_the_schedule(tmp_path, one_thread) -> None:
    callback = TextGenerationMetrics(n_samples=12, every_n_epochs=2, lm=dict(CALLBACK_LM, epochs=2), log_samples=5)
    t = trainer(tmp_path, [callback], max_epochs=3, num_sanity_val_steps=1, limit_train_batches=2)
    t.fit(FixedSentences(TEMPLATES), datamodule=Sentences())
    samples = sorted(os.listdir(tmp_path / "samples"))
    assert samples == ["val_epoch0001.txt"]  # not the sanity check, not epochs 0 and 2
    lines = (tmp_path / "samples" / "val_epoch0001.txt").read_text().splitlines()
    assert lines == [" ".join(TEMPLATES[i % 4]) for i in range(5)]
    real_lm = callback._real_lm
    assert real_lm is not None
    t.test(t.lightning_module, datamodule=Sentences())
    assert callback._real_lm is real_lm  # trained once per fit, reused by test
    assert os.path.isfile(tmp_path / "samples" / "test_epoch0003.txt")
    assert {"test/fppl", "test/rppl", "test/distinct_sentences"} <= set(t.callback_metrics)


def test_with_wandb_the_samples_go_to_a_table_and_to_the_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb (a dependency of lebm) is not installed here")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(logger, "log_text", lambda **kwargs: sent.append(kwargs))
    fake_trainer = SimpleNamespace(loggers=[logger], current_epoch=3)
    callback = TextGenerationMetrics()
    callback._log_samples(fake_trainer, ["the cat sat", "my bird sings"], "val", folder=str(tmp_path))
    assert sent == [
        {"key": "val/samples", "columns": ["epoch", "sentence"], "data": [[3, "the cat sat"], [3, "my bird sings"]]}
    ]
    written = (tmp_path / "samples" / "val_epoch0003.txt").read_text()
    assert written == "the cat sat\nmy bird sings\n"  # whatever the logger


class NoText(L.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        return DataLoader([torch.zeros(2)])

    val_dataloader = train_dataloader


class ImageMethod(FixedSentences):
    def generate(self, n: int) -> Tensor:  # no raw= and generator=: images only
        return torch.zeros(n, 1, 2, 2)


class FloatGenerator(FixedSentences):
    def generate(self, n: int, *, generator: torch.Generator | None = None, raw: bool = False) -> Tensor:
        return torch.zeros(n, 1, 2, 2)


def test_runs_the_callback_cannot_score_fail_with_the_fix(tmp_path) -> None:
    callback = TextGenerationMetrics(n_samples=4, lm=dict(CALLBACK_LM, epochs=1))
    with pytest.raises(ValueError, match=r"has no vocabulary, train_sentences.*lebm.data.TextDataModule"):
        trainer(tmp_path, [callback]).fit(FixedSentences(TEMPLATES), datamodule=NoText())
    with pytest.raises(ValueError, match=r"generate\(n, generator=\.\.\., raw=True\).*CategoricalDecoder"):
        trainer(tmp_path, [callback]).validate(ImageMethod(TEMPLATES), datamodule=Sentences())
    with pytest.raises(ValueError, match=r"returned \(4, 1, 2, 2\) torch.float32, not token ids"):
        trainer(tmp_path, [callback]).validate(FloatGenerator(TEMPLATES), datamodule=Sentences())
    with pytest.raises(ValueError, match="decoding=.greedy. sets the decoder's `decoding`"):
        trainer(tmp_path, [TextGenerationMetrics(decoding="greedy")]).validate(
            FixedSentences(TEMPLATES), datamodule=Sentences()
        )
    with pytest.raises(ValueError, match=r"lm has unknown settings \['hidden'\]"):
        TextGenerationMetrics(lm={"hidden": 3})


# ------------------------------------------------------------------------------ two ranks
class RecordMetrics(L.Callback):
    """Each rank writes what it logged to ``<folder>/rank<r>.json``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        values = {key: float(value) for key, value in trainer.callback_metrics.items()}
        with open(os.path.join(self.folder, f"rank{trainer.global_rank}.json"), "w") as file:
            json.dump(values, file)


# rank 0 reads the first 21 rows (one short sentence), rank 1 the next 21 (longer ones): a rank
# that scored its own rows only, or a gather that dropped or misplaced rows, would differ
DDP_POOL = [TEMPLATES[0]] * 21 + [TEMPLATES[1 + i % 3] for i in range(21)]
DDP_SAMPLES = 41  # odd: 21 per rank, the gathered 42 cut to 41


def validate_on(tmp_path, devices: int, strategy: object = "auto") -> dict[str, float]:
    tmp_path.mkdir()
    callback = TextGenerationMetrics(n_samples=DDP_SAMPLES, lm=CALLBACK_LM, batch_size=8, log_samples=3)
    t = trainer(tmp_path, [callback, RecordMetrics(str(tmp_path))], devices=devices, strategy=strategy)
    t.validate(FixedSentences(DDP_POOL, rank_stride=21), datamodule=Sentences())
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(devices)]
    for other in ranks[1:]:
        assert other == ranks[0], "the ranks logged different values"
    return ranks[0]


@pytest.mark.slow
def test_two_process_ddp_logs_the_single_process_values(tmp_path, one_thread) -> None:
    single = validate_on(tmp_path / "one", devices=1)
    double = validate_on(tmp_path / "two", devices=2, strategy=forked_ranks())
    assert single["val/distinct_sentences"] == pytest.approx(4 / 41)
    for key in ("val/fppl", "val/rppl", "val/distinct_sentences"):
        assert double[key] == pytest.approx(single[key], rel=1e-6), key
    written = (tmp_path / "two" / "samples" / "validate_epoch0000.txt").read_text().splitlines()  # trainer.validate
    assert written == [" ".join(TEMPLATES[0])] * 3


def test_a_latent_ebm_with_a_text_decoder_is_scored(tmp_path, one_thread) -> None:
    """The real path: LatentEBM.generate(n, generator=eval stream, raw=True) under inference mode,
    with the callback's decoding override undone afterwards."""
    net = LSTMTextGenerator(len(VOCABULARY), latent_dim=4, embed_dim=8, hidden_dim=16)
    decoder = CategoricalDecoder(net, max_length=8, decoding="sample")
    prior = TiltedGaussianPrior(4, EnergyMLP(4, hidden=8), sampler=Langevin(3, 0.1))
    model = LatentEBM(decoder, prior, posterior_sampler=Langevin(3, 0.1))
    callback = TextGenerationMetrics(n_samples=20, decoding="greedy", lm=dict(CALLBACK_LM, epochs=2), log_samples=3)
    trainer(tmp_path, [callback], limit_train_batches=1).fit(model, datamodule=Sentences())
    assert decoder.decoding == "sample"
    assert set(callback.last_metrics) == {"fppl", "rppl", "distinct_sentences"}
    assert all(math.isfinite(value) and value > 0 for value in callback.last_metrics.values())
    assert len((tmp_path / "samples" / "val_epoch0000.txt").read_text().splitlines()) == 3


def test_a_validate_outside_fit_leaves_the_fits_sample_files_alone(tmp_path) -> None:
    from lightning.pytorch.trainer.states import TrainerFn

    callback = TextGenerationMetrics()
    fitting = SimpleNamespace(loggers=[], current_epoch=0, state=SimpleNamespace(fn=TrainerFn.FITTING))
    callback._log_samples(fitting, ["the fit's sentence"], "val", folder=str(tmp_path))
    validating = SimpleNamespace(loggers=[], current_epoch=0, state=SimpleNamespace(fn=TrainerFn.VALIDATING))
    callback._log_samples(validating, ["lebm validate's sentence"], "val", folder=str(tmp_path))
    assert (tmp_path / "samples" / "val_epoch0000.txt").read_text() == "the fit's sentence\n"
    assert (tmp_path / "samples" / "validate_epoch0000.txt").read_text() == "lebm validate's sentence\n"
