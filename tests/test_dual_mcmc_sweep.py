"""experiments/dual_mcmc_revision_sweep.py on a tiny DualMCMC trained here on the 8x8 digits (no
$LEBM_DATA: lebm's small random conv features instead of Inception): the records' rows, the shared
latents, the chain noise switch, the cached reference and the FID curve over epochs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lebm.data import ImageDataModule
from lebm.models import DualMCMC
from lebm.nets import ConvEncoder, GaussianDecoder, SNGANGenerator, SNResNetEnergy
from lebm.samplers import Langevin
from tests.helpers.scripts import load_script
from tests.helpers.trainers import quiet_trainer

QUICK = ["--samples", "100", "--reference", "300", "--batch-size", "50", "--features", "small", "--device", "cpu"]


def sweep_script() -> ModuleType:
    return load_script("experiments/dual_mcmc_revision_sweep.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two epochs of 2 iterations of the quickstart's nets (its official settings, shorter
    training chains) on the digits, a checkpoint after each."""
    root = tmp_path_factory.mktemp("dual_mcmc_run")
    L.seed_everything(0, verbose=False)
    model = DualMCMC(
        GaussianDecoder(SNGANGenerator(16, 1, 8, (32, 16)), sigma=0.3 / 2**0.5),
        SNResNetEnergy(1, 8, (16, 32), (True, True)),
        ConvEncoder(16, 1, 8, nif=16, stem=False),
        data_sampler=Langevin(5, 0.5, noise_std=1e-3),
        posterior_sampler=Langevin(3, 0.1),
    )
    data = ImageDataModule(dataset="digits", image_size=8, channels=1, batch_size=50, val_size=0.1, validate_on="val")
    trainer = quiet_trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=0,
        accelerator="cpu",
        default_root_dir=str(root),
        enable_checkpointing=True,
        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", save_top_k=-1, every_n_epochs=1)],
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: several times faster than two threads on a busy 2-core machine
    try:
        trainer.fit(model, data)
        yield root
    finally:
        torch.set_num_threads(threads)


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("epoch=*.ckpt"))


def test_the_sweep_scores_raw_and_revised_samples_of_shared_latents(run_dir: Path, tmp_path: Path, capsys) -> None:
    """Two calls share the latents (the raw row is identical); noise off changes the revised rows."""
    script = sweep_script()
    last = checkpoints(run_dir)[-1]
    common = [*QUICK, "--ckpt", str(last), "--cache-dir", str(tmp_path / "cache")]
    first = script.main([*common, "--chains", "3x0.5,2x0.4", "--noises", "0.001,0", "--out", str(tmp_path / "a.json")])
    records = first["sweep"]
    # one row for the raw samples, then each chain with the official noise and without
    assert [(r["chain"], r["steps"], r["step_size"], r["noise_std"]) for r in records] == [
        ("raw", 0, None, None),
        ("3x0.5", 3, 0.5, 0.001),
        ("3x0.5", 3, 0.5, 0.0),
        ("2x0.4", 2, 0.4, 0.001),
        ("2x0.4", 2, 0.4, 0.0),
    ]
    assert [r["metric"] for r in records] == [
        "fid_raw",
        "fid_revised_3x0.5_noise0.001",
        "fid_revised_3x0.5_noise0",
        "fid_revised_2x0.4_noise0.001",
        "fid_revised_2x0.4_noise0",
    ]
    for r in records:
        assert r["method"] == "DualMCMC" and r["experiment"] == "digits_revision_sweep"
        assert math.isfinite(r["value"]) and r["value"] >= 0
        assert r["seconds"] >= 0 and r["fid_seconds"] >= 0
        assert (r["samples"], r["reference"], r["epochs"]) == (100, 300, 2)
        assert r["checkpoint"].endswith(last.name) and r["power_iteration"] is True
        assert r["features"].startswith("small-conv")
    assert json.loads((tmp_path / "a.json").read_text()) == records
    fid = {r["metric"]: r["value"] for r in records}
    # switching the chain's noise off changes the revised samples, and revising changes the raw ones
    assert fid["fid_revised_3x0.5_noise0.001"] != fid["fid_revised_3x0.5_noise0"]
    assert fid["fid_revised_2x0.4_noise0.001"] != fid["fid_revised_2x0.4_noise0"]
    assert fid["fid_revised_3x0.5_noise0.001"] != fid["fid_raw"]
    assert "training images, cached in" in capsys.readouterr().out

    # a second call, the chains in another order: the same latents give the same raw row, and a
    # chain's row depends neither on the chains before it (each starts from the checkpoint's energy
    # net) nor on their random draws (each batch's noise has its own seed)
    second = script.main([*common, "--chains", "2x0.4:0,3x0.5:0.001", "--out", str(tmp_path / "b.json")])["sweep"]
    assert [r["metric"] for r in second] == ["fid_raw", "fid_revised_2x0.4_noise0", "fid_revised_3x0.5_noise0.001"]
    assert [r["value"] for r in second] == [fid[r["metric"]] for r in second]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # the reference was embedded once
    # other latents, another raw row
    third = script.main([*common, "--chains", "3x0.5:0", "--seed", "1", "--out", str(tmp_path / "c.json")])["sweep"]
    assert third[0]["value"] != fid["fid_raw"]


def test_a_stopped_sweep_keeps_the_rows_it_scored_and_resumes_with_the_others(
    run_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """CPU. A long sweep stopped during its third row (here: the scoring raises) leaves the raw row
    and the first chain's row in ``--out``, a complete JSON list; ``--resume`` then scores only the
    missing rows, and only when the checkpoint and latents are the same."""
    script = sweep_script()
    real_score, calls, resuming = script.score, [], []

    def stop_in_the_third_row(*args, **kwargs):
        calls.append(args[0])
        if calls == ["raw", "2x0.4 n=0", "3x0.5 n=0"] and not resuming:
            raise KeyboardInterrupt
        return real_score(*args, **kwargs)

    monkeypatch.setattr(script, "score", stop_in_the_third_row)
    out = tmp_path / "stopped.json"
    common = [*QUICK, "--ckpt", str(checkpoints(run_dir)[-1]), "--cache-dir", str(tmp_path / "cache")]
    with pytest.raises(KeyboardInterrupt):
        script.main([*common, "--chains", "2x0.4:0,3x0.5:0,3x0.5:0.001", "--out", str(out)])
    kept = json.loads(out.read_text())
    assert [r["metric"] for r in kept] == ["fid_raw", "fid_revised_2x0.4_noise0"]
    assert all(math.isfinite(r["value"]) for r in kept)
    assert not list(tmp_path.glob("*.partial"))

    calls.clear()
    resuming.append(True)
    chains = ["--chains", "2x0.4:0,3x0.5:0,3x0.5:0.001", "--out", str(out)]
    resumed = script.main([*common, *chains, "--resume"])["sweep"]
    assert calls == ["3x0.5 n=0", "3x0.5 n=0.001"]  # neither the raw row nor the finished chain again
    assert resumed[:2] == kept
    assert [r["metric"] for r in resumed[2:]] == ["fid_revised_3x0.5_noise0", "fid_revised_3x0.5_noise0.001"]
    assert json.loads(out.read_text()) == resumed
    # other latents: nothing of the earlier sweep is reused
    calls.clear()
    script.main([*common, *chains, "--resume", "--seed", "1"])
    assert calls == ["raw", "2x0.4 n=0", "3x0.5 n=0", "3x0.5 n=0.001"]


def stale_checkpoint(source: Path, target: Path) -> Path:
    """``source`` with the energy net's raw weights moved, so that the stored spectral-norm vectors
    are far from converged and the chains' power iteration changes the energy noticeably."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for name, value in checkpoint["state_dict"].items():
        if name.startswith("energy_net.") and name.endswith("parametrizations.weight.original"):
            value.mul_(1 + 2 * torch.rand(value.shape, generator=generator))
    torch.save(checkpoint, target)
    return target


def test_every_chain_starts_from_the_checkpoints_spectral_norm_and_the_switch_reaches_the_chains(
    run_dir: Path, tmp_path: Path
) -> None:
    """The power iteration changes the energy net's vectors during a chain: each row restarts from
    the checkpoint's, so the order of the chains does not matter; --no-power-iteration changes the rows."""
    script = sweep_script()
    ckpt = stale_checkpoint(checkpoints(run_dir)[-1], tmp_path / "stale.ckpt")
    common = [*QUICK, "--ckpt", str(ckpt), "--cache-dir", str(tmp_path / "cache"), "--noises", "0"]

    def values(*options: str) -> dict[str, float]:
        records = script.main([*common, *options, "--out", str(tmp_path / "out.json")])["sweep"]
        return {r["metric"]: r["value"] for r in records}

    forward = values("--chains", "5x0.5,3x0.4")
    assert values("--chains", "3x0.4,5x0.5") == forward
    frozen = values("--chains", "5x0.5,3x0.4", "--no-power-iteration")
    assert frozen["fid_raw"] == forward["fid_raw"]
    assert frozen["fid_revised_5x0.5_noise0"] != forward["fid_revised_5x0.5_noise0"]


def test_the_curve_scores_every_epoch_checkpoint_and_the_records_render(run_dir: Path, tmp_path: Path) -> None:
    script = sweep_script()
    out = tmp_path / "curve.json"
    args = [*QUICK, "--curve", str(run_dir), "--curve-chain", "3x0.5", "--cache-dir", str(tmp_path / "cache")]
    records = script.main([*args, "--curve-out", str(out)])["curve"]
    assert [(r["epoch"], r["metric"]) for r in records] == [
        (1, "fid_raw_epoch001"),
        (1, "fid_revised_3x0.5_noise0.001_epoch001"),
        (2, "fid_raw_epoch002"),
        (2, "fid_revised_3x0.5_noise0.001_epoch002"),
    ]
    assert [Path(r["checkpoint"]).name for r in records[::2]] == [path.name for path in checkpoints(run_dir)]
    assert records[0]["value"] != records[2]["value"]  # the generator trained in between
    assert json.loads(out.read_text()) == records
    # the records are results records: docs/results.md renders them
    make_results_md = load_script("scripts/make_results_md.py")
    text = make_results_md.render(records, [])
    assert "## digits_revision_curve" in text and "fid_raw_epoch002" in text


def test_chains_are_parsed_with_their_noise() -> None:
    script = sweep_script()
    chains = script.parse_chains("30x0.5,70x0.4:0", "0.001,0")
    assert [(c.steps, c.step_size, c.noise_std) for c in chains] == [(30, 0.5, 0.001), (30, 0.5, 0.0), (70, 0.4, 0.0)]
    assert len(script.parse_chains(script.DEFAULT_CHAINS, script.DEFAULT_NOISES)) == 10
    with pytest.raises(SystemExit, match="STEPSxSTEP"):
        script.parse_chains("30-0.5", "0")


def test_the_reference_data_of_a_cli_checkpoint_is_rebuilt() -> None:
    """CPU. A checkpoint written by ``lebm fit`` (LightningCLI) stores the datamodule's arguments
    with ``_class_path`` and ``_instantiator``; the sweep rebuilds the datamodule from the rest."""
    hparams = {
        "_class_path": "lebm.data.ImageDataModule",
        "dataset": "digits",
        "image_size": 8,
        "channels": 1,
        "batch_size": 50,
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
    }
    data, description = sweep_script().build_data(hparams, None)
    assert isinstance(data, ImageDataModule) and data.hparams.batch_size == 50
    assert not any(key.startswith("_") for key in description["hparams"])
