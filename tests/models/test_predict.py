"""Prediction (device: CPU): ``predict_step`` and ``forward`` of every method (``cases.CASES``) and the
text model, the prediction writer's files, the data modules' prediction sources and ``lebm predict``.

What each method returns for a data batch (``inputs``, ``latents``, ``reconstructions``, ``scores``,
``labels``) and for a sample request (``samples``, ``indices``), under Lightning's default
``inference_mode=True`` and without it; that the values are the user API's (``infer``,
``reconstruct``, ``score``) drawn from the evaluation stream, so the same seed predicts the same
values; and the files ``lebm predict`` leaves in the run folder.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from cases import CASES, DATA, MethodCase
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import PredictionWriter
from lebm.callbacks.predictions import merge_predictions
from lebm.data import ImageDataModule, MixtureDataModule, SampleRequest, SampleRequests, TextDataModule
from lebm.data.errors import DataError
from lebm.models import LatentEBM, Method, TiltedGaussianPrior
from lebm.nets import CategoricalDecoder, EnergyMLP, LSTMTextGenerator
from lebm.samplers import Langevin
from tests.helpers.cli_runner import REPO, run_cli
from tests.helpers.subprocesses import HANG_SECONDS
from tests.helpers.trainers import quiet_trainer

ids = [case.name for case in CASES]
DATA_KEYS = {"inputs", "latents", "reconstructions", "scores", "labels"}


def labelled_data(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (n, 2), y (n,))``: the contract suite's two-mode toy with its mode as the label."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=generator)
    x = torch.stack([(y * 2.0 - 1.0) * 1.5, torch.zeros(n)], 1) + 0.2 * torch.randn(n, DATA, generator=generator)
    return x, y


def labelled_loader(batch_size: int = 5) -> DataLoader:
    return DataLoader(TensorDataset(*labelled_data()), batch_size=batch_size, generator=torch.Generator())


def predictor(**settings: Any) -> L.Trainer:
    return quiet_trainer(accelerator="cpu", **settings)


def predict_both(model: Method, **settings: Any) -> list[dict[str, Any]]:
    """Data batches, then sample requests (7 in batches of 4), with one trainer."""
    trainer = predictor(**settings)
    return trainer.predict(model, labelled_loader()) + trainer.predict(model, datamodule=SampleRequests(7, 4))


def built(case: MethodCase, seed: int = 0) -> Method:
    L.seed_everything(seed, verbose=False)
    return case.build()


def assert_same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for first, second in zip(a, b, strict=True):
        assert first.keys() == second.keys()
        for key, value in first.items():
            assert torch.equal(value, second[key]), key


# ----------------------------------------------------------------------------- every method
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_predict_step_structure_and_reproducibility(case: MethodCase) -> None:
    """Under Lightning's default ``inference_mode=True``: data batches give ``inputs``, ``latents``,
    ``reconstructions``, ``scores`` and ``labels``; sample requests give ``samples`` and ``indices``;
    the same seed predicts the same values (a fresh model each time, as sampling may move buffers)."""
    predictions = predict_both(built(case))
    data, samples = predictions[:2], predictions[2:]
    x, y = labelled_data()
    for index, batch in enumerate(data):
        assert set(batch) == DATA_KEYS
        rows = slice(5 * index, 5 * index + 5)
        assert torch.equal(batch["inputs"], x[rows]) and torch.equal(batch["labels"], y[rows])
        assert batch["latents"].shape == (5, case.latent_dim)
        assert batch["reconstructions"].shape == (5, DATA) and batch["scores"].shape == (5,)
        for value in batch.values():
            assert not value.is_inference() and (not value.is_floating_point() or bool(torch.isfinite(value).all()))
    assert [set(batch) for batch in samples] == [{"samples", "indices"}] * 2
    assert [tuple(batch["samples"].shape) for batch in samples] == [(4, DATA), (3, DATA)]
    assert torch.equal(torch.cat([batch["indices"] for batch in samples]), torch.arange(7))

    assert_same(predictions, predict_both(built(case)))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_predictions_are_the_user_api_drawn_from_the_evaluation_stream(case: MethodCase) -> None:
    """``latents`` = ``infer(x)``, ``reconstructions`` = ``reconstruct(x)``, ``scores`` = ``score(x)``,
    each with the evaluation stream as reseeded at the start of the predict epoch (here without
    inference mode, as the ``lebm`` command runs)."""
    model = built(case)
    x, y = labelled_data()
    (batch,) = predictor(inference_mode=False).predict(model, DataLoader(TensorDataset(x, y), batch_size=len(x)))
    model.eval()

    def stream() -> torch.Generator:
        model.random_streams.start_evaluation(model.device, 0, model.global_step)
        return model.eval_generator

    torch.testing.assert_close(batch["latents"], model.infer(x, generator=stream()), rtol=0, atol=0)
    torch.testing.assert_close(batch["reconstructions"], model.reconstruct(x, generator=stream()), rtol=0, atol=0)
    torch.testing.assert_close(batch["scores"], model.score(x, generator=stream()), rtol=0, atol=0)
    forward = model(x)  # torch's global RNG: another draw than the stream's, the same structure
    assert set(forward) == DATA_KEYS - {"labels"} and torch.equal(forward["inputs"], x)


def test_the_evaluation_stream_follows_the_run_seed() -> None:
    """One model: the same run seed predicts the same latents, another seed other latents."""
    model = built(CASES[0])  # LatentEBM: noise + Langevin, every latent drawn from the stream
    latents = []
    for seed in (0, 0, 1):
        L.seed_everything(seed, verbose=False)
        latents.append(predictor().predict(model, labelled_loader())[0]["latents"])
    assert torch.equal(latents[0], latents[1]) and not torch.equal(latents[0], latents[2])


def test_bad_observations_are_refused_with_the_user_apis_message() -> None:
    model = built(CASES[0])
    x = torch.randn(4, DATA)
    x[1, 0] = float("nan")
    with pytest.raises(DataError, match=r"batch 0 cannot be read: observations hold NaN"):
        predictor().predict(model, DataLoader(TensorDataset(x), batch_size=4))
    with pytest.raises(ValueError, match="observations hold NaN"):
        model(x)


def test_export_names_the_generator_and_torch_compile_runs_eagerly_with_one_warning() -> None:
    """``to_torchscript``/``to_onnx`` fail with one line naming ``decoder.net``, which exports;
    ``torch.compile(model)`` warns once and predicts as the eager model does."""
    model = built(CASES[0]).eval()
    for export in (model.to_torchscript, lambda: model.to_onnx("model.onnx")):
        with pytest.raises(NotImplementedError, match=r"torch\.export\.export\(model\.decoder\.net") as error:
            export()
        assert "\n" not in str(error.value)
    z = torch.randn(5, 3)
    exported = torch.export.export(model.decoder.net, (z,))
    torch.testing.assert_close(exported.module()(z), model.decoder.net(z))

    compiled = torch.compile(model)
    x = torch.randn(4, DATA)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(5)
        first = compiled(x)
        compiled(x[:3])
    eager_warnings = [w for w in caught if "runs LatentEBM's forward eagerly" in str(w.message)]
    assert len(eager_warnings) == 1 and "FastNets" in str(eager_warnings[0].message)
    torch.manual_seed(5)
    assert_same([first], [model(x)])


class ScoreOnly(Method):
    """A user's method on the bare base: a noisy score and a generator, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(DATA, 1)

    def generate(self, n: int, **kwargs: Any) -> torch.Tensor:
        return torch.randn(n, DATA)

    def score(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.net(x).squeeze(1).detach() + torch.randn(len(x))


def test_a_method_on_the_bare_base_predicts_what_its_user_api_implements() -> None:
    """The base's defaults: the parts of the user API a method implements, torch's global RNG seeded
    from the evaluation stream (reproducible, and the global RNG left as it was)."""
    runs = []
    for _ in range(2):
        L.seed_everything(0, verbose=False)
        model = ScoreOnly()
        state = torch.random.get_rng_state()
        runs.append(predict_both(model))
        assert torch.equal(torch.random.get_rng_state(), state)
    first = runs[0]
    assert set(first[0]) == {"inputs", "scores", "labels"} and first[0]["scores"].shape == (5,)
    assert first[2]["samples"].shape == (4, DATA)
    assert_same(*runs)


# ------------------------------------------------------------------------------ the writer
def test_the_writer_writes_a_merged_file_scores_and_image_grids(tmp_path: Path) -> None:
    writer = PredictionWriter(grid_size=16, nrow=4)
    x = torch.rand(20, 1, 8, 8) * 2 - 1
    parts = [
        {"inputs": x[:12], "reconstructions": -x[:12], "scores": torch.arange(12.0), "labels": torch.ones(12)},
        {"inputs": x[12:], "reconstructions": -x[12:], "scores": torch.arange(8.0), "labels": torch.zeros(8)},
    ]
    for part, start in zip(parts, (0, 12), strict=True):
        part["labels"] = part["labels"].long()
        part["indices"] = torch.arange(start, start + len(part["scores"]))
    written = writer.write(str(tmp_path), merge_predictions(parts))
    assert sorted(Path(p).name for p in written) == ["predictions.pt", "reconstructions.png", "scores.csv"]
    merged = torch.load(tmp_path / "predictions.pt", weights_only=True)
    assert torch.equal(merged["inputs"], x) and merged["scores"].shape == (20,)
    rows = list(csv.reader((tmp_path / "scores.csv").open()))
    assert rows[0] == ["index", "score", "label"] and rows[13] == ["12", "0", "0"] and len(rows) == 21
    grid = Image.open(tmp_path / "reconstructions.png")  # 16 images over their 16 reconstructions, 4 a row
    assert grid.size[0] < grid.size[1] and grid.size[1] == 2 * grid.size[0] - 2

    writer.write(str(tmp_path / "samples"), {"samples": x, "indices": torch.arange(20)})
    assert sorted(path.name for path in (tmp_path / "samples").iterdir()) == ["predictions.pt", "samples.png"]


def test_merging_pads_token_ids_and_joins_sentences() -> None:
    parts = [
        {"inputs": torch.tensor([[1, 5, 2]]), "input_text": ["a"], "scores": torch.tensor([1.0])},
        {"inputs": torch.tensor([[1, 5, 6, 7, 2]]), "input_text": ["b c d"], "scores": torch.tensor([2.0])},
    ]
    merged = merge_predictions(parts)
    assert torch.equal(merged["inputs"], torch.tensor([[1, 5, 2, 0, 0], [1, 5, 6, 7, 2]]))
    assert merged["input_text"] == ["a", "b c d"] and torch.equal(merged["scores"], torch.tensor([1.0, 2.0]))


def test_the_writer_in_a_trainer_writes_into_the_run_folder(tmp_path: Path) -> None:
    model = built(CASES[2])  # DualMCMC: scored by its data-space energy
    writer = PredictionWriter()
    trainer = predictor(callbacks=[writer], default_root_dir=str(tmp_path))
    trainer.predict(model, labelled_loader(), return_predictions=False)
    folder = tmp_path / "predictions"
    assert sorted(path.name for path in folder.iterdir()) == ["predictions.pt", "scores.csv"]  # 2-d data: no grid
    merged = torch.load(folder / "predictions.pt", weights_only=True)
    assert set(merged) == DATA_KEYS | {"indices"} and torch.equal(merged["indices"], torch.arange(10))
    torch.testing.assert_close(merged["scores"], model.score(labelled_data()[0]))
    trainer.predict(model, datamodule=SampleRequests(3), return_predictions=False)
    assert sorted(path.name for path in folder.iterdir()) == ["predictions.pt"]  # the last predict's files only


# ------------------------------------------------------------------------- the text model
def text_model() -> LatentEBM:
    L.seed_everything(0, verbose=False)
    decoder = CategoricalDecoder(LSTMTextGenerator(40, 4, embed_dim=8, hidden_dim=16), max_length=8)
    prior = TiltedGaussianPrior(4, EnergyMLP(4, hidden=16), sampler=Langevin(5, 0.4))
    return LatentEBM(decoder, prior, posterior_sampler=Langevin(5, 0.3))


def templates(**settings: Any) -> TextDataModule:
    options = dict(dataset="templates", n_train=32, n_val=8, n_test=12, max_vocab_size=40, batch_size=8)
    return TextDataModule(**(options | settings))


def test_the_text_model_predicts_token_ids_and_sentences(tmp_path: Path) -> None:
    model = text_model()
    writer = PredictionWriter()
    trainer = predictor(callbacks=[writer], default_root_dir=str(tmp_path))
    first, second = trainer.predict(model, templates())  # the test split: 12 sentences, 8 a batch
    assert set(first) == DATA_KEYS - {"labels"} | {"input_text", "reconstruction_text"}
    assert first["inputs"].dtype == torch.long and first["latents"].shape == (8, 4) and first["scores"].shape == (8,)
    assert first["input_text"] == model.decoder.present(first["inputs"]) and len(second["input_text"]) == 4
    assert all(isinstance(s, str) for s in first["reconstruction_text"])
    folder = tmp_path / "predictions"
    lines = (folder / "reconstructions.txt").read_text().splitlines()
    assert lines[0] == "input\treconstruction\tscore" and len(lines) == 13
    assert lines[1].split("\t")[0] == first["input_text"][0]

    (samples,) = trainer.predict(model, templates(predict_samples=5))
    assert samples["samples"].dtype == torch.long and len(samples["sample_text"]) == 5
    assert (folder / "samples.txt").read_text().splitlines() == samples["sample_text"]
    assert not (folder / "reconstructions.txt").exists()

    prediction = model(["the cat sees", "the dog likes"])  # forward takes what the user API takes
    assert prediction["input_text"] == ["the cat sees", "the dog likes"] and prediction["latents"].shape == (2, 4)


# ------------------------------------------------------------------------ prediction sources
def test_data_modules_predict_on_the_test_split_or_on_sample_requests() -> None:
    mixture = MixtureDataModule(n_train=20, n_val=6, n_test=7, batch_size=4)
    batches = list(mixture.predict_dataloader())
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.cat([b[0] for b in mixture.test_dataloader()]))
    requests = list(MixtureDataModule(n_train=20, batch_size=4, predict_samples=6).predict_dataloader())
    assert all(isinstance(r, SampleRequest) for r in requests) and [len(r) for r in requests] == [4, 2]
    digits = ImageDataModule("digits", eval_batch_size=50, predict_samples=3)
    assert [len(r) for r in digits.predict_dataloader()] == [3]
    with pytest.raises(ValueError, match="predict_samples must be a whole number >= 0"):
        MixtureDataModule(predict_samples=-1)
    with pytest.raises(DataError, match="only asks a model for generated samples"):
        SampleRequests(4).train_dataloader()


# -------------------------------------------------------------------------------- lebm predict
QUICK_FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0"]
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_lebm_predict_writes_predictions_into_the_run_folder(tmp_path: Path) -> None:
    """After a tiny fit of the quickstart (8x8 digits): the test split's predictions, then 8 samples."""
    run = tmp_path / "run"
    common = ["-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run), *QUIET]
    run_cli("fit", *common, *QUICK_FIT)
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    recipe_logger = ["-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run)]  # W&B, unless asked: none
    run_cli("predict", *recipe_logger, "--ckpt_path", checkpoint, "--trainer.limit_predict_batches", "1")
    folder = run / "predictions"
    assert sorted(path.name for path in folder.iterdir()) == ["predictions.pt", "reconstructions.png", "scores.csv"]
    merged = torch.load(folder / "predictions.pt", weights_only=True)
    batch = len(merged["scores"])
    assert merged["inputs"].shape == merged["reconstructions"].shape == (batch, 1, 8, 8)
    assert merged["latents"].shape[0] == merged["labels"].shape[0] == batch > 0
    assert (run / "config_predict.yaml").exists() and (run / "config.yaml").exists()

    run_cli("predict", *common, "--ckpt_path", checkpoint, "--data.init_args.predict_samples", "8")
    assert sorted(path.name for path in folder.iterdir()) == ["predictions.pt", "samples.png"]
    assert torch.load(folder / "predictions.pt", weights_only=True)["samples"].shape == (8, 1, 8, 8)

    assert not (run / "wandb").exists()  # predict opens no logger run in the fit's folder unless asked


def test_lebm_predict_without_a_checkpoint_is_refused_and_keeps_the_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "predictions").mkdir()
    (tmp_path / "predictions" / "predictions.pt").write_bytes(b"earlier")
    args = ["-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"]
    with pytest.raises(SystemExit) as stopped:
        run_cli("predict", *args, "--data.init_args.predict_samples", "2")
    assert stopped.value.code == 2
    assert "lebm predict needs --ckpt_path" in capsys.readouterr().err
    assert (tmp_path / "predictions" / "predictions.pt").read_bytes() == b"earlier"


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_lebm_predict_refuses_data_without_prediction_batches_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(tmp_path), *QUIET]
    run_cli("fit", *args, *QUICK_FIT)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        checkpoint = str(tmp_path / "checkpoints" / "last.ckpt")
        run_cli("predict", *args, "--ckpt_path", checkpoint, "--data", "tests.helpers.cli_runner.WithoutPredictions")
    assert stopped.value.code == 2
    assert "the data module WithoutPredictions has no predict_dataloader" in capsys.readouterr().err


# ----------------------------------------------------------------------- slow: every recipe
def lebm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lebm", *args], cwd=REPO, capture_output=True, text=True, timeout=HANG_SECONDS
    )


QUICKSTARTS = {
    "LatentEBM": ("recipes/quickstart.yaml", "png"),
    "MultiStageNCE": ("recipes/multistage_nce/quickstart.yaml", "png"),
    "DualMCMC": ("recipes/dual_mcmc/quickstart.yaml", "png"),
    "JointHierarchicalEBM": ("recipes/hierarchical/quickstart.yaml", "png"),
    "text": ("recipes/latent_ebm/text_quickstart.yaml", "txt"),
}


#: The method whose samples are predicted through the console script, in a process of its own.
THROUGH_THE_CONSOLE = "LatentEBM"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(QUICKSTARTS))
def test_lebm_predict_for_every_method_and_the_text_model(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fit, predict the test split, predict samples. For :data:`THROUGH_THE_CONSOLE`, the samples go
    through the console script, as a user runs it, in a process of its own (no traceback); the rest
    runs the same command in this process (a subprocess each costs about 13 s of imports and
    parsing, and the console script's path is the same for every method)."""
    recipe, kind = QUICKSTARTS[name]
    run = tmp_path / "run"
    common = ["-c", recipe, "--trainer.default_root_dir", str(run), *QUIET]
    run_cli("fit", *common, *QUICK_FIT, "--trainer.limit_train_batches", "4")  # MultiStageNCE: 4 stages
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    run_cli("predict", *common, "--ckpt_path", checkpoint, "--trainer.limit_predict_batches", "1")
    in_process = capsys.readouterr().err
    assert f"predictions written to {run / 'predictions'}" in in_process
    assert (run / "predictions" / f"reconstructions.{kind}").exists()
    assert (run / "predictions" / "predictions.pt").exists()
    samples = ["predict", *common, "--ckpt_path", checkpoint, "--trainer.limit_predict_batches", "1"]
    samples += ["--data.init_args.predict_samples", "6"]
    if name == THROUGH_THE_CONSOLE:
        predicted = lebm(*samples)
        assert predicted.returncode == 0 and "Traceback" not in predicted.stderr, predicted.stderr[-3000:]
        errors = predicted.stderr
    else:
        run_cli(*samples)
        errors = capsys.readouterr().err
    assert f"predictions written to {run / 'predictions'}" in errors
    assert (run / "predictions" / f"samples.{kind}").exists()
    assert (run / "predictions" / "predictions.pt").exists()
