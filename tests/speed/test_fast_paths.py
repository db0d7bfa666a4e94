"""FastNets: the fast paths compute what the plain path computes, and reach every net of every method."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from lebm.callbacks import FastNets, apply_fast_paths
from lebm.models import LatentEBM, TiltedGaussianPrior
from lebm.nets import DCGANGenerator, EnergyMLP, GaussianDecoder, SNResNetEnergy
from lebm.samplers import Langevin
from lebm.speed.fast_nets import innermost_nets
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import CASES, toy_loader

#: Float32 tolerance for a fast path against the plain one: kernels sum in another order, and a
#: chain of Langevin steps carries those rounding differences forward (observed: < 1e-5).
TOLERANCE = 1e-4


def trainer(callbacks: list, steps: int = 3) -> L.Trainer:
    return quiet_trainer(
        max_steps=steps,
        accelerator="cpu",
        callbacks=callbacks,
        inference_mode=False,
        limit_val_batches=0,
    )


@pytest.mark.parametrize("case", [c for c in CASES if c.in_library], ids=lambda case: case.name)
def test_the_default_selection_covers_every_parameter_of_every_method(case) -> None:
    """Every parameter of lebm's methods sits in an lebm net that FastNets selects (a user's method
    may hold parameters of its own, such as the docs' mixture prior, which FastNets leaves alone)."""
    model = case.build()
    selected = {id(p) for _, net in innermost_nets(model) for p in net.parameters()}
    assert selected == {id(p) for p in model.parameters()}


def image_model() -> LatentEBM:
    torch.manual_seed(0)
    decoder = GaussianDecoder(DCGANGenerator(8, 3, 16, ngf=8), sigma=0.3)
    return LatentEBM(decoder, TiltedGaussianPrior(8, EnergyMLP(8, hidden=16)), posterior_sampler=Langevin(10, 0.1))


def test_channels_last_posterior_chain_matches_the_plain_one() -> None:
    plain = image_model()
    fast = copy.deepcopy(plain)
    assert apply_fast_paths(fast, channels_last=True) == ["decoder.net", "prior.energy_net"]
    conv = fast.decoder.net.net[2].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    z_plain = plain.infer(x, generator=torch.Generator().manual_seed(3))
    z_fast = fast.infer(x, generator=torch.Generator().manual_seed(3))
    assert (z_plain - z_fast).abs().max() < TOLERANCE
    assert (z_plain - x.new_zeros(())).abs().max() > 0.1  # the chain moved


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_compiled_training_matches_plain_training_and_checkpoints_are_interchangeable(one_thread, tmp_path) -> None:
    plain = CASES[0].build()
    assert isinstance(plain, LatentEBM)
    fast = copy.deepcopy(plain)
    initial = copy.deepcopy(plain.state_dict())
    torch._dynamo.reset()
    L.seed_everything(5, verbose=False)
    trainer([]).fit(plain, toy_loader())
    L.seed_everything(5, verbose=False)
    callback = FastNets(compile=True)
    run = trainer([callback])
    run.fit(fast, toy_loader())
    assert callback.applied == ["decoder.net", "prior.energy_net"]
    assert hasattr(fast.decoder.net, "_compiled_call_impl") and fast.decoder.net._compiled_call_impl is not None
    moved = False
    for (name, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        assert (p - q).abs().max() < TOLERANCE, name
        moved |= bool((p - initial[name]).abs().max() > 1e-6)
    assert moved  # training changed the parameters
    run.save_checkpoint(tmp_path / "fast.ckpt")
    restored = LatentEBM.load_from_checkpoint(tmp_path / "fast.ckpt")  # a plain model reads it
    for key, value in fast.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_compile_modes_that_make_their_own_cuda_graphs_are_refused(mode: str) -> None:
    with pytest.raises(ValueError, match="makes CUDA graphs of its own.*max-autotune-no-cudagraphs"):
        FastNets(compile_mode=mode)
    with pytest.raises(ValueError, match="makes CUDA graphs of its own"):
        apply_fast_paths(image_model(), compile=True, compile_mode=mode)


def test_a_wrong_net_name_lists_the_right_ones() -> None:
    with pytest.raises(ValueError, match=r"\['decoder\.generator'\].*decoder\.net, prior\.energy_net"):
        apply_fast_paths(CASES[0].build(), compile=True, nets=["decoder.generator"])


def test_channels_last_data_chain_on_a_spectral_norm_resnet_matches_the_plain_one() -> None:
    """Dual-MCMC's data chain: Langevin on images through the spectral-norm ResNet energy."""
    torch.manual_seed(0)
    plain = SNResNetEnergy(channels=3, image_size=16, widths=(8, 8), downsample=(True, False))
    fast = copy.deepcopy(plain)
    assert apply_fast_paths(fast, channels_last=True) == [""]  # a bare net is its own innermost net
    assert any(p.dim() == 4 and not p.is_contiguous() for p in fast.parameters())  # reordered
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    chain = Langevin(10, 0.5, noise_std=1e-3)
    ends = [
        chain(net, x0, freeze=[net], module_mode="eval", generator=torch.Generator().manual_seed(1))
        for net in (plain, fast)
    ]
    assert (ends[0] - ends[1]).abs().max() < TOLERANCE
    assert (ends[0] - x0).abs().max() > 1e-3  # the chain moved


def test_a_users_own_net_left_out_is_named_in_a_warning() -> None:
    model = CASES[0].build()
    model.prior.energy_net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with pytest.warns(UserWarning, match=r"not the parameters of \['prior.energy_net.0', 'prior.energy_net.2'\]"):
        FastNets(channels_last=True).setup(trainer([]), model, "fit")
