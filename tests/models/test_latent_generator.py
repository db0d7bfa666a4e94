"""The class layout: ``LatentVariableModel`` and ``DualMCMC`` side by side on ``LatentGeneratorModel``,
which holds what both share (posterior inference, reconstruction, input checks, the evaluation
step); each keeps its own data model (``generate``, ``score``, ``evaluation_values``). Device: CPU."""

from __future__ import annotations

import pytest
import torch
from cases import DATA, LATENT, dual_mcmc, latent_ebm

from lebm.models import DualMCMC, LatentVariableModel
from lebm.models.latent_generator import LatentGeneratorModel


def test_dual_mcmc_sits_beside_the_latent_variable_model_on_the_shared_base() -> None:
    assert issubclass(DualMCMC, LatentGeneratorModel) and issubclass(LatentVariableModel, LatentGeneratorModel)
    assert not issubclass(DualMCMC, LatentVariableModel)
    for shared in ("infer", "reconstruct", "observations", "evaluation_step"):
        assert getattr(DualMCMC, shared) is getattr(LatentGeneratorModel, shared), shared
    for own in ("generate", "score", "evaluation_values"):
        assert getattr(DualMCMC, own) is not getattr(LatentVariableModel, own), own


@pytest.mark.parametrize("build", [latent_ebm, dual_mcmc], ids=["LatentEBM", "DualMCMC"])
def test_the_shared_user_api_refuses_bad_input_with_one_message(build) -> None:
    model = build()
    for call in (model.infer, model.reconstruct, model.score):
        with pytest.raises(ValueError, match="observations hold NaN or infinite values"):
            call(torch.full((2, DATA), float("nan")))
    assert model.infer(torch.zeros(3, DATA), refine=False).shape == (3, LATENT)
