"""The GPU tier (device: CUDA; marked ``gpu``, skipped without a CUDA device): the paths a GPU user
takes, end to end. On a GPU machine, from the repository root::

    python -m pytest -q -m gpu          # every gpu test, this file's long ones included

- every method's quickstart recipe trains on the GPU through the ``lebm`` command;
- FID and the anomaly callbacks compute on the GPU;
- ``bf16-mixed`` trains one method;
- a checkpoint written on the GPU resumes on the CPU, and that one back on the GPU;
- two-process DDP on two GPUs, where the machine has them.

The captured chains' own GPU tests are in ``tests/models/test_chain_graphs_cuda.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lebm
from lebm.callbacks import FID, AnomalyDetection
from lebm.data import ImageDataModule
from lebm.metrics import SmallConvFeatures
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer

pytestmark = [pytest.mark.gpu, pytest.mark.slow]  # minutes: run with -m gpu (slow ones included)

REPO = Path(__file__).resolve().parents[1]
QUICKSTARTS = [
    "recipes/quickstart.yaml",
    "recipes/multistage_nce/quickstart.yaml",
    "recipes/dual_mcmc/quickstart.yaml",
    "recipes/hierarchical/quickstart.yaml",
    "recipes/latent_ebm/text_quickstart.yaml",
]
#: A short run on one GPU: 3 training batches and 1 validation batch an epoch, no W&B.
ON_ONE_GPU = [
    *("--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.logger", "false"),
    *("--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"),
    *("--trainer.enable_progress_bar", "false"),
]


def lebm_command(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m lebm <args>`` from the repository root (the GPU machine may lack the console script)."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, "-m", "lebm", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def finite_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.isfinite(value).all(), name
    return state


@pytest.mark.parametrize("recipe", QUICKSTARTS)
def test_every_quickstart_trains_on_the_gpu_through_the_lebm_command(recipe: str, tmp_path: Path) -> None:
    lebm_command(
        "fit", "-c", recipe, *ON_ONE_GPU, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(tmp_path)
    )
    finite_weights(tmp_path / "checkpoints/last.ckpt")


def test_bf16_mixed_trains_a_method_on_the_gpu(tmp_path: Path) -> None:
    lebm_command(
        "fit",
        *("-c", "recipes/dual_mcmc/quickstart.yaml", *ON_ONE_GPU, "--trainer.max_epochs", "1"),
        *("--trainer.precision", "bf16-mixed", "--trainer.default_root_dir", str(tmp_path)),
    )
    finite_weights(tmp_path / "checkpoints/last.ckpt")


def test_a_gpu_checkpoint_resumes_on_the_cpu_and_that_one_back_on_the_gpu(tmp_path: Path) -> None:
    common = ["-c", "recipes/quickstart.yaml", *ON_ONE_GPU[4:], "--trainer.default_root_dir", str(tmp_path)]
    gpu = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
    lebm_command("fit", *common, *gpu, "--trainer.max_epochs", "1")
    after_gpu = finite_weights(tmp_path / "checkpoints/last.ckpt")
    model = lebm.load(str(tmp_path / "checkpoints/last.ckpt"), map_location="cpu")
    assert next(model.parameters()).device.type == "cpu" and model.generate(4).shape == (4, 1, 8, 8)
    cpu = lebm_command(
        "fit", *common, "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2", "--ckpt_path", "last"
    )
    assert "saved on another kind of device" in cpu.stderr  # the streams start afresh, the weights go on
    after_cpu = finite_weights(tmp_path / "checkpoints/last.ckpt")
    assert any(not torch.equal(after_gpu[k], after_cpu[k]) for k in after_gpu)
    lebm_command("fit", *common, *gpu, "--trainer.max_epochs", "3", "--ckpt_path", "last")
    finite_weights(tmp_path / "checkpoints/last.ckpt")


def test_fid_and_anomaly_detection_compute_on_the_gpu(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LatentEBM(
        GaussianDecoder(MLPGenerator(4, [1, 8, 8], hidden=16), 0.3),
        TiltedGaussianPrior(4, EnergyMLP(4, hidden=8), sampler=Langevin(5, 0.4)),
        posterior_sampler=Langevin(3, 0.1),
    )
    fid = FID(feature_extractor=SmallConvFeatures(), num_samples=64, batch_size=32, num_reference=128)
    anomaly = AnomalyDetection(anomaly_classes=[1])
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=2,
        accelerator="gpu",
        devices=1,
        inference_mode=False,
        default_root_dir=str(tmp_path),
        callbacks=[fid, anomaly],
    )
    trainer.fit(model, ImageDataModule(dataset="digits", batch_size=50))
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    assert metrics["val/fid"] > 0
    assert 0 < metrics["val/auprc"] <= 1 and 0 <= metrics["val/auroc"] <= 1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_process_ddp_on_two_gpus_through_the_lebm_command(tmp_path: Path) -> None:
    lebm_command(
        "fit",
        *("-c", "recipes/quickstart.yaml", "--trainer.accelerator", "gpu", "--trainer.devices", "2"),
        *("--trainer.logger", "false", "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path)),
    )
    finite_weights(tmp_path / "checkpoints/last.ckpt")
