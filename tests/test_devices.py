"""Devices (device: CPU): a CPU test stays on the CPU on any machine, the device settings a GPU user
gets wrong fail before training with what to do, the TF32 policy is applied where the run starts,
a chain that runs out of CUDA memory says which chain and which batch, and a run moves between a
GPU and a CPU through its checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lebm import devices as device_checks
from lebm.devices import check_device_settings
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.randomness import CHECKPOINT_KEY
from lebm.samplers import Langevin
from lebm.speed.numerics import apply_tf32, tf32_state
from tests.helpers.cli_runner import SHORT_RUN, run_cli
from tests.helpers.subprocesses import HANG_SECONDS
from tests.helpers.trainers import quiet_trainer


# --------------------------------------------------------------------------- the test policy
def test_a_cpu_test_sees_no_gpu_here_nor_in_the_processes_it_starts() -> None:
    assert not torch.cuda.is_available() and torch.cuda.device_count() == 0
    assert quiet_trainer(accelerator="auto").strategy.root_device.type == "cpu"
    child = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        check=True,
    )
    assert child.stdout.strip() == "0"


# ----------------------------------------------------------------------------- device checks
def test_a_gpu_asked_for_where_there_is_none_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="accelerator gpu asks for a CUDA GPU.*sees none.*leave trainer.accelerator"):
        check_device_settings("gpu", 1, "32-true")
    check_device_settings("auto", 1, "32-true")  # auto picks the CPU: nothing to say


def test_more_gpus_than_the_machine_has_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(device_checks, "bf16_on_this_gpu", lambda: True)
    for devices in (2, "2", [0, 1], "0,1"):
        with pytest.raises(ValueError, match="asks for 2 GPUs, but this machine has 1: use --trainer.devices 1"):
            check_device_settings("gpu", devices, "32-true")
    check_device_settings("auto", 1, "bf16-mixed")
    check_device_settings("gpu", "auto", "32-true")


def test_bf16_on_a_gpu_without_it_is_refused_with_the_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    monkeypatch.setattr(device_checks, "bf16_on_this_gpu", lambda: False)
    with pytest.raises(ValueError, match=r"bf16-mixed needs bfloat16.*Tesla V100.*16-mixed.*32-true"):
        check_device_settings("auto", 1, "bf16-mixed")
    check_device_settings("auto", 1, "16-mixed")


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    with pytest.warns(UserWarning, match="bf16-mixed on this CPU.*AVX2.*slower"):
        check_device_settings("cpu", 1, "bf16-mixed")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    check_device_settings("cpu", 1, "bf16-mixed")  # may have them: no warning (pytest turns none into an error)


def test_the_cli_refuses_a_gpu_run_on_a_cpu_machine_before_training(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli("fit", "-c", "recipes/quickstart.yaml", "--trainer.accelerator", "gpu", "--trainer.logger", "false")
    assert stop.value.code == 2
    assert "asks for a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


# --------------------------------------------------------------------------------------- TF32
def test_the_tf32_policies_set_both_switches() -> None:
    saved = tf32_state()
    try:
        assert apply_tf32(True) == tf32_state() == (True, True)
        assert apply_tf32(False) == tf32_state() == (False, False)
        assert apply_tf32("pytorch") == tf32_state() == (False, True)  # PyTorch's own defaults
        for wrong in ("fast", 1):
            with pytest.raises(ValueError, match="tf32 must be pytorch, true or false"):
                apply_tf32(wrong)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_the_lebm_command_applies_the_recipes_tf32_policy(tmp_path) -> None:
    saved = tf32_state()
    try:
        apply_tf32("pytorch")
        common = ["-c", "recipes/quickstart.yaml", *SHORT_RUN, "--trainer.logger", "false", "--trainer.max_epochs", "1"]
        run_cli("fit", *common, "--trainer.default_root_dir", str(tmp_path), "--tf32", "true")
        assert tf32_state() == (True, True)
        assert "tf32: true" in (tmp_path / "config.yaml").read_text()  # the run folder records it
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ------------------------------------------------------------------------------ out of memory
def test_a_chain_out_of_cuda_memory_names_the_chain_the_batch_and_what_to_lower() -> None:
    def energy(z: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(torch.cuda.OutOfMemoryError) as caught:
        Langevin(20, 0.1)(energy, torch.zeros(100, 8))
    message = str(caught.value)
    assert "Langevin(n_steps=20" in message and "a batch of 100 states of shape (8,)" in message
    assert "--data.init_args.batch_size" in message and "bf16-mixed" in message
    assert "Tried to allocate 2.00 GiB" in message


# ------------------------------------------------------------------ moving a run across devices
def test_a_run_resumed_on_another_kind_of_device_continues_from_fresh_streams(tmp_path) -> None:
    """A checkpoint written on a GPU keeps CUDA generator states (16 bytes), which a CPU generator
    cannot take: the resumed run warns and goes on with fresh streams (weights and optimisers load)."""
    torch.manual_seed(0)
    model = LatentEBM(
        GaussianDecoder(MLPGenerator(3, [2], hidden=8, out_activation=None), 0.3),
        TiltedGaussianPrior(3, EnergyMLP(3, hidden=8), sampler=Langevin(3, 0.4)),
        posterior_sampler=Langevin(3, 0.1),
    )
    data = DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=8)
    quiet_trainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path).fit(model, data)
    path = tmp_path / "first.ckpt"
    model.trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint[CHECKPOINT_KEY]["ranks"][0]["train"] = torch.zeros(16, dtype=torch.uint8)  # as a CUDA stream saves
    torch.save(checkpoint, path)
    resumed = quiet_trainer(max_epochs=2, accelerator="cpu", default_root_dir=tmp_path)
    with pytest.warns(UserWarning, match="saved on another kind of device than this run's cpu"):
        resumed.fit(model, data, ckpt_path=str(path))
    assert resumed.current_epoch == 2  # the second epoch ran
