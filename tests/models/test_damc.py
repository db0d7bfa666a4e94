"""DAMC as a LightningModule (CPU): what its training iteration does, in the official order, its
chain starts, the amortizer's EMA and step-decayed rates, its evaluation and the checks at build
(the shared contract — API shapes, checkpoints, resume, bf16, DDP — is in test_method_contract.py; each
loss's sign and tensors, the chains' starts, the evaluation's copy and chain in test_damc_pinned.py)."""

from __future__ import annotations

import math

import pytest
import torch
from cases import DATA, LATENT, damc, tiny_amortizer, toy_loader

from lebm.models import DAMC, GaussianPrior, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer


def same(parameters, others) -> bool:
    """Whether two sequences of tensors are equal, one by one."""
    return all(torch.equal(a, b) for a, b in zip(list(parameters), list(others), strict=True))


def fit(model: DAMC, tmp_path, batches: int = 4, **trainer_args) -> None:
    settings = dict(max_epochs=1, default_root_dir=str(tmp_path), accelerator="cpu", enable_checkpointing=False)
    settings.update(trainer_args)
    quiet_trainer(**settings).fit(model, toy_loader(n_batches=batches))


def test_the_ema_moves_every_ema_every_iterations_by_its_rate(tmp_path) -> None:
    model = damc(ema_rate=0.25, ema_every=3)
    before = [p.clone() for p in model.amortizer_ema.average.parameters()]
    fit(model, tmp_path, batches=2)  # 2 iterations: no EMA update yet
    assert same(model.amortizer_ema.average.parameters(), before)
    model = damc(ema_rate=0.25, ema_every=2)
    previous = [p.clone() for p in model.amortizer_ema.average.parameters()]
    fit(model, tmp_path, batches=2)  # the 2nd iteration updates: 0.25 online + 0.75 average
    online = list(model.amortizer.parameters())
    for averaged, current, old in zip(model.amortizer_ema.average.parameters(), online, previous, strict=True):
        torch.testing.assert_close(averaged, 0.25 * current + 0.75 * old)


def test_rates_decay_per_iteration_to_their_floor(tmp_path) -> None:
    """lr <- max(decay * lr, floor) every lr_decay_every iterations, for the three optimisers."""
    model = damc(lr_decay=0.5, lr_decay_every=2, lr_floor=3e-4, decoder_lr=1e-3, prior_lr=2e-3, amortizer_lr=4e-3)
    fit(model, tmp_path, batches=5)
    rates = [opt.param_groups[0]["lr"] for opt in model.optimizer_list()]
    # after 5 updates: 2 decays (at 2 and 4): x0.25, floored at 3e-4
    assert rates == pytest.approx([max(4e-3 * 0.25, 3e-4), max(1e-3 * 0.25, 3e-4), max(2e-3 * 0.25, 3e-4)])
    assert [type(opt.optimizer).__name__ for opt in model.optimizer_list()] == ["AdamW", "Adam", "Adam"]


def test_each_net_is_moved_only_by_its_own_loss_in_the_official_order(tmp_path) -> None:
    """With the generator's and the prior's rates at 0 only the amortizer moves (its loss reaches
    neither), and with the amortizer's at 0 it stays while the other two move."""
    frozen_others = damc(decoder_lr=0.0, prior_lr=0.0, amortizer_steps=3)
    decoder, prior = (
        [p.clone() for p in frozen_others.decoder.parameters()],
        [p.clone() for p in frozen_others.prior.parameters()],
    )
    fit(frozen_others, tmp_path, batches=1)
    assert same(frozen_others.decoder.parameters(), decoder)
    assert same(frozen_others.prior.parameters(), prior)
    frozen_amortizer = damc(amortizer_lr=0.0)
    amortizer = [p.clone() for p in frozen_amortizer.amortizer.parameters()]
    fit(frozen_amortizer, tmp_path, batches=1)
    assert same(frozen_amortizer.amortizer.parameters(), amortizer)


def test_the_amortizer_steps_several_times_on_one_iterations_chain_outputs(tmp_path) -> None:
    calls = []
    model = damc(amortizer_steps=4)
    original = model.amortizer.loss
    model.amortizer.loss = lambda *a, **k: (calls.append(a[1].clone()), original(*a, **k))[1]
    fit(model, tmp_path, batches=2)
    assert len(calls) == 8
    for step in range(1, 4):  # the same teacher samples for the iteration's four steps
        torch.testing.assert_close(calls[step], calls[0], rtol=0, atol=0)
    assert not torch.equal(calls[4], calls[0])
    torch.testing.assert_close(calls[0], model.posterior_sampler.calls[0][1], rtol=0, atol=0)


def test_several_amortizer_steps_under_accumulation_are_refused_in_one_line(tmp_path) -> None:
    model = damc(amortizer_steps=2)
    with pytest.raises(ValueError, match="amortizer_steps=2") as raised:
        fit(model, tmp_path, accumulate_grad_batches=2)
    assert "\n" not in str(raised.value) and "batch_size" in str(raised.value)


def test_warmup_iterations_start_the_chains_from_noise(tmp_path) -> None:
    model = damc(warmup_iterations=2, prior_start="posterior")
    used = []
    original = model.amortizer_ema.start
    model.amortizer_ema.start = lambda *a, **k: (used.append(1), original(*a, **k))[1]
    fit(model, tmp_path, batches=3)
    assert len(used) == 1  # only the third iteration's posterior start (its prior start reuses it)


def test_the_official_score_weights_the_squared_error_by_one() -> None:
    """score = ||g(z) - x||^2 + U(z): with sigma = 1/sqrt(2) the decoder's nll is the squared error,
    so both choices agree; at sigma = 1 the official score's reconstruction term is twice the nll."""
    x, z = torch.randn(6, DATA), torch.randn(6, LATENT)

    def scores(sigma: float, choice: str) -> dict:
        torch.manual_seed(0)
        model = damc(score_reconstruction=choice)
        model.decoder.sigma = sigma
        return model.anomaly_terms(x, z)

    sse, nll = scores(2**-0.5, "sse"), scores(2**-0.5, "nll")
    torch.testing.assert_close(sse["score"], nll["score"])
    sse, nll = scores(1.0, "sse"), scores(1.0, "nll")
    torch.testing.assert_close(sse["score_reconstruction_term"], 2 * nll["score_reconstruction_term"])
    torch.testing.assert_close(sse["score_prior_term"], nll["score_prior_term"])


def test_the_evaluation_chain_reads_the_likelihood_at_evaluation_sigma_and_training_does_not() -> None:
    """Device: CPU. ``evaluation_sigma`` (the official re-scoring of held-out 1: 0.1) changes the
    evaluation chain's likelihood only: ``infer(x)`` equals the chain of a decoder trained with
    that sigma, the training posterior chain (an explicit sampler) and the decoder's sigma after
    the call are the trained ones, and the score's unweighted squared error does not move with it."""
    x = torch.randn(8, DATA)

    def latents(model: DAMC, **kwargs) -> torch.Tensor:
        return model.infer(x, generator=torch.Generator().manual_seed(4), **kwargs)

    torch.manual_seed(0)
    rescored = damc(evaluation_sigma=0.1)
    trained_sigma = rescored.decoder.sigma
    torch.manual_seed(0)
    sharp = damc()
    sharp.decoder.sigma = 0.1
    torch.manual_seed(0)
    plain = damc()
    torch.testing.assert_close(latents(rescored), latents(sharp), rtol=0, atol=0)
    assert (latents(rescored) - latents(plain)).abs().max() > 1e-3  # the sigma moves the chain
    assert rescored.decoder.sigma == trained_sigma
    chain = Langevin(3, 0.1, noise_std=0.0)
    torch.testing.assert_close(latents(rescored, sampler=chain), latents(plain, sampler=chain), rtol=0, atol=0)
    z = torch.randn(8, LATENT)
    torch.testing.assert_close(rescored.anomaly_terms(x, z)["score"], plain.anomaly_terms(x, z)["score"])


def test_evaluation_sigma_is_checked_where_it_is_made() -> None:
    """Device: CPU. A non-positive sigma is refused at build, naming the option."""
    with pytest.raises(ValueError, match="evaluation_sigma"):
        damc(evaluation_sigma=0.0)


def test_generate_modes_run_the_chains_they_name() -> None:
    torch.manual_seed(0)
    model = damc(generation_sampler=None)  # the prior's (recorded) chain generates
    model.eval()
    chain = model.prior.sampler
    count = len(chain.calls)
    assert model.generate(5).shape == (5, DATA)  # the amortizer alone: no chain
    assert len(chain.calls) == count
    assert model.generate(5, mode="ebm").shape == (5, DATA)
    assert len(chain.calls) == count + 1
    model.generate(5, mode="amortizer+chain", generator=torch.Generator().manual_seed(0))
    start = chain.calls[-1][0]
    expected = model.amortizer.start(5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(start, expected)
    with pytest.raises(ValueError, match="generate\\(mode=...\\) must be one of"):
        model.generate(2, mode="diffusion")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prior_start": "posterior_noise"}, "model.init_args.prior_start must be one of"),
        ({"mask_probability": 1.5}, "mask_probability"),
        ({"amortizer_steps": -1}, "amortizer_steps"),
        ({"ema_every": 0}, "ema_every"),
        ({"amortizer_lr": -1.0}, "amortizer_lr"),
        ({"lr_decay_every": 0}, "lr_decay_every"),
    ],
)
def test_bad_settings_are_refused_when_built(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        damc(**change)
    assert "\n" not in str(raised.value)


def test_a_prior_without_an_energy_and_an_amortizer_of_another_size_are_refused() -> None:
    decoder = GaussianDecoder(MLPGenerator(LATENT, [DATA], hidden=8, out_activation=None), sigma=0.3)
    with pytest.raises(ValueError, match="TiltedGaussianPrior"):
        DAMC(decoder, GaussianPrior(LATENT), tiny_amortizer())
    prior = TiltedGaussianPrior(LATENT + 1, EnergyMLP(LATENT + 1, hidden=8), sampler=Langevin(2, 0.4))
    wide = GaussianDecoder(MLPGenerator(LATENT + 1, [DATA], hidden=8, out_activation=None), sigma=0.3)
    model = DAMC(wide, prior, tiny_amortizer())
    with pytest.raises(ValueError, match="amortizer.init_args.latent_dim"):
        model.check_run()


def test_the_step_decay_factor_is_held_at_its_floor() -> None:
    from lebm.training.optimizers import StepDecayFactor

    factor = StepDecayFactor(0.99, 1000, 1e-5 / 2e-4)
    assert factor(999) == 1.0 and factor(1000) == pytest.approx(0.99) and factor(2500) == pytest.approx(0.99**2)
    assert factor(10**6) == pytest.approx(0.05)  # 0.99^1000 = 4e-5 is below the floor: 1e-5 / 2e-4
    assert math.isclose(factor(299_000), max(0.99**299, 0.05))


def test_evaluation_sigma_with_a_decoder_without_an_observation_noise_is_refused_in_one_line() -> None:
    """Device: CPU. ``evaluation_sigma`` swaps a ``GaussianDecoder``'s sigma; another decoder is
    refused at build, naming the option to leave unset."""
    from tests.models.cases import toy_decoder

    class Unswappable(type(toy_decoder())):
        observation_noise = None

    decoder = toy_decoder()
    decoder.__class__ = Unswappable
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=16), sampler=Langevin(2, 0.4))
    with pytest.raises(ValueError, match="leave model.init_args.evaluation_sigma unset"):
        DAMC(decoder, prior, tiny_amortizer(), evaluation_sigma=0.1, score_reconstruction="nll")
