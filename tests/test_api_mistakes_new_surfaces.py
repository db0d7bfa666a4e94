"""The Python API's raw and silent cases on the newer surfaces, one row each (CPU): settings that
leave a part of DAMC untrained, a ``sampler`` handed to a call that runs no chain, ``infer``'s
``start``, a checkpoint loaded with another method's class, priors built without a usable energy
net, ``WeightEMA``'s decay, ``from_recipe(None)`` and ``map_location`` values torch rejects: each
gets one line naming the problem and the fix, at build or before any chain runs; the rows beside
them show the same arguments, given as they should be, are honoured."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import lebm
from lebm.callbacks import FID, WeightEMA
from lebm.checkpoints import CheckpointError
from lebm.models import DAMC, GaussianPrior, LatentEBM, MultiStageNCE, ProductOfRatiosPrior, TiltedGaussianPrior
from lebm.nets import EnergyMLP
from lebm.samplers import ChainInitializer, Langevin, NoiseStart
from tests.models.cases import (
    DATA,
    LATENT,
    JointHierarchicalEBM,
    MLPEncoder,
    Recording,
    damc,
    multistage_nce,
    toy_decoder,
)

CHECKPOINTS = Path(__file__).resolve().parent / "fixtures" / "checkpoints"


@pytest.fixture(scope="module")
def toy() -> Any:
    """LatentEBM on 2-D data, latents of 3 (lebm 0.1.0's fixture checkpoint)."""
    return lebm.load(str(CHECKPOINTS / "latent_ebm.ckpt"))


@pytest.fixture(scope="module")
def dual() -> Any:
    """DualMCMC on 2-D data (the fixture checkpoint)."""
    return lebm.load(str(CHECKPOINTS / "dual_mcmc.ckpt"))


@pytest.fixture(scope="module")
def amortized() -> DAMC:
    """A tiny DAMC whose generate(n) decodes the amortizer's samples (its default mode)."""
    torch.manual_seed(0)
    return damc(generation_sampler=None).eval()


@pytest.fixture(scope="module")
def gaussian() -> JointHierarchicalEBM:
    """A model whose prior is a Gaussian, sampled exactly (a two-layer VLAE)."""
    torch.manual_seed(0)
    prior = GaussianPrior(LATENT, groups=[1, 2])
    return JointHierarchicalEBM(toy_decoder(), prior, MLPEncoder([DATA], LATENT, hidden=16)).eval()


@pytest.fixture(scope="module")
def staged() -> MultiStageNCE:
    """Multi-stage NCE before its first stage: its prior is still the Gaussian p_0."""
    torch.manual_seed(0)
    return multistage_nce().eval()


X = torch.randn(3, DATA, generator=torch.Generator().manual_seed(1))
CHAIN = Langevin(3, 0.1)

#: ``{case: (fixture or None, call, error, the message's words)}``.
MISTAKES: dict[str, tuple[str | None, Callable[[Any], Any], type[Exception], str]] = {
    "DAMC amortizer_steps 0": (
        None,
        lambda _: damc(amortizer_steps=0),
        ValueError,
        "DAMC amortizer_steps=0 never trains the amortizer, whose samples start every chain and make generate(n)'s "
        "samples: set model.init_args.amortizer_steps >= 1",
    ),
    "DAMC ema_rate 0": (
        None,
        lambda _: damc(ema_rate=0.0),
        ValueError,
        "DAMC ema_rate=0 never moves the EMA copy Q_ema from its first weights, and Q_ema starts every training "
        "chain: set model.init_args.ema_rate > 0",
    ),
    "load onto the meta device": (
        None,
        lambda _: lebm.load(str(CHECKPOINTS / "latent_ebm.ckpt"), map_location="meta"),
        ValueError,
        "map_location='meta' holds no values, so a checkpoint's weights cannot be loaded into it: pass "
        "map_location='cpu'",
    ),
    "load onto cpu:0": (
        None,
        lambda _: lebm.load(str(CHECKPOINTS / "latent_ebm.ckpt"), map_location="cpu:0"),
        ValueError,
        "map_location='cpu:0': the CPU takes no index when loading a checkpoint; pass map_location='cpu'",
    ),
    "DAMC ema_rate 1e-12, in effect 0": (
        None,
        lambda _: damc(ema_rate=1e-12),
        ValueError,
        "DAMC ema_rate=1e-12 (in float32 its step 1 - rate rounds to 1: in effect 0) never moves the EMA copy",
    ),
    "DAMC mask_probability 1e-9, in effect 0": (
        None,
        lambda _: damc(mask_probability=1e-9),
        ValueError,
        "DAMC mask_probability=1e-09 (in effect 0 or 1) never trains the amortizer's unconditional branch",
    ),
    "DAMC mask_probability 1": (
        None,
        lambda _: damc(mask_probability=1.0),
        ValueError,
        "mask_probability=1 masks every example, so the amortizer's conditional branch Q(x), which starts every "
        "posterior chain, never trains: set model.init_args.mask_probability below 1",
    ),
    "DAMC mask_probability 0 while generate reads the unconditional branch": (
        None,
        lambda _: damc(mask_probability=0.0),
        ValueError,
        "never trains the amortizer's unconditional branch Q(None), which generation='amortizer' and "
        "prior_start='unconditional' read: set model.init_args.mask_probability > 0",
    ),
    "DAMC generate's sampler in the amortizer mode": (
        "amortized",
        lambda m: m.generate(3, sampler=CHAIN),
        ValueError,
        "generate(n, sampler=...): mode 'amortizer' decodes the amortizer's unconditional samples and runs no "
        "chain, so sampler=Langevin(",
    ),
    "generate's sampler for a Gaussian prior": (
        "gaussian",
        lambda m: m.generate(3, sampler=CHAIN),
        ValueError,
        "generate(n, sampler=...): the model's prior (GaussianPrior) is sampled exactly, without a chain",
    ),
    "generate's sampler before the first stage": (
        "staged",
        lambda m: m.generate(3, sampler=CHAIN),
        ValueError,
        "the model's prior (ProductOfRatiosPrior) is sampled exactly, without a chain",
    ),
    "a FID sampler for a generation that runs no chain": (
        "amortized",
        lambda m: FID(sampler=CHAIN).check_method(m),
        ValueError,
        "but DAMC's generate(n) runs no chain, so the sampler would not be used: drop the FID's sampler",
    ),
    "a Gaussian prior's sample with a sampler": (
        None,
        lambda _: GaussianPrior(LATENT).sample(4, sampler=CHAIN),
        ValueError,
        "GaussianPrior.sample(n, sampler=...): the prior is a Gaussian, sampled exactly without a chain",
    ),
    "DualMCMC generate's sampler without revision": (
        "dual",
        lambda m: m.generate(3, revise=False, sampler=CHAIN),
        ValueError,
        "generate(n, revise=False, sampler=...): without revision no chain runs, so sampler=",
    ),
    "infer's start of another width": (
        "toy",
        lambda m: m.infer(X, start=torch.zeros(3, 5)),
        ValueError,
        "infer(x, start=...): start must have shape (3, 3) for 3 observations, got (3, 5): pass latents of the "
        "model's prior, 3 numbers each",
    ),
    "infer's initializer of another width": (
        "toy",
        lambda m: m.infer(X, start=lebm.samplers.NoiseStart(16)),
        ValueError,
        "infer(x, start=NoiseStart(...)) starts chains of states (16,), but this model's chains run on states (3,): "
        "give an initializer made for this model's latent size (3,)",
    ),
    "infer's network start of another width": (
        "toy",
        lambda m: m.infer(X, start=lebm.samplers.NetworkStart(nn.Linear(DATA, 5))),
        ValueError,
        "infer(x, start=NetworkStart(...)) starts chains of states (5,), but this model's chains run on states (3,)",
    ),
    "infer's network start made for other observations": (
        "toy",
        lambda m: m.infer(X, start=lebm.samplers.NetworkStart(nn.Linear(DATA + 5, LATENT))),
        ValueError,
        "infer(x, start=NetworkStart(...)): the initializer could not start from observations (3, 2) (mat1 and mat2",
    ),
    "a prior's start of another width": (
        "toy",
        lambda m: m.prior.sample(4, start=torch.zeros(4, 7)),
        ValueError,
        "TiltedGaussianPrior.sample(start=...) starts chains of states (7,), but this model's chains run on",
    ),
    "infer's start for fewer observations": (
        "toy",
        lambda m: m.infer(X, start=torch.zeros(2, 3)),
        ValueError,
        "start must have shape (3, 3) for 3 observations, got (2, 3): pass one latent per observation",
    ),
    "infer's start of complex numbers": (
        "toy",
        lambda m: m.infer(X, start=torch.zeros(3, 3, dtype=torch.complex64)),
        TypeError,
        "infer(x, start=...): start must hold real numbers (latents), got torch.complex64",
    ),
    "infer's start of NaN": (
        "toy",
        lambda m: m.infer(X, start=torch.full((3, 3), float("nan"))),
        ValueError,
        "infer(x, start=...): start holds NaN or infinite values",
    ),
    "infer's start of another type": (
        "toy",
        lambda m: m.infer(X, start=object()),
        TypeError,
        "infer(x, start=...): start must be a tensor of latents (B, 3), got object",
    ),
    "DAMC loading a LatentEBM checkpoint": (
        None,
        lambda _: DAMC.load_from_checkpoint(CHECKPOINTS / "latent_ebm.ckpt"),
        CheckpointError,
        "latent_ebm.ckpt was written by LatentEBM (lebm.models.LatentEBM), not DAMC: load it with "
        "LatentEBM.load_from_checkpoint(path), or lebm.load(path)",
    ),
    "LatentEBM loading a DualMCMC checkpoint": (
        None,
        lambda _: LatentEBM.load_from_checkpoint(str(CHECKPOINTS / "dual_mcmc.ckpt")),
        CheckpointError,
        "was written by DualMCMC (lebm.models.DualMCMC), not LatentEBM: load it with DualMCMC.load_from_checkpoint",
    ),
    "a prior without an energy net": (
        None,
        lambda _: TiltedGaussianPrior(LATENT, None),
        ValueError,
        "TiltedGaussianPrior energy_net is missing: pass a net (B, latent_dim) -> (B,), e.g. lebm.nets.EnergyMLP(3)",
    ),
    "a prior whose energy net is a name": (
        None,
        lambda _: TiltedGaussianPrior(LATENT, "EnergyMLP"),
        TypeError,
        "TiltedGaussianPrior energy_net must be a torch.nn.Module (B, latent_dim) -> (B,)",
    ),
    "a prior whose energy net reads another size": (
        None,
        lambda _: TiltedGaussianPrior(LATENT, EnergyMLP(LATENT + 1, hidden=8)),
        ValueError,
        "the latent size is 3 (model.init_args.prior.init_args.latent_dim) but the prior's energy_net (EnergyMLP) "
        "takes in_dim=4. Set model.init_args.prior.init_args.energy_net.init_args.in_dim to 3",
    ),
    "a prior whose energy net of no declared size reads another size": (
        None,
        lambda _: TiltedGaussianPrior(LATENT, torch.nn.Linear(LATENT + 1, 1)),
        ValueError,
        "TiltedGaussianPrior energy_net (Linear) cannot take latents of latent_dim=3 (",
    ),
    "a prior whose energy net returns (B, 1)": (
        None,
        lambda _: TiltedGaussianPrior(LATENT, nn.Linear(LATENT, 1)),
        ValueError,
        "energy_net (Linear) must return one value per latent, (B,), got (2, 1) for 2 latents",
    ),
    "a multi-stage prior whose ratio net reads another size": (
        None,
        lambda _: ProductOfRatiosPrior(LATENT, EnergyMLP(LATENT + 2, hidden=8), n_stages=2),
        ValueError,
        "the latent size is 3 (model.init_args.prior.init_args.latent_dim) but the prior's ratio_net (EnergyMLP) "
        "takes in_dim=5",
    ),
    "WeightEMA's decay as text": (
        None,
        lambda _: WeightEMA(decay="0.99"),
        ValueError,
        "WeightEMA decay must be a number, got '0.99' (str): write it without quotes, decay=0.99",
    ),
    "WeightEMA's start step as text": (
        None,
        lambda _: WeightEMA(start_step="10"),
        ValueError,
        "WeightEMA start_step must be a whole number, got '10' (str)",
    ),
    "from_recipe(None)": (
        None,
        lambda _: lebm.from_recipe(None),
        TypeError,
        "from_recipe(name) takes a recipe file or the name of a recipe that comes with lebm",
    ),
    "map_location a number": (
        None,
        lambda _: lebm.load(str(CHECKPOINTS / "latent_ebm.ckpt"), map_location=0),
        ValueError,
        "map_location=0 is not a device: pass a device name such as map_location='cpu'",
    ),
    "map_location a list, to load_from_checkpoint": (
        None,
        lambda _: LatentEBM.load_from_checkpoint(CHECKPOINTS / "latent_ebm.ckpt", map_location=["cpu"]),
        ValueError,
        "map_location=['cpu'] is not a device",
    ),
    "map_location a mapping to a number": (
        None,
        lambda _: lebm.load(str(CHECKPOINTS / "latent_ebm.ckpt"), map_location={"cpu": 1}),
        ValueError,
        "map_location={'cpu': 1}: a mapping must map device names to device names",
    ),
}


@pytest.mark.parametrize("case", MISTAKES)
def test_a_mistake_gets_one_line_with_the_fix(case: str, request: pytest.FixtureRequest) -> None:
    fixture, call, error, message = MISTAKES[case]
    model = request.getfixturevalue(fixture) if fixture else None
    with pytest.raises(error) as raised:
        call(model)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_start_given_as_an_array_or_in_float64_is_the_chains_start(toy: Any) -> None:
    """``infer(x, start=..., refine=False)`` returns the start: an array and float64 latents are
    taken as the model's float32 latents, values unchanged."""
    start = np.linspace(-1, 1, 9).reshape(3, 3)
    for given in (start, torch.from_numpy(start)):
        z = toy.infer(X, start=given, refine=False)
        assert z.dtype == torch.float32
        torch.testing.assert_close(z, torch.from_numpy(start).float())


class _Float64Start(ChainInitializer):
    """A user's initializer that draws its starts in float64 (NumPy's habit)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def draw(self, n, context, generator, device):
        return torch.from_numpy(np.linspace(-1.0, 1.0, n * self.width).reshape(n, self.width))


def test_an_initializers_start_in_another_dtype_runs_in_the_models(toy: Any) -> None:
    """CPU. A float64 start from a user's initializer, into a float32 model's posterior chain or its
    prior chain, is cast to float32 (torch's dtype error before); into the same model in float64
    (outside a 64-true run, where torch's default dtype stays float32), a float32 start, and the
    prior's own noise start, are cast to float64."""
    z = toy.infer(X, start=_Float64Start(3), refine=False)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, torch.linspace(-1.0, 1.0, len(X) * 3).reshape(len(X), 3))
    assert toy.infer(X, start=_Float64Start(3)).dtype == torch.float32  # through the chain
    start = torch.zeros(4, 3, dtype=torch.float64)
    assert toy.prior.sample(4, start=start).dtype == torch.float32
    wide = copy.deepcopy(toy).double()
    assert wide.infer(X.double(), start=NoiseStart(3)).dtype == torch.float64
    assert wide.prior.sample(4, start=start.float()).dtype == torch.float64
    assert wide.prior.sample(4).dtype == wide.generate(4).dtype == torch.float64  # its own noise start too


def test_a_sampler_given_where_a_chain_runs_is_the_one_that_runs(amortized: DAMC) -> None:
    """DAMC's chain mode runs the sampler given (refused in the amortizer mode, never ignored)."""
    spy = Recording(Langevin(2, 0.1))
    assert amortized.generate(4, mode="ebm", sampler=spy).shape == (4, DATA)
    assert len(spy.calls) == 1 and spy.calls[0][0].shape == (4, LATENT)


def test_a_fid_sampler_is_taken_where_generation_runs_a_chain(amortized: DAMC, toy: Any) -> None:
    """The FID's build check refuses a sampler only where generate(n) would: not for a mode that runs
    a chain, nor for a method whose generation runs one."""
    FID(sampler=CHAIN, generate_kwargs={"mode": "ebm"}).check_method(amortized)
    FID(sampler=CHAIN).check_method(toy)


def test_a_fid_sampler_for_a_multistage_run_waits_for_its_first_stage(
    staged: MultiStageNCE, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before its first stage a multi-stage prior is the exact Gaussian: the run's FID sampler is not
    refused at build and not passed to generate(n) (which would refuse it) until a stage completes."""
    fid = FID(sampler=CHAIN)
    fid.check_method(staged)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(staged, "generate", lambda n, **kwargs: calls.append(kwargs) or torch.zeros(n, 1, 4, 4))
    fid._generate(staged, 3)
    assert calls == [{}]


def test_mask_probability_0_with_nothing_reading_the_unconditional_branch_warns() -> None:
    with pytest.warns(UserWarning, match=r"mask_probability=0 never trains .* generate\(n, mode='amortizer'\)"):
        model = damc(mask_probability=0.0, generation="ebm", prior_start="posterior")
    assert model.hparams.mask_probability == 0.0


def test_a_subclass_of_the_writing_method_loads_its_checkpoint() -> None:
    """The check names another method, not a user's subclass of the one that wrote the checkpoint."""

    class MyLatentEBM(LatentEBM):
        pass

    model = MyLatentEBM.load_from_checkpoint(CHECKPOINTS / "latent_ebm.ckpt")
    assert type(model) is MyLatentEBM and model.generate(2).shape == (2, DATA)


def test_weight_ema_takes_whole_floats_and_numbers_in_range() -> None:
    ema = WeightEMA(decay=0.5, start_step=2.0)
    assert (ema.decay, ema.start_step) == (0.5, 2)


def test_mask_probability_0_with_generation_refined_from_the_amortizer_is_refused_too() -> None:
    """``generation="amortizer+chain"`` starts its chains from the unconditional branch, as
    ``"amortizer"`` does: refused alike (not a warning), naming the setting."""
    with pytest.raises(ValueError, match=r"mask_probability=0 .* which generation='amortizer\+chain' reads"):
        damc(mask_probability=0.0, generation="amortizer+chain", prior_start="posterior")


def test_a_sampler_given_to_the_amortizer_and_chain_mode_refines_the_amortizers_samples(amortized: DAMC) -> None:
    """The documented way to refine the amortizer's samples runs the sampler given, once, from them."""
    spy = Recording(Langevin(2, 0.1))
    assert amortized.generate(4, mode="amortizer+chain", sampler=spy).shape == (4, DATA)
    assert len(spy.calls) == 1 and spy.calls[0][0].shape == (4, LATENT)


@pytest.mark.parametrize("rate", [2.0, 0.0, -0.1, float("nan"), "0.5"])
def test_an_ema_rate_outside_zero_to_one_is_refused_by_the_average(rate: Any) -> None:
    """CPU. ``AveragedStart.update(online, rate)`` moves the average ``rate`` of the way: 2.0 would
    overshoot, 0 or nan never move it (or poison it); each is one line naming the range."""
    from lebm.samplers.initializers import AveragedStart
    from tests.models.cases import tiny_amortizer

    online = tiny_amortizer()
    average = AveragedStart(online)
    with pytest.raises(ValueError, match=r"^AveragedStart\.update rate must be"):
        average.update(online, rate)
    average.update(online, 1.0)


def test_a_quoted_val_fraction_is_named_with_the_fix(tmp_path: Path) -> None:
    """CPU. ``MNISTAnomalyDataModule(val_fraction='0.5')`` (a recipe's quoted number): one line, not
    Python's ``'<=' not supported``."""
    from lebm.data.tasks.anomaly import MNISTAnomalyDataModule

    with pytest.raises(ValueError, match=r"val_fraction must be a number, got '0\.5' \(str\): write it without quotes"):
        MNISTAnomalyDataModule(root=str(tmp_path), val_fraction="0.5")
