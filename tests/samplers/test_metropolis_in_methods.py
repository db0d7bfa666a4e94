"""MALA and HMC in every chain of the four methods, chosen from a recipe: a short ``lebm fit``
per method (in this process), the adaptation state in the checkpoint, the samplers rebuilt by
``lebm.load``; under two processes, each rank's adaptation state its own. Device: CPU."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

import lebm
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.models.base import RANK_LOCAL_KEY
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import HMC, MALA, Langevin
from tests.helpers.cli_runner import SHORT_RUN, run_cli
from tests.helpers.ddp import forked_ranks
from tests.helpers.trainers import quiet_trainer

MALA_CHAIN = {"class_path": "lebm.samplers.MALA", "init_args": {"n_steps": 3, "step_size": 0.05, "adapt_steps": 50}}
HMC_CHAIN = {
    "class_path": "lebm.samplers.HMC",
    "init_args": {"n_steps": 2, "step_size": 0.05, "n_leapfrog": 2, "adapt_steps": 50},
}
#: Dual-MCMC's data chain samples exp(-E(x)) with no Gaussian reference, an improper target for a fresh
#: energy net: an exact sampler at temperature 1 drifts off unless its step stays small (adapting it to an
#: acceptance of 0.574 on a near-flat energy grows the step until the states overflow).
DATA_CHAIN = {"class_path": "lebm.samplers.MALA", "init_args": {"n_steps": 3, "step_size": 1e-3}}

#: Each method's quickstart recipe and every chain it has, as ``{model.init_args path: chain}``.
CHAINS = {
    "LatentEBM": ("recipes/quickstart.yaml", {"prior.sampler": HMC_CHAIN, "posterior_sampler": MALA_CHAIN}),
    "MultiStageNCE": (
        "recipes/multistage_nce/quickstart.yaml",
        {"prior.sampler": MALA_CHAIN, "posterior_sampler": HMC_CHAIN},
    ),
    "DualMCMC": (
        "recipes/dual_mcmc/quickstart.yaml",
        {"data_sampler": DATA_CHAIN, "posterior_sampler": HMC_CHAIN, "test_data_sampler": DATA_CHAIN},
    ),
    "JointHierarchicalEBM": ("recipes/hierarchical/quickstart.yaml", {"prior.sampler": MALA_CHAIN}),
}


def override(chains: dict[str, dict]) -> dict:
    """The recipe fragment that puts ``chains`` in their places."""
    init_args: dict = {}
    for path, chain in chains.items():
        if path.startswith("prior."):
            init_args.setdefault("prior", {"init_args": {}})["init_args"][path.split(".", 1)[1]] = chain
        else:
            init_args[path] = chain
    return {"model": {"init_args": init_args}}


def sampler_at(model: torch.nn.Module, path: str):
    for part in path.split("."):
        model = getattr(model, part)
    return model


@pytest.mark.filterwarnings("ignore:MultiStageNCE. training ended")
@pytest.mark.parametrize("method", CHAINS)
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_every_chain_of_a_method_can_be_mala_or_hmc(method: str, tmp_path: Path) -> None:
    recipe, chains = CHAINS[method]
    fragment = tmp_path / "chains.yaml"
    fragment.write_text(yaml.safe_dump(override(chains)))
    extra = {
        "DualMCMC": ["--model.init_args.temperature", "4e-6"],  # 'auto' reads a Langevin's (n / s)^2: give it
        "MultiStageNCE": ["--model.init_args.stage_iterations", "1"],  # 4 stages in 3 iterations
    }.get(method, [])
    run_cli(
        "fit", "-c", recipe, "-c", str(fragment), *SHORT_RUN, *extra,
        "--trainer.max_epochs", "1", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    )  # fmt: skip
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    model = lebm.load(checkpoint)
    for path, chain in chains.items():
        sampler = sampler_at(model, path)
        assert isinstance(sampler, HMC if chain is HMC_CHAIN else MALA), path
        if chain["init_args"].get("adapt_steps"):  # the chain adapted, and the checkpoint holds its state
            assert float(state[f"{path}.adaptation.count"]) > 0, path
            assert torch.equal(sampler.adaptation.log_step_avg, state[f"{path}.adaptation.log_step_avg"])


class CheckAdaptationPerRank(L.Callback):
    """On both ranks of a 2-process run: each rank adapted on its own chains (the states differ), and
    a checkpoint written now keeps both ranks' states."""

    def on_train_end(self, trainer: L.Trainer, module: LatentEBM) -> None:
        rows = module.all_gather(module.posterior_sampler.adaptation.log_step)
        assert not torch.equal(rows[0], rows[1]), "both ranks adapted to the same step: not rank-local"
        counts = module.all_gather(module.posterior_sampler.adaptation.count)
        assert torch.equal(counts[0], counts[1]) and float(counts[0]) > 0


class CheckResumedAdaptation(L.Callback):
    """After a 2-rank resume, each rank's adaptation state is its own row of the checkpoint."""

    def __init__(self, saved: dict[str, torch.Tensor]) -> None:
        self.saved = saved

    def on_train_start(self, trainer: L.Trainer, module: LatentEBM) -> None:
        for name, buffer in module.posterior_sampler.adaptation.named_buffers():
            rows = self.saved.get(f"posterior_sampler.adaptation.{name}")
            if rows is not None:
                assert torch.equal(buffer.cpu(), rows[module.global_rank]), (name, module.global_rank)


def toy_mala_model() -> LatentEBM:
    """A 3-d latent, 2-d data LatentEBM whose posterior chain is an adapting MALA."""
    torch.manual_seed(0)
    decoder = GaussianDecoder(MLPGenerator(3, [2], hidden=16, out_activation=None), sigma=0.3)
    prior = TiltedGaussianPrior(3, EnergyMLP(3, hidden=16), sampler=Langevin(5, 0.4))
    sampler = MALA(4, 0.05, adapt_steps=1000)
    return LatentEBM(decoder, prior, posterior_sampler=sampler, decoder_lr=1e-3, prior_lr=1e-3)


def toy_loader() -> DataLoader:
    """8 batches of 8 two-dimensional points (fixed)."""
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x), batch_size=8)


@pytest.mark.slow
def test_under_two_ranks_each_adapts_on_its_own_chains_and_resumes_its_own_state(tmp_path: Path, monkeypatch) -> None:
    """CPU, 2 processes (forked ranks). The adaptation state is rank-local: the ranks adapt
    differently, the checkpoint holds both rows, and a 2-rank resume gives each rank its own."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    settings = {"devices": 2, "accelerator": "cpu", "default_root_dir": tmp_path}
    settings |= {"inference_mode": False, "num_sanity_val_steps": 0}
    model = toy_mala_model()
    checks = [CheckAdaptationPerRank()]
    first = quiet_trainer(
        max_epochs=1, callbacks=checks, enable_checkpointing=True, strategy=forked_ranks(), **settings
    )
    first.fit(model, toy_loader())
    (checkpoint,) = tmp_path.rglob("*.ckpt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)[RANK_LOCAL_KEY]
    assert saved["posterior_sampler.adaptation.log_step"].shape[0] == 2
    resumed = toy_mala_model()
    quiet_trainer(max_epochs=2, callbacks=[CheckResumedAdaptation(saved)], strategy=forked_ranks(), **settings).fit(
        resumed, toy_loader(), ckpt_path=str(checkpoint)
    )


def langevin_model() -> LatentEBM:
    torch.manual_seed(0)
    decoder = GaussianDecoder(MLPGenerator(3, [2], hidden=16, out_activation=None), sigma=0.3)
    prior = TiltedGaussianPrior(3, EnergyMLP(3, hidden=16), sampler=Langevin(5, 0.4))
    return LatentEBM(decoder, prior, posterior_sampler=Langevin(4, 0.05), decoder_lr=1e-3, prior_lr=1e-3)


def test_a_checkpoint_loads_into_a_model_with_another_kind_of_chain(tmp_path: Path) -> None:
    """CPU. Evaluate a Langevin-trained model with MALA (its adaptation starts afresh) and a
    MALA-trained one with Langevin (the adaptation state is dropped), as a recipe that swaps the
    chain for testing does."""
    for build_trained, build_other in ((langevin_model, toy_mala_model), (toy_mala_model, langevin_model)):
        trainer = quiet_trainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path)
        trained = build_trained()
        trainer.fit(trained, toy_loader())
        path = tmp_path / f"{type(trained.posterior_sampler).__name__}.ckpt"
        trainer.save_checkpoint(path)
        other = type(trained).load_from_checkpoint(path, posterior_sampler=build_other().posterior_sampler)
        assert type(other.posterior_sampler) is type(build_other().posterior_sampler)
        for name, parameter in trained.named_parameters():
            assert torch.equal(parameter, other.get_parameter(name)), name


def test_resume_is_exact_with_an_adapting_chain_and_validation(tmp_path: Path) -> None:
    """CPU. With a validation loop (and the sanity check a resumed run repeats) the adapting chain's
    state moves only in training: 3 epochs straight equal 1 epoch, a checkpoint written at the end of
    the training epoch (as the recipes write it), and a resume to 3."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(folder: str, epochs: int, ckpt_path: str | None = None) -> LatentEBM:
        L.seed_everything(3, verbose=False)
        model = toy_mala_model()
        every_epoch = ModelCheckpoint(dirpath=tmp_path / folder, save_top_k=-1, save_on_train_epoch_end=True)
        trainer = quiet_trainer(
            max_epochs=epochs, accelerator="cpu", callbacks=[every_epoch], enable_checkpointing=True,
            inference_mode=False, num_sanity_val_steps=2, default_root_dir=tmp_path / folder,
        )  # fmt: skip
        trainer.fit(model, toy_loader(), toy_loader(), ckpt_path=ckpt_path)
        return model

    straight = fit("straight", 3)
    (first,) = (tmp_path / "straight").glob("epoch=0-*.ckpt")
    resumed = fit("resumed", 3, ckpt_path=str(first))
    for name, parameter in straight.named_parameters():
        assert torch.equal(parameter, resumed.get_parameter(name)), name
    for name, buffer in straight.posterior_sampler.adaptation.named_buffers():
        assert torch.equal(buffer, resumed.posterior_sampler.adaptation.get_buffer(name)), name
