"""MALA and HMC: statistics on analytic targets, acceptance, step-size adaptation, state in
checkpoints. Device: CPU."""

from __future__ import annotations

import math

import pytest
import torch

from lebm.samplers import HMC, MALA, Langevin, PersistentChains

COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
PRECISION = torch.linalg.inv(COV)  # eigenvalues 1/1.8 and 1/0.2 = 5


def gaussian_energy(z: torch.Tensor) -> torch.Tensor:
    """``U(z) = z^T COV^-1 z / 2`` ``(B,)``: a correlated 2-D Gaussian."""
    return 0.5 * ((z @ PRECISION) * z).sum(1)


MIXTURE_MEANS = torch.tensor([[-1.2, 0.0], [1.2, 0.0]])
MIXTURE_WEIGHTS = torch.tensor([0.3, 0.7])


def mixture_energy(z: torch.Tensor) -> torch.Tensor:
    """A two-component mixture of unit Gaussians at (+-1.2, 0), weights 0.3 and 0.7 ``(B,)``."""
    squared = (z.unsqueeze(1) - MIXTURE_MEANS).square().sum(2)
    return -torch.logsumexp(MIXTURE_WEIGHTS.log() - squared / 2, dim=1)


def run(sampler, energy, n: int = 4000, seed: int = 0, start_std: float = 1.0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, 2, generator=generator) * start_std
    return sampler(energy, z0, inputs=(), generator=generator, return_diagnostics=True, **kwargs)


SAMPLERS = {
    "MALA": lambda: MALA(n_steps=150, step_size=0.7),
    "HMC": lambda: HMC(n_steps=40, step_size=0.3, n_leapfrog=5),
    "HMC-mass": lambda: HMC(n_steps=100, step_size=0.3, n_leapfrog=5, mass=[1.0, 2.0]),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_samples_a_correlated_gaussian(name: str) -> None:
    """4000 chains: mean within 0.06 of 0, covariance entries within 0.08 of COV (Monte Carlo
    error of 4000 draws is about 0.02-0.03)."""
    z, stats = run(SAMPLERS[name](), gaussian_energy)
    assert z.mean(0).abs().max() < 0.06
    assert (torch.cov(z.T) - COV).abs().max() < 0.08
    assert 0.3 < float(stats["acceptance"].mean()) < 1.0


@pytest.mark.parametrize("name", ["MALA", "HMC"])
def test_samples_a_two_component_mixture(name: str) -> None:
    """The share of mass on the right (x > 0) and the mean of x match the mixture's values."""
    z, _ = run(SAMPLERS[name](), mixture_energy, start_std=2.0, seed=1)
    # P(x > 0) = sum_k w_k Phi(mu_k), mean x = sum_k w_k mu_k
    phi = 0.5 * (1 + torch.erf(MIXTURE_MEANS[:, 0] / math.sqrt(2)))
    assert abs(float((z[:, 0] > 0).float().mean()) - float((MIXTURE_WEIGHTS * phi).sum())) < 0.03
    assert abs(float(z[:, 0].mean()) - float((MIXTURE_WEIGHTS * MIXTURE_MEANS[:, 0]).sum())) < 0.08


def test_mala_is_exact_where_unadjusted_langevin_is_biased() -> None:
    """At s = 0.5 unadjusted Langevin's stationary variance along the precision-5 direction is
    2 / (2 - 5 s^2/2) = 1.45 times the true 0.2; MALA's is the true one."""
    major = torch.tensor([1.0, -1.0]) / math.sqrt(2)  # eigenvector of COV with variance 0.2
    z_ula, _ = run(Langevin(n_steps=150, step_size=0.5), gaussian_energy)
    z_mala, _ = run(MALA(n_steps=150, step_size=0.5), gaussian_energy)
    var_ula, var_mala = float((z_ula @ major).var()), float((z_mala @ major).var())
    assert var_ula / 0.2 > 1.3  # the bias, visible
    assert abs(var_mala / 0.2 - 1) < 0.07


def test_a_rejected_proposal_with_a_nan_energy_leaves_the_chain_where_it_was() -> None:
    """An energy that is NaN for x > 2 (a hole in the target): no chain ever enters it."""

    def holed(z: torch.Tensor) -> torch.Tensor:
        energy = z.square().sum(1) / 2
        return torch.where(z[:, 0] > 2.0, torch.full_like(energy, float("nan")), energy)

    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn(2000, 2, generator=generator).clamp(max=1.9)
    z, stats = MALA(n_steps=60, step_size=0.9)(holed, z0, generator=generator, return_diagnostics=True)
    assert torch.isfinite(z).all() and bool((z[:, 0] <= 2.0).all())
    assert torch.isfinite(stats["energy"]).all()


def test_mala_adaptation_reaches_its_target_acceptance() -> None:
    """Started at a step far too small (acceptance near 1), dual averaging brings MALA's acceptance
    after warm-up to the target 0.574 within 0.03, then stops changing the step size."""
    sampler = MALA(n_steps=400, step_size=0.05, adapt_steps=300)
    _, stats = run(sampler, gaussian_energy, n=1000)
    assert float(stats["acceptance"][0]) > 0.9
    assert abs(float(stats["acceptance"][320:].mean()) - 0.574) < 0.03
    steps = stats["step_size"]
    assert torch.all(steps[300:] == steps[-1]) and float(steps[-1]) > 3 * sampler.step_size
    assert int(sampler.adaptation.count) == 300


def test_hmc_adaptation_meets_its_target_during_warm_up_and_stays_at_or_above_it() -> None:
    """HMC's acceptance falls off a cliff at the leapfrog's stability limit, so the dual-averaging
    iterates oscillate around the step that meets the target: their acceptance averages to the
    target 0.65 (within 0.03 over the warm-up's second half), and the averaged step used after
    warm-up sits below the cliff: acceptance at or above the target (0.90 here, where the iterates span 0.4 to 1.2)."""
    sampler = HMC(n_steps=700, step_size=0.02, n_leapfrog=5, adapt_steps=600)
    _, stats = run(sampler, gaussian_energy, n=1000)
    acceptance = stats["acceptance"]
    assert float(acceptance[0]) > 0.9
    assert abs(float(acceptance[300:600].mean()) - 0.65) < 0.03
    assert 0.62 < float(acceptance[620:].mean()) < 0.95
    assert torch.all(stats["step_size"][600:] == stats["step_size"][-1])


def test_after_warm_up_the_averaged_step_is_used_not_the_last_noisy_iterate() -> None:
    """Dual averaging's iterates follow each acceptance they see; the step used after warm-up is
    their weighted average (the docstring's ``epsbar``), so a few outlying acceptances at the end of
    warm-up do not decide it. Here the last 3 of 200 warm-up steps meet a target 10^4 times stiffer
    (every proposal rejected): the iterate falls about 10-fold (acceptance near 1 at that step),
    the average by under 10%, and MALA after warm-up, back on the Gaussian, accepts near its
    target 0.574 (0.65 at the averaged step; 0.9995 at the last iterate)."""
    warmup, outliers = 200, 3
    sampler = MALA(n_steps=warmup - outliers, step_size=0.05, adapt_steps=warmup)
    z, _ = run(sampler, gaussian_energy, n=1000)
    sampler.n_steps = outliers
    _, stats = sampler(
        lambda z: 1e4 * gaussian_energy(z), z, generator=torch.Generator().manual_seed(1), return_diagnostics=True
    )
    assert float(stats["acceptance"].max()) == 0.0
    assert float(stats["step_size"][-1]) < 0.3 * float(stats["step_size"][0])  # the iterate collapses
    sampler.n_steps = 60
    _, after = sampler(gaussian_energy, z, generator=torch.Generator().manual_seed(2), return_diagnostics=True)
    assert int(sampler.adaptation.count) == warmup and "step_size" not in after  # warm-up over
    assert 0.5 < float(after["acceptance"].mean()) < 0.8


def test_adaptation_counts_steps_over_calls_and_the_state_round_trips() -> None:
    """Warm-up spans calls; a state_dict (what a checkpoint holds) restores the adapted step,
    per chain too, into a fresh sampler."""
    sampler = MALA(n_steps=30, step_size=0.05, adapt_steps=50, adapt="per_chain")
    for seed in range(3):
        run(sampler, gaussian_energy, n=16, seed=seed)
    assert int(sampler.adaptation.count) == 50 and sampler.adapted_step_size.shape == (16,)
    fresh = MALA(n_steps=30, step_size=0.05, adapt_steps=50, adapt="per_chain")
    fresh.load_state_dict(sampler.state_dict())
    assert torch.equal(fresh.adapted_step_size, sampler.adapted_step_size)
    assert float(sampler.adapted_step_size.median()) > 0.2
    adapting = MALA(n_steps=5, step_size=0.05, adapt_steps=50, adapt="per_chain")
    run(adapting, gaussian_energy, n=16)
    with pytest.raises(ValueError, match="keep the number of chains fixed"):
        run(adapting, gaussian_energy, n=8)


def test_per_chain_adaptation_after_warm_up_serves_another_batch_with_the_median_step() -> None:
    """After warm-up a batch of another size runs at the median adapted step: the chains of a MALA
    with that fixed step, and no adaptation update any more."""
    sampler = MALA(n_steps=40, step_size=0.05, adapt_steps=40, adapt="per_chain")
    run(sampler, gaussian_energy, n=16)
    state = {name: buffer.clone() for name, buffer in sampler.adaptation.named_buffers()}
    z, stats = run(sampler, gaussian_energy, n=8, seed=3)
    fixed, _ = run(MALA(n_steps=40, step_size=float(sampler.adapted_step_size.median())), gaussian_energy, n=8, seed=3)
    assert torch.allclose(z, fixed, atol=1e-5) and "step_size" not in stats
    assert all(torch.equal(buffer, state[name]) for name, buffer in sampler.adaptation.named_buffers())


def test_scaling_the_step_size_scales_the_adapted_one_too() -> None:
    """What a divergence recovery does: every step size held, adapted or not, halves."""
    sampler = MALA(n_steps=20, step_size=0.05, adapt_steps=20)
    run(sampler, gaussian_energy, n=64)
    before = float(sampler.adapted_step_size)
    assert sampler.scale_step_size(0.5) == pytest.approx(0.025)
    assert float(sampler.adapted_step_size) == pytest.approx(before / 2)
    chains = PersistentChains(MALA(5, 0.2), [2], buffer_size=8)
    assert chains.scale_step_size(0.5) == pytest.approx(0.1) and chains.sampler.step_size == pytest.approx(0.1)
    with pytest.raises(ValueError, match="positive factor"):
        sampler.scale_step_size(0.0)


def test_chains_are_reproducible_from_the_generator_and_differ_across_seeds() -> None:
    for make in (lambda: MALA(20, 0.5), lambda: HMC(5, 0.3, n_leapfrog=3)):
        a, _ = run(make(), gaussian_energy, n=32, seed=5)
        b, _ = run(make(), gaussian_energy, n=32, seed=5)
        c, _ = run(make(), gaussian_energy, n=32, seed=6)
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_reference_term_is_part_of_the_target() -> None:
    """``U(z) = ||z - 2||^2/2`` plus a N(0, I) reference is N(1, I/2)."""
    for sampler in (MALA(100, 0.6), HMC(30, 0.3, n_leapfrog=4)):
        z, _ = run(sampler, lambda z: (z - 2).square().sum(1) / 2, reference_precision=1.0)
        assert (z.mean(0) - 1).abs().max() < 0.05 and (z.var(0) - 0.5).abs().max() < 0.05


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="step_size must be > 0"):
        MALA(step_size=0.0)
    with pytest.raises(ValueError, match="n_leapfrog must be >= 1"):
        HMC(n_leapfrog=0)
    with pytest.raises(ValueError, match="target_acceptance must be < 1"):
        MALA(target_acceptance=1.5)
    with pytest.raises(ValueError, match="adapt must be one of 'shared', 'per_chain'"):
        HMC(adapt="each")
    with pytest.raises(ValueError, match="mass must be positive"):
        HMC(mass=[1.0, -1.0])
    with pytest.raises(ValueError, match="one value per coordinate"):
        run(HMC(2, 0.1, mass=[1.0, 2.0, 3.0]), gaussian_energy, n=4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MALA(6, 0.3, adapt_steps=10),
        lambda: HMC(3, 0.2, n_leapfrog=2, adapt_steps=4, adapt="per_chain", mass=[1.0, 2.0]),
    ],
    ids=["MALA", "HMC-per-chain"],
)
def test_a_strict_replay_of_the_recorded_chain_is_the_eager_chain(make) -> None:
    """Under the CPU's strict op replay (a CUDA graph's rules: the recorded operations replayed with
    their Python numbers baked in), the chains, their acceptance, the adapted step sizes, the
    adaptation counter and the caller's stream match an eager sampler's, call after call."""
    from lebm.recording import capture_stats
    from lebm.testing.capture import emulate_on_cpu

    energy = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))

    def total(z: torch.Tensor) -> torch.Tensor:
        return energy(z).squeeze(1) + gaussian_energy(z)

    eager, captured = make(), make()
    eager.cuda_graph = False  # keeps this one out of capture
    streams = [torch.Generator().manual_seed(2) for _ in range(2)]
    with emulate_on_cpu():
        for seed in (1, 2, 3):
            z0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(seed))
            runs = [
                sampler(total, z0, inputs=(), freeze=[energy], generator=stream, return_diagnostics=True)
                for sampler, stream in zip((eager, captured), streams, strict=True)
            ]
            (z_eager, stats_eager), (z_replay, stats_replay) = runs
            assert torch.equal(z_eager, z_replay)
            assert torch.equal(stats_eager["acceptance"], stats_replay["acceptance"])
            assert torch.equal(streams[0].get_state(), streams[1].get_state())
            for name, buffer in eager.adaptation.named_buffers():
                assert torch.equal(buffer, captured.adaptation.get_buffer(name)), name
    # the second call replays the first's graph, warm-up ends during it, and the third call (no longer
    # adapting: on the CPU the update is left out after warm-up) records a graph without the update
    assert capture_stats([captured]) == {"captures": 2, "replays": 1, "eager_calls": 0}
    assert not captured.adapting


def test_a_first_call_in_inference_mode_leaves_a_state_later_chains_can_update() -> None:
    """``trainer.test`` runs under ``torch.inference_mode()``: a per-chain state sized there must not be
    an inference tensor, or every later (training) chain fails to update it."""
    sampler = MALA(n_steps=3, step_size=0.1, adapt_steps=10, adapt="per_chain")
    with torch.inference_mode():
        run(sampler, gaussian_energy, n=8)
    assert not sampler.adaptation.h_bar.is_inference()
    run(sampler, gaussian_energy, n=8)
    assert int(sampler.adaptation.count) == 6


def test_only_a_sampler_in_training_mode_adapts() -> None:
    """Validation, testing and ``lebm.load`` put the model (and its samplers) in eval mode: their
    chains use the step size as it is and leave the state alone, so evaluating never changes what
    training does next."""
    sampler = MALA(n_steps=5, step_size=0.1, adapt_steps=100)
    run(sampler, gaussian_energy, n=16)
    state = {name: buffer.clone() for name, buffer in sampler.adaptation.named_buffers()}
    sampler.eval()
    _, stats = run(sampler, gaussian_energy, n=16, seed=4)
    assert "step_size" not in stats
    assert all(torch.equal(buffer, state[name]) for name, buffer in sampler.adaptation.named_buffers())
    sampler.train()
    run(sampler, gaussian_energy, n=16, seed=5)
    assert int(sampler.adaptation.count) == 10


def test_under_bf16_autocast_the_accept_reject_step_uses_float32_energies() -> None:
    """An energy of a few hundred nats rounded to bfloat16 moves by its rounding (about 1): at a tiny
    step every proposal must still be accepted, as without autocast."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1))

    def energy(z: torch.Tensor) -> torch.Tensor:
        return 2000 * net(z).squeeze(1) + z.square().sum(1) / 2

    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn(256, 8, generator=generator)
    for sampler in (MALA(10, 1e-3), HMC(5, 1e-3, n_leapfrog=2)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, stats = sampler(energy, z0, freeze=[net], generator=generator, return_diagnostics=True)
        assert float(stats["acceptance"].mean()) > 0.99, type(sampler).__name__


def test_the_state_keeps_its_precision_when_the_model_is_cast_to_bfloat16() -> None:
    """``module.to(torch.bfloat16)`` (a bf16-true run) leaves the step counter an exact integer, and
    HMC's mass is rebuilt from its settings in float32, never rounded."""
    sampler = HMC(2, 0.1, n_leapfrog=2, mass=[3.0, 7.0], adapt_steps=1000).to(torch.bfloat16)
    for _ in range(150):
        sampler.adaptation.update(torch.full((4,), 0.5))
    assert sampler.adaptation.count.dtype == torch.long and int(sampler.adaptation.count) == 150
    run(sampler, gaussian_energy, n=4)
    assert sampler.inverse_mass.dtype == torch.float32
    assert torch.allclose(sampler.inverse_mass, torch.tensor([1 / 3, 1 / 7]), rtol=1e-6)


# ------------------------------------------------------------------ HMC's mass moves the positions
@pytest.mark.parametrize("mass", [[4.0, 0.25], 4.0], ids=["per-coordinate", "one number"])
def test_hmc_moves_each_coordinate_by_its_inverse_mass(mass: float | list[float]) -> None:
    """On a flat energy (no force: every proposal accepted, momenta unchanged) one transition of L
    leapfrog steps moves ``z`` by ``L eps M^-1 p`` with ``p ~ N(0, M)``: a Gaussian displacement of
    standard deviation ``L eps / sqrt(m)`` per coordinate (0.3 for mass 4, 1.2 for mass 1/4; a
    position update without ``M^-1`` would give ``L eps sqrt(m)``, the other way round). 4000
    chains: the standard deviations within 5% (their Monte Carlo error is about 1%)."""
    steps, eps = 3, 0.2
    flat = lambda z: 0.0 * z.sum(1)  # noqa: E731
    z, stats = run(HMC(n_steps=1, step_size=eps, n_leapfrog=steps, mass=mass), flat, start_std=0.0)
    expected = steps * eps / torch.as_tensor(mass).sqrt().expand(2)
    assert float(stats["acceptance"].min()) == 1.0
    assert z.mean(0).abs().max() < 0.1 * expected.min()
    assert torch.allclose(z.std(0), expected, rtol=0.05), (z.std(0), expected)


def test_a_mass_matched_to_an_ill_conditioned_gaussian_makes_every_coordinate_mix_at_once() -> None:
    """Standard deviations 1 and 10: with ``M = Sigma^-1`` every coordinate oscillates at angular
    frequency 1, so a trajectory of length ``L eps = 1.5`` (about a quarter period) moves each to
    a nearly independent draw: from ``z = 0``, two transitions reach the variances 1 and 100
    (within 15%). With the identity mass (or a mass that reaches the momenta but not the position
    update) the wide coordinate moves ten times too slowly and stays far below 100."""
    sigma = torch.tensor([1.0, 10.0])

    def energy(z: torch.Tensor) -> torch.Tensor:
        return (z / sigma).square().sum(1) / 2

    matched, _ = run(HMC(n_steps=2, step_size=0.3, n_leapfrog=5, mass=(1 / sigma**2).tolist()), energy, start_std=0.0)
    identity, _ = run(HMC(n_steps=2, step_size=0.3, n_leapfrog=5), energy, start_std=0.0)
    assert torch.allclose(matched.var(0), sigma**2, rtol=0.15), matched.var(0)
    assert float(identity.var(0)[1]) < 0.1 * 100
