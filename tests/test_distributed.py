"""lebm's DDP: the CLI picks it for several devices, plain DDP is refused with the fix, and
gradients are reduced per optimiser (the rank invariants are in the method contract suite); what a
spawned rank receives comes whole through its pickle, and the tests' forked ranks run one thread.
Device: CPU (two CPU processes where a test runs ranks)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from jsonargparse import Namespace
from torch.utils.data import DataLoader, TensorDataset

import lebm.callbacks
import lebm.data
from lebm.callbacks import FID
from lebm.cli.app import _method_strategy, requested_processes
from lebm.metrics import SmallConvFeatures
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import HMC, MALA, Langevin, PersistentChains
from tests.helpers.ddp import assert_received_whole, forked_ranks
from tests.helpers.trainers import quiet_trainer


@pytest.mark.parametrize(
    "trainer,expected",
    [
        (dict(strategy="auto", devices=2, accelerator="cpu"), "lebm_ddp"),
        (dict(strategy="auto", devices=1, accelerator="cpu"), "auto"),
        (dict(strategy="auto", devices=1, accelerator="cpu", num_nodes=2), "lebm_ddp"),
        (dict(strategy="ddp_spawn", devices=2, accelerator="cpu"), "lebm_ddp_spawn"),
        (dict(strategy="ddp", devices=2, accelerator="cpu"), "lebm_ddp"),
        (dict(strategy="single_device", devices=1, accelerator="cpu"), "single_device"),
    ],
)
def test_the_cli_runs_several_processes_on_lebm_ddp(trainer: dict, expected: str) -> None:
    assert _method_strategy(Namespace(**trainer)) == expected


def test_requested_processes_counts_devices_and_nodes() -> None:
    assert requested_processes("cpu", 3, 2) == 6
    assert requested_processes("cpu", "auto", None) == 1


LEBM_CALLBACKS = [name for name in lebm.callbacks.__all__ if isinstance(getattr(lebm.callbacks, name), type)]
#: Callbacks that need a package lebm does not install.
NEEDS = {"RunRichProgressBar": "rich"}


@pytest.mark.parametrize("name", LEBM_CALLBACKS)
def test_every_lebm_callback_reaches_a_spawned_rank(name: str) -> None:
    """``lebm_ddp_spawn`` pickles the Trainer, with its callbacks, for each rank; the slow tier's
    DDP tests fork their ranks (``tests/helpers/ddp.py``), which pickles nothing. Each of lebm's
    callbacks, as built with its defaults, comes through a pickle with the same attributes."""
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    assert_received_whole(getattr(lebm.callbacks, name)())


def test_a_configured_fid_reaches_a_spawned_rank_with_its_feature_extractor() -> None:
    assert_received_whole(FID(feature_extractor=SmallConvFeatures(seed=0), num_samples=64, kid=True))


#: Each of lebm's chain samplers, as a method's chains hold them (a persistent buffer around one).
SAMPLERS = {
    "Langevin": lambda: Langevin(20, 0.1),
    "MALA": MALA,
    "HMC": HMC,
    "PersistentChains": lambda: PersistentChains(Langevin(5, 0.1), [2], buffer_size=8),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_lebm_samplers_reach_a_spawned_rank(name: str) -> None:
    assert_received_whole(SAMPLERS[name]())


#: lebm's DataModules that build with their defaults (embedded or generated data; the others need files).
DATA_WITHOUT_FILES = ["ImageDataModule", "MixtureDataModule", "TextDataModule", "SampleRequests"]


@pytest.mark.parametrize("name", DATA_WITHOUT_FILES)
def test_lebm_datamodules_reach_a_spawned_rank(name: str) -> None:
    """A fit's DataModule goes to each spawned rank through a pickle too, with its settings."""
    assert_received_whole(getattr(lebm.data, name)())


@pytest.mark.slow
def test_plain_ddp_is_refused_before_training_with_the_fix(tmp_path) -> None:
    decoder = GaussianDecoder(MLPGenerator(2, [2], hidden=8, out_activation=None))
    model = LatentEBM(decoder, TiltedGaussianPrior(2, EnergyMLP(2, hidden=8)))
    trainer = quiet_trainer(
        strategy=forked_ranks(lightning=True), devices=2, accelerator="cpu", default_root_dir=str(tmp_path)
    )
    with pytest.raises(Exception, match="use strategy='lebm_ddp'"):
        trainer.fit(model, DataLoader(TensorDataset(torch.randn(32, 2)), batch_size=8))


class AssertOneThreadThenCompute(L.Callback):
    """In each rank: one intra-op thread, then an operation large enough to enter a parallel region."""

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        assert torch.get_num_threads() == 1, f"rank {trainer.global_rank} runs {torch.get_num_threads()} threads"
        torch.randn(4_000_000).exp().sum()


class OneWeight(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return (batch[0] - self.weight).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_the_tests_forked_ranks_compute_on_one_thread_after_this_process_used_several(tmp_path, monkeypatch) -> None:
    """The tests' forked DDP ranks (``tests.helpers.ddp``): this process first runs a parallel region
    on two threads; a forked rank that entered one on two threads would wait forever. With
    ``OMP_NUM_THREADS`` set, Lightning leaves a rank the threads it inherits (on a 2-core machine it
    would otherwise give each of two ranks one)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.randn(4_000_000).exp().sum()
        settings = dict(max_steps=1, accelerator="cpu", devices=2, default_root_dir=str(tmp_path))
        trainer = quiet_trainer(
            strategy=forked_ranks(lightning=True), callbacks=[AssertOneThreadThenCompute()], **settings
        )
        trainer.fit(OneWeight(), DataLoader(TensorDataset(torch.randn(16, 1)), batch_size=4))
    finally:
        torch.set_num_threads(threads)
