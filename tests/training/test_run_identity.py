"""A run's identity in its checkpoints (device: CPU): one id per run, kept by a resume and new for a
fresh fit, the step, and the fingerprint of the data it trained on; every lebm DataModule declares
the settings that make it up."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch

from lebm.data import ImageDataModule, MixtureDataModule, MNISTAnomalyDataModule, TextDataModule
from lebm.data.fingerprint import data_fingerprint, differing_settings
from lebm.data.tasks.ood import OutOfDistributionDataModule
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin
from lebm.training.run_identity import CHECKPOINT_KEY
from tests.helpers.ddp import forked_ranks
from tests.helpers.trainers import quiet_trainer

DATAMODULES = [ImageDataModule, MNISTAnomalyDataModule, OutOfDistributionDataModule, TextDataModule, MixtureDataModule]
#: Arguments that decide how examples are read, never which: no fingerprint holds them.
READING_ONLY = {"root", "out_root", "batch_size", "eval_batch_size", "num_workers", "download", "predict_samples"}


def model() -> LatentEBM:
    torch.manual_seed(0)
    return LatentEBM(
        GaussianDecoder(MLPGenerator(3, [2], hidden=8, out_activation=None), 0.3),
        TiltedGaussianPrior(3, EnergyMLP(3, hidden=8), sampler=Langevin(2, 0.4)),
        posterior_sampler=Langevin(2, 0.1),
    )


def data(seed: int = 0) -> MixtureDataModule:
    return MixtureDataModule(n_train=32, n_val=8, n_test=8, batch_size=8, seed=seed)


def fit(folder: Path, steps: int, ckpt_path: str | None = None, seed: int = 0) -> dict:
    """Fit to ``steps`` updates, saving ``folder/last.ckpt``; the checkpoint's identity record."""
    trainer = quiet_trainer(max_steps=steps, accelerator="cpu", limit_val_batches=0)
    trainer.fit(model(), datamodule=data(seed), ckpt_path=ckpt_path)
    trainer.save_checkpoint(folder / "last.ckpt")
    return torch.load(folder / "last.ckpt", weights_only=False)[CHECKPOINT_KEY]


def test_a_checkpoint_carries_its_run_id_step_and_data(tmp_path: Path) -> None:
    record = fit(tmp_path, 3)
    assert isinstance(record["id"], str) and len(record["id"]) == 12
    assert record["step"] == 3
    assert record["data"]["class_path"].endswith("MixtureDataModule")
    assert record["data"]["settings"]["seed"] == 0 and record["data"]["settings"]["n_train"] == 32


def test_a_resumed_fit_keeps_the_run_id_and_a_fresh_fit_draws_a_new_one(tmp_path: Path) -> None:
    first = fit(tmp_path / "a", 2)
    resumed = fit(tmp_path / "b", 4, ckpt_path=str(tmp_path / "a" / "last.ckpt"))
    fresh = fit(tmp_path / "c", 2)
    assert resumed["id"] == first["id"] and resumed["step"] == 4
    assert fresh["id"] != first["id"]


def test_other_data_is_named_setting_by_setting() -> None:
    trained = data_fingerprint(data(seed=0))
    same = {"class_path": "lebm.data.MixtureDataModule", "init_args": {**dict(data(seed=0).hparams)}}
    other = {"class_path": "lebm.data.toy.MixtureDataModule", "init_args": {**dict(data(seed=7).hparams)}}
    other["init_args"]["batch_size"] = 64  # read differently, the same examples
    assert differing_settings(trained, same) == []
    assert differing_settings(trained, other) == [("seed", 0, 7)]
    a_list = {**trained, "settings": {"radius": [1, 2]}}  # a YAML list against a parsed tuple: the same value
    assert differing_settings(a_list, {**same, "init_args": {"radius": (1, 2)}}) == []
    assert differing_settings(a_list, {**same, "init_args": {"radius": [1.0, 2.0]}}) == []  # 1 and 1.0: one value


@pytest.mark.parametrize("kind", DATAMODULES, ids=lambda kind: kind.__name__)
def test_every_datamodule_declares_its_split_settings_among_its_arguments(kind: type) -> None:
    arguments = set(inspect.signature(kind.__init__).parameters) - {"self"}
    declared = set(kind.split_settings)
    assert declared and declared <= arguments, declared - arguments
    assert not declared & READING_ONLY
    assert len(arguments - declared - READING_ONLY) <= 2, arguments - declared - READING_ONLY  # augmentation, lenience


def test_a_datamodule_built_elsewhere_keeps_its_arguments_as_given() -> None:
    module = L.LightningDataModule()
    expected = {"class_path": "lightning.pytorch.core.datamodule.LightningDataModule", "settings": {}, "content": None}
    assert data_fingerprint(module) == expected
    assert data_fingerprint(None) is None


@pytest.mark.parametrize("ckpt_path", ["last", "auto"])
def test_a_resume_picks_the_folders_own_run_and_names_another_runs_checkpoint(
    ckpt_path: str, tmp_path: Path, capsys
) -> None:
    """A smoke test pointed at a run folder leaves ``last-v1.ckpt``, newer and (here) holding more
    updates, under its own run id: ``--ckpt_path last`` and ``auto`` resume the run that
    ``last.ckpt`` names and say which file they passed over."""
    from lebm.cli.run_folder import fit_checkpoint

    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True)
    own = fit(checkpoints, 2)
    smoke = tmp_path / "smoke"
    smoke.mkdir()
    other = fit(smoke, 3)
    (smoke / "last.ckpt").rename(checkpoints / "last-v1.ckpt")
    assert own["id"] != other["id"]
    chosen = fit_checkpoint(str(run), ckpt_path, overwrite=False)
    assert chosen == str(checkpoints / "last.ckpt")
    said = capsys.readouterr().err
    assert "last-v1.ckpt" in said and other["id"] in said and said.count("\n") == 1, said


def test_weights_loaded_in_python_refuse_other_data_unless_on_purpose(tmp_path: Path) -> None:
    """``lebm.load`` then ``trainer.test`` with a DataModule of another split seed: one line naming
    the setting; ``model.other_data_on_purpose = True`` scores it."""
    import lebm

    fit(tmp_path, 2, seed=0)
    model = lebm.load(str(tmp_path / "last.ckpt"))
    with pytest.raises(ValueError, match=r"seed 0 in training, 7 here") as refused:
        quiet_trainer(accelerator="cpu").test(model, datamodule=data(seed=7))
    assert "\n" not in str(refused.value) and "other_data_on_purpose" in str(refused.value)
    quiet_trainer(accelerator="cpu").test(model, datamodule=data(seed=0))  # its own data
    model.other_data_on_purpose = True
    quiet_trainer(accelerator="cpu").test(model, datamodule=data(seed=7))


def test_a_trainer_given_the_checkpoint_refuses_other_data_too(tmp_path: Path) -> None:
    fit(tmp_path, 2, seed=0)
    with pytest.raises(ValueError, match=r"seed 0 in training, 3 here"):
        quiet_trainer(accelerator="cpu").test(model(), datamodule=data(seed=3), ckpt_path=str(tmp_path / "last.ckpt"))


class MyMixture(MixtureDataModule):
    """A user's subclass: it inherits the split settings, which compare with its parent's."""


def test_a_subclass_of_the_trained_datamodule_is_compared_setting_by_setting() -> None:
    trained = data_fingerprint(data(seed=0))
    mine = {"class_path": f"{__name__}.MyMixture", "init_args": {**dict(data(seed=7).hparams)}}
    assert differing_settings(trained, mine) == [("seed", 0, 7)]


def test_a_checkpoint_of_another_run_is_not_resumed_into_a_folder_that_holds_a_run(tmp_path: Path, capsys) -> None:
    """``--ckpt_path B/last.ckpt`` into folder A, which holds run A: refused in one line (the fit
    would write over A's checkpoints); the folder's own checkpoint resumes."""
    from lebm.cli.run_folder import fit_checkpoint

    own = tmp_path / "a" / "checkpoints"
    own.mkdir(parents=True)
    first = fit(own, 2)
    (tmp_path / "b").mkdir()
    other = fit(tmp_path / "b", 2)
    with pytest.raises(SystemExit) as stop:
        fit_checkpoint(str(tmp_path / "a"), str(tmp_path / "b" / "last.ckpt"), overwrite=False)
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1
    assert f"holds run {first['id']}" in said and f"checkpoint of run {other['id']}" in said
    assert fit_checkpoint(str(tmp_path / "a"), str(own / "last.ckpt"), overwrite=False) == str(own / "last.ckpt")


def test_a_folder_whose_last_checkpoint_names_no_run_and_holds_two_runs_is_refused(tmp_path: Path, capsys) -> None:
    """``last.ckpt`` unreadable and checkpoints of two runs beside it: which run the folder is cannot
    be vouched for, so ``auto`` stops in one line rather than pick one by the training it holds."""
    from lebm.cli.run_folder import fit_checkpoint

    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    fit(checkpoints, 2)
    (checkpoints / "last.ckpt").rename(checkpoints / "epoch=0-step=2.ckpt")
    (tmp_path / "other").mkdir()
    fit(tmp_path / "other", 3)
    (tmp_path / "other" / "last.ckpt").rename(checkpoints / "epoch=0-step=3.ckpt")
    (checkpoints / "last.ckpt").write_bytes(b"cut short")
    with pytest.raises(SystemExit):
        fit_checkpoint(str(tmp_path / "run"), "auto", overwrite=False)
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "holds checkpoints of 2 runs" in said, said


def test_a_moved_folders_callback_state_is_followed_only_onto_the_same_runs_files(tmp_path: Path) -> None:
    from lebm.training.own_checkpoints import keep_own_checkpoint_states

    (tmp_path / "b").mkdir()
    fit(tmp_path / "b", 2)  # the folder the callback writes into holds another run's last.ckpt
    resumed = torch.load(fit_and_path(tmp_path / "a"), weights_only=False)
    run_id = resumed["lebm_run"]["id"]
    old_state = {"dirpath": str(tmp_path / "a"), "last_model_path": str(tmp_path / "a" / "last.ckpt")}
    resumed["callbacks"] = {"key": dict(old_state)}
    callback = type("Checkpointing", (), {"state_key": "key", "dirpath": str(tmp_path / "b"), "mode": "min"})()
    keep_own_checkpoint_states(resumed, [callback], run_id, None)
    assert resumed["callbacks"]["key"] == old_state  # another run's folder: left as saved
    (tmp_path / "b" / "last.ckpt").write_bytes((tmp_path / "a" / "last.ckpt").read_bytes())  # now a copy of a
    keep_own_checkpoint_states(resumed, [callback], run_id, None)
    assert resumed["callbacks"]["key"]["dirpath"] == str(tmp_path / "b")


def test_a_moved_folders_top_k_is_followed_and_another_runs_file_left_out(tmp_path: Path) -> None:
    """A monitored ``ModelCheckpoint`` (top 2) of a moved run: its best and k-th best paths name the new
    folder (a k-th best left in the old one is a ``KeyError`` at the next monitored save), and a file of
    another run in the folder leaves its top-k, its best re-chosen among the rest (never deleted)."""
    from lebm.training.own_checkpoints import keep_own_checkpoint_states

    old, new, other = tmp_path / "old", tmp_path / "new", tmp_path / "other"
    old.mkdir()
    other.mkdir()
    fit(old, 2)
    fit(other, 2)
    resumed = torch.load(old / "last.ckpt", weights_only=False)
    run_id = resumed["lebm_run"]["id"]
    for name in ("e1.ckpt", "e2.ckpt"):
        (old / name).write_bytes((old / "last.ckpt").read_bytes())

    def state(folder: Path) -> dict:
        return {
            "dirpath": str(folder),
            "last_model_path": str(folder / "last.ckpt"),
            "best_model_path": str(folder / "e1.ckpt"),
            "kth_best_model_path": str(folder / "e2.ckpt"),
            "kth_value": torch.tensor(0.7),
            "best_k_models": {str(folder / "e1.ckpt"): torch.tensor(0.5), str(folder / "e2.ckpt"): torch.tensor(0.7)},
        }

    resumed["callbacks"] = {"key": state(old)}
    old.rename(new)
    callback = type("Checkpointing", (), {"state_key": "key", "dirpath": str(new), "mode": "min"})()
    assert keep_own_checkpoint_states(resumed, [callback], run_id, str(new / "last.ckpt")) == []
    followed = resumed["callbacks"]["key"]
    assert followed["kth_best_model_path"] == str(new / "e2.ckpt") and followed["dirpath"] == str(new)
    assert set(followed["best_k_models"]) == {str(new / "e1.ckpt"), str(new / "e2.ckpt")}
    (new / "e1.ckpt").write_bytes((other / "last.ckpt").read_bytes())  # another run's file now
    resumed["callbacks"] = {"key": state(new)}
    kept = keep_own_checkpoint_states(resumed, [callback], run_id, str(new / "last.ckpt"))
    rotated = resumed["callbacks"]["key"]
    assert kept == [str(new / "e1.ckpt")] and list(rotated["best_k_models"]) == [str(new / "e2.ckpt")]
    assert rotated["best_model_path"] == rotated["kth_best_model_path"] == str(new / "e2.ckpt")


def fit_and_path(folder: Path) -> Path:
    folder.mkdir()
    fit(folder, 2)
    return folder / "last.ckpt"


class RunIdsAgree(L.Callback):
    """On every rank, at the end of the fit: the run id rank 0 holds (a rank that drew its own would differ)."""

    def on_train_end(self, trainer: L.Trainer, module: LatentEBM) -> None:
        held = trainer.strategy.broadcast(module.run_id, src=0)
        assert module.run_id is not None and module.run_id == held, (trainer.global_rank, module.run_id, held)


@pytest.mark.slow  # two processes
def test_under_ddp_every_rank_holds_rank_zeros_run_id_and_refuses_other_data(tmp_path: Path) -> None:
    """CPU, 2 processes (forked ranks). A fresh fit's id is drawn by rank 0 and broadcast, so
    the ranks agree and the checkpoint the fit saved names that run, its step and data; a resume onto
    other data is refused in one line naming the setting, before any update (the first rank to refuse
    ends the others)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def ddp_trainer(steps: int, *callbacks: L.Callback) -> L.Trainer:
        return quiet_trainer(
            max_steps=steps,
            accelerator="cpu",
            devices=2,
            strategy=forked_ranks(),
            limit_val_batches=0,
            enable_checkpointing=True,
            default_root_dir=str(tmp_path),
            callbacks=list(callbacks),
        )

    ddp_trainer(2, RunIdsAgree(), ModelCheckpoint(dirpath=tmp_path, filename="fit")).fit(model(), datamodule=data(0))
    record = torch.load(tmp_path / "fit.ckpt", weights_only=False)[CHECKPOINT_KEY]
    assert isinstance(record["id"], str) and record["step"] == 2 and record["data"]["settings"]["seed"] == 0
    with pytest.raises(Exception, match="trained on other data") as refused:
        ddp_trainer(4).fit(model(), datamodule=data(7), ckpt_path=str(tmp_path / "fit.ckpt"))
    said = str(refused.value).strip().splitlines()[-1]  # the rank's error, after its traceback
    refusal = "lebm.data.errors.DataError: LatentEBM: these weights were trained on other data"  # a ValueError
    assert said.startswith(refusal) and "seed" in said
    assert sorted(path.name for path in tmp_path.glob("*.ckpt")) == ["fit.ckpt"]


def test_the_checkpoint_io_deletes_only_the_runs_own_checkpoints(tmp_path: Path) -> None:
    """Lightning's rotation goes through the checkpoint I/O: a file another run wrote is kept, named in a
    warning; the run's own file is deleted."""
    from lebm.checkpoint_io import AtomicCheckpointIO

    (tmp_path / "mine").mkdir()
    (tmp_path / "theirs").mkdir()
    mine = fit(tmp_path / "mine", 2)["id"]
    fit(tmp_path / "theirs", 2)
    io = AtomicCheckpointIO()
    io.removes_only_run = mine
    with pytest.warns(UserWarning, match=r"kept .*theirs/last.ckpt: run \w+ wrote it, not this run"):
        io.remove_checkpoint(tmp_path / "theirs" / "last.ckpt")
    assert (tmp_path / "theirs" / "last.ckpt").is_file()
    io.remove_checkpoint(tmp_path / "mine" / "last.ckpt")
    assert not (tmp_path / "mine" / "last.ckpt").exists()
