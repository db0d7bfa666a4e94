"""Checkpoints say which lebm wrote them (device: CPU): every checkpoint stores ``lebm.__version__``;
loading one of a newer lebm (``lebm.load``, ``Method.load_from_checkpoint``, a Trainer's
``ckpt_path``, the CLI's ``--ckpt_path``) says so and what to install; one naming a class this lebm
lacks names the class, the lebm that wrote it and what to install; a ``map_location`` naming a device
this machine lacks gets lebm's one line instead of torch's text."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lebm
from lebm.checkpoints import VERSION_KEY, CheckpointError
from lebm.cli.resume_check import check_resume
from lebm.models import LatentEBM
from lebm.models.loading import load_method
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer

NEWER = "99.0.0"


def small_model() -> LatentEBM:
    from lebm.models import TiltedGaussianPrior

    decoder = GaussianDecoder(MLPGenerator(4, [2], hidden=8, out_activation=None), sigma=0.3)
    prior = TiltedGaussianPrior(4, EnergyMLP(4, hidden=8), sampler=Langevin(2, 0.4))
    return LatentEBM(decoder, prior, posterior_sampler=Langevin(2, 0.1))


def loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=8)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of one training step, written by this lebm."""
    folder = tmp_path_factory.mktemp("versions")
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, accelerator="cpu", inference_mode=False)
    trainer.fit(small_model(), loader())
    path = folder / "written.ckpt"
    trainer.save_checkpoint(path)
    return path


def rewritten(saved: Path, folder: Path, name: str, change: Any) -> Path:
    """A copy of ``saved`` with ``change(checkpoint)`` applied."""
    checkpoint = torch.load(saved, map_location="cpu", weights_only=False)
    change(checkpoint)
    path = folder / name
    torch.save(checkpoint, path)
    return path


def written_by(version: str | None) -> Any:
    def change(checkpoint: dict[str, Any]) -> None:
        if version is None:
            checkpoint.pop(VERSION_KEY)
        else:
            checkpoint[VERSION_KEY] = version

    return change


def test_every_checkpoint_says_which_lebm_wrote_it(saved: Path) -> None:
    assert torch.load(saved, weights_only=True)[VERSION_KEY] == lebm.__version__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # this lebm's own checkpoint: no word about versions
        assert lebm.load(saved).checkpoint_writer == lebm.__version__


def test_a_checkpoint_of_a_newer_lebm_is_named_once_at_the_callers_line(saved: Path, tmp_path: Path) -> None:
    path = rewritten(saved, tmp_path, "newer.ckpt", written_by(NEWER))
    expected = (
        f"{path} was written by lebm {NEWER}, newer than this lebm ({lebm.__version__}): it may hold settings or "
        f"parts this version reads differently or not at all; install lebm {NEWER} or newer to use it"
    )
    for load in (lambda: lebm.load(path), lambda: LatentEBM.load_from_checkpoint(path)):
        with pytest.warns(UserWarning) as caught:
            load()
        said = [w for w in caught if "was written by lebm" in str(w.message)]
        assert len(said) == 1 and str(said[0].message).startswith(expected), [str(w.message) for w in caught]
        assert said[0].filename == __file__  # the user's line, not lebm's or Lightning's
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, accelerator="cpu", inference_mode=False)
    with pytest.warns(UserWarning) as caught:
        trainer.fit(small_model(), loader(), ckpt_path=path)
    said = [w for w in caught if "was written by lebm" in str(w.message)]
    assert len(said) == 1 and str(said[0].message).startswith(expected)


def test_the_command_names_a_newer_checkpoint_in_one_line(saved: Path, tmp_path: Path, capsys) -> None:
    path = rewritten(saved, tmp_path, "newer.ckpt", written_by(NEWER))
    model = small_model()
    check_resume(model, str(path), "test")
    assert capsys.readouterr().err.startswith(f"lebm: {path} was written by lebm {NEWER}, newer than this lebm")
    assert model.said_checkpoint_writer  # Lightning's load of it does not say it again


def set_class_path(key: str, class_path: str) -> Any:
    def change(checkpoint: dict[str, Any]) -> None:
        if key == "_class_path":
            checkpoint["hyper_parameters"]["_class_path"] = class_path
        else:
            checkpoint["hyper_parameters"][key]["class_path"] = class_path

    return change


FUTURE = "lebm.samplers.FutureSampler"
MINE = "mypackage.samplers.MySampler"


@pytest.mark.parametrize(
    ("version", "class_path", "expected"),
    [
        (NEWER, FUTURE, f"the checkpoint was written by lebm {NEWER}; install lebm {NEWER} or newer"),
        (None, FUTURE, "(the checkpoint was written by an lebm of 0.2.0 or earlier, which did not"),
        ("0.1.0", FUTURE, "(the checkpoint was written by lebm 0.1.0): install the lebm that wrote it (0.1.0)"),
        (NEWER, MINE, f"written by lebm {NEWER}; install lebm {NEWER} or newer to load it"),
        (None, MINE, "did not record its version): if the class is yours, make its module importable"),
    ],
)  # fmt: skip
def test_a_component_class_this_lebm_lacks_is_named_with_its_writer_and_what_to_install(
    saved: Path, tmp_path: Path, version: str | None, class_path: str, expected: str
) -> None:
    def change(checkpoint: dict[str, Any]) -> None:
        written_by(version)(checkpoint)
        set_class_path("posterior_sampler", class_path)(checkpoint)

    path = rewritten(saved, tmp_path, "missing.ckpt", change)
    lacks = f"{path} names {class_path}, which this lebm ({lebm.__version__}) does not have"
    for load in (lambda: LatentEBM.load_from_checkpoint(path), lambda: lebm.load(path)):
        with pytest.raises(CheckpointError) as failed:
            load()
        message = str(failed.value)
        assert message.startswith(lacks) and expected in message and "\n" not in message, message


def test_a_method_class_this_lebm_lacks_is_named_by_load_and_by_the_command(
    saved: Path, tmp_path: Path, capsys
) -> None:
    def change(checkpoint: dict[str, Any]) -> None:
        written_by(NEWER)(checkpoint)
        set_class_path("_class_path", "lebm.models.FutureMethod")(checkpoint)

    path = rewritten(saved, tmp_path, "future_method.ckpt", change)
    expected = (
        f"{path} names lebm.models.FutureMethod, which this lebm ({lebm.__version__}) does not have: the checkpoint "
        f"was written by lebm {NEWER}; install lebm {NEWER} or newer to load it"
    )
    with pytest.raises(CheckpointError) as failed:
        lebm.load(path)
    assert str(failed.value) == expected
    with pytest.raises(SystemExit):
        check_resume(small_model(), str(path), "fit")
    assert f"lebm: error: {expected}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("map_location", "expected"),
    [
        ("cuda", "map_location='cuda' but this machine has no CUDA device: pass map_location='cpu'"),
        (torch.device("cuda", 1), "map_location=cuda:1 but this machine has no CUDA device: pass map_location='cpu'"),
        ({"cpu": "cuda:0"}, "map_location='cuda:0' but this machine has no CUDA device: pass map_location='cpu'"),
        ("mps", "map_location='mps' but this machine has no Apple MPS device: pass map_location='cpu'"),
        ("gpu", "map_location='gpu' is not a device: pass map_location='cpu' (or 'cuda', 'cuda:1', ...)"),
    ],
)
def test_a_map_location_this_machine_lacks_gets_lebms_line(saved: Path, map_location: Any, expected: str) -> None:
    if str(map_location) == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    for load in (lebm.load, LatentEBM.load_from_checkpoint, load_method):
        with pytest.raises(ValueError) as failed:
            load(saved, map_location=map_location)
        assert str(failed.value) == expected
    assert lebm.load(saved, map_location="cpu").device == torch.device("cpu")


def test_loading_stays_a_call_on_the_class(saved: Path) -> None:
    """As Lightning's: ``model.load_from_checkpoint(path)`` would return a new model and leave ``model``."""
    model = small_model()
    with pytest.raises(TypeError, match=r"LatentEBM.load_from_checkpoint makes a new model; .* \(model = LatentEBM"):
        model.load_from_checkpoint(saved)


def test_a_checkpoint_of_another_latent_size_is_refused_in_one_line_by_any_trainer(tmp_path: Path) -> None:
    """CPU. A Trainer's ``ckpt_path`` holding weights of other shapes (latent size 4 against 3): one
    line naming the differing weights and the way out, raised as the checkpoint loads, where torch
    prints a many-line size mismatch; the check is the method's, so a plain Trainer has it too."""
    trainer = quiet_trainer(max_steps=1, accelerator="cpu", limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer.fit(small_model(), loader())
    trainer.save_checkpoint(tmp_path / "wide.ckpt")
    decoder = GaussianDecoder(MLPGenerator(3, [2], hidden=8, out_activation=None), sigma=0.3)
    from lebm.models import TiltedGaussianPrior

    narrow = LatentEBM(decoder, TiltedGaussianPrior(3, EnergyMLP(3, hidden=8)), posterior_sampler=Langevin(2, 0.1))
    with pytest.raises(ValueError) as refused:
        quiet_trainer(accelerator="cpu").validate(narrow, loader(), ckpt_path=str(tmp_path / "wide.ckpt"))
    said = str(refused.value)
    assert "\n" not in said and f"has another architecture than {tmp_path / 'wide.ckpt'}" in said, said
    assert "decoder.net.net.0.weight: (8, 4) in the checkpoint, (8, 3) in the recipe" in said and "lebm.load" in said
