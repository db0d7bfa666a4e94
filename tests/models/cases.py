"""Small instances of every method for the method contract suite (``test_method_contract.py``).

A method joins the suite with one :class:`MethodCase` in ``CASES``: a builder of a tiny model on
2-D toy data (its chains wrapped in :class:`Recording` so that tests can see every chain's start
and end), and the quickstart recipe that the CLI tests run. The four methods of the papers are
here, and the fifth written on ``docs/extending.md`` ("Writing a method"), built from the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lebm.data import Vocabulary
from lebm.models import (
    DAMC,
    DualMCMC,
    JointHierarchicalEBM,
    LatentEBM,
    Method,
    MultiStageNCE,
    ProductOfRatiosPrior,
    TiltedGaussianPrior,
)
from lebm.nets import (
    CategoricalDecoder,
    EnergyMLP,
    GaussianDecoder,
    LatentDiffusionAmortizer,
    LSTMTextGenerator,
    MLPEmbedding,
    MLPEncoder,
    MLPGenerator,
)
from lebm.samplers import ChainTarget, Langevin, PersistentChains, Sampler
from tests.helpers.page_parts import page_parts, page_recipe

LATENT, DATA = 3, 2


class Recording(Sampler):
    """Runs ``inner`` and keeps the start and end states ``(B, *shape)`` of its last ``keep`` calls."""

    def __init__(self, inner: Sampler, keep: int = 4) -> None:
        self.inner = inner
        self.keep = keep
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def run(self, target: ChainTarget, z: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        start = z.detach().clone()
        end = self.inner.run(target, z, generator=generator)
        self.calls = [*self.calls[-(self.keep - 1) :], (start, end.detach().clone())]
        return end


def recorders(model: Method) -> dict[str, Recording]:
    """Every :class:`Recording` sampler of ``model``, by where it sits."""
    found: dict[str, Recording] = {}
    posterior = getattr(model, "posterior_sampler", None)
    if isinstance(posterior, Recording):
        found["posterior"] = posterior
    prior_sampler = getattr(getattr(model, "prior", None), "sampler", None)
    if isinstance(prior_sampler, Recording):
        found["prior"] = prior_sampler
    if isinstance(prior_sampler, PersistentChains) and isinstance(prior_sampler.sampler, Recording):
        found["prior"] = prior_sampler.sampler
    data_sampler = getattr(model, "data_sampler", None)
    if isinstance(data_sampler, Recording):
        found["data"] = data_sampler
    return found


def toy_loader(n_batches: int = 4, batch_size: int = 16, seed: int = 0) -> DataLoader:
    """Batches ``(B, 2)`` of a two-mode toy (fixed data, fixed order)."""
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n_batches * batch_size, 1), generator=generator) * 2.0 - 1.0
    x = torch.cat([signs * 1.5, torch.zeros_like(signs)], 1) + 0.2 * torch.randn(len(signs), DATA, generator=generator)
    return DataLoader(TensorDataset(x), batch_size=batch_size)


def toy_decoder() -> GaussianDecoder:
    return GaussianDecoder(MLPGenerator(LATENT, [DATA], hidden=16, out_activation=None), sigma=0.3)


def latent_ebm() -> LatentEBM:
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=16), sampler=Recording(Langevin(5, 0.4)))
    return LatentEBM(
        toy_decoder(), prior, posterior_sampler=Recording(Langevin(5, 0.1)), decoder_lr=1e-3, prior_lr=1e-3
    )


def multistage_nce() -> MultiStageNCE:
    """Persistent negatives (rank-local buffers) and one-iteration stages, so stage 1 runs at once."""
    chains = PersistentChains(Recording(Langevin(5, 0.4)), [LATENT], buffer_size=64, reinit_prob=0.1)
    prior = ProductOfRatiosPrior(LATENT, EnergyMLP(LATENT, hidden=16), n_stages=3, sampler=chains)
    return MultiStageNCE(
        toy_decoder(),
        prior,
        posterior_sampler=Recording(Langevin(5, 0.1)),
        stage_iterations=1,
        decoder_lr=1e-3,
        ratio_lr=1e-3,
    )


def dual_mcmc() -> DualMCMC:
    """A data-space EBM on the 2-D toy, an MLP generator and encoder; every chain recorded."""
    return DualMCMC(
        toy_decoder(),
        EnergyMLP(DATA, hidden=16),
        MLPEncoder([DATA], LATENT, hidden=16),
        data_sampler=Recording(Langevin(5, 0.5, noise_std=1e-3)),
        posterior_sampler=Recording(Langevin(5, 0.1)),
        test_data_sampler=Langevin(5, 0.4, noise_std=1e-3),
        temperature=(1e-3 / 0.5) ** 2,  # the wrapped chain's (n / s)^2
        energy_lr=1e-3,
        decoder_lr=1e-3,
        encoder_lr=1e-3,
    )


def joint_hierarchical_ebm() -> JointHierarchicalEBM:
    """Two latent layers (sizes 1 and 2) under one joint EBM, an MLP encoder; the prior chain recorded."""
    prior = TiltedGaussianPrior(
        LATENT, EnergyMLP(LATENT, hidden=16), sampler=Recording(Langevin(5, 0.3)), groups=[1, 2]
    )
    return JointHierarchicalEBM(
        toy_decoder(), prior, MLPEncoder([DATA], LATENT, hidden=16), decoder_lr=1e-3, prior_lr=1e-3
    )


def tiny_amortizer(embed_dim: int = 8, **settings: Any) -> LatentDiffusionAmortizer:
    """A small conditional latent diffusion model on the 2-D toy's observations (3 ancestral steps);
    ``settings`` go to :class:`LatentDiffusionAmortizer` (e.g. ``sampling_noise``)."""
    encoder = MLPEmbedding([DATA], hidden=16, embed_dim=embed_dim)
    sizes: dict[str, Any] = {"nf": 1, "time_dim": 8, "null_hidden": 8, "sampling_steps": 3, **settings}
    return LatentDiffusionAmortizer(LATENT, encoder, embed_dim, **sizes)


def damc(**overrides: Any) -> DAMC:
    """DAMC with a tiny amortizer; prior chains from Q_ema's unconditional mode (no data in their
    start, for the 2-rank test), every chain recorded; one amortizer step per iteration (several
    cannot be spread over accumulated micro-batches: refused, tests/models/test_damc.py), EMA every
    iteration."""
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=16), sampler=Recording(Langevin(5, 0.4)))
    settings: dict[str, Any] = {
        "posterior_sampler": Recording(Langevin(5, 0.1)),
        "evaluation_sampler": Langevin(2, 0.1, noise_std=0.0),
        "generation_sampler": Langevin(3, 0.4),
        "prior_start": "unconditional",
        "amortizer_steps": 1,
        "ema_rate": 0.5,
        "ema_every": 1,
        "decoder_lr": 1e-3,
        "prior_lr": 1e-3,
        "amortizer_lr": 1e-3,
        **overrides,
    }
    return DAMC(toy_decoder(), prior, tiny_amortizer(), **settings)


def mixture_prior_model() -> Method:
    """The page's method (docs/extending.md): a Gaussian-mixture prior learned by MLE."""
    parts = page_parts()
    return parts.MixturePriorModel(
        toy_decoder(),
        parts.GaussianMixturePrior(LATENT, components=3),
        posterior_sampler=Recording(Langevin(5, 0.1)),
        decoder_lr=1e-3,
        prior_lr=1e-3,
    )


#: The sentences whose words make the text model's vocabulary.
TEXT_SENTENCES = ["the cat sees the dog", "a dog likes the cat", "the dog sees a cat"]


def text_model() -> LatentEBM:
    """The text model: LatentEBM on sentences (a tiny ``CategoricalDecoder`` whose vocabulary is
    bound from :data:`TEXT_SENTENCES`), untrained: enough for the input contract."""
    torch.manual_seed(0)
    decoder = CategoricalDecoder(LSTMTextGenerator(16, LATENT, embed_dim=4, hidden_dim=8), max_length=6)
    decoder.vocabulary = Vocabulary.build(TEXT_SENTENCES)
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=8), sampler=Langevin(3, 0.4))
    return LatentEBM(decoder, prior, posterior_sampler=Langevin(3, 0.1))


@dataclass
class MethodCase:
    """One method in the contract suite.

    Attributes:
        name: the test id.
        build: a tiny model on 2-D data (``toy_loader``), chains wrapped in ``Recording``.
        recipe: the method's quickstart recipe (8x8 digits) for the CLI tests.
        cli_args: extra CLI arguments that make a 4-epoch run comparable with 2 + 2 epochs
            (e.g. a fixed stage schedule instead of one split over ``max_epochs``).
        latent_dim: the latent size of ``build()``'s model.
        data_free_chain: a recorded chain whose start depends on the random stream and the weights
            only, not on the batch (under DDP each rank sees other data): the 2-rank test checks
            that rank 0 starts it where a single process does.
        in_library: a method of lebm (False: a user's, from the docs, whose own parts are not lebm nets).
    """

    name: str
    build: Callable[[], Method]
    recipe: str
    cli_args: list[str] = field(default_factory=list)
    latent_dim: int = LATENT
    data_free_chain: str = "posterior"
    in_library: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    MethodCase("LatentEBM", latent_ebm, "recipes/quickstart.yaml"),
    MethodCase(
        "MultiStageNCE",
        multistage_nce,
        "recipes/multistage_nce/quickstart.yaml",
        cli_args=["--model.init_args.stage_iterations", "4"],
    ),
    MethodCase("DualMCMC", dual_mcmc, "recipes/dual_mcmc/quickstart.yaml", data_free_chain="data"),
    MethodCase(
        "JointHierarchicalEBM",
        joint_hierarchical_ebm,
        "recipes/hierarchical/quickstart.yaml",
        data_free_chain="prior",
    ),
    MethodCase("DAMC", damc, "recipes/damc/quickstart.yaml", data_free_chain="prior"),
    MethodCase("MixturePriorModel-docs", mixture_prior_model, page_recipe("my_method.yaml"), in_library=False),
]


# ------------------------------------------------------------------- parts for CLI tests
class PlainEnergy(torch.nn.Module):
    """A user's own energy net: a plain ``nn.Module`` that knows nothing of lebm."""

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.SiLU(), torch.nn.Linear(width, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)


class PoisonAt(L.Callback):
    """Turns the prior's first parameter to NaN at the first batch of ``epoch``: a run that diverges."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            with torch.no_grad():
                next(pl_module.prior.parameters()).fill_(float("nan"))
