"""MALA and HMC in every chain of the four methods, chosen from a recipe: a short ``lebm fit``
per method (in this process), the adaptation state in the checkpoint, the samplers rebuilt by
``lebm.load``. Device: CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from cli_runner import SHORT_RUN, run_cli

import lebm
from lebm.samplers import HMC, MALA

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
