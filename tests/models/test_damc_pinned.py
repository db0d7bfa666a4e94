"""DAMC's training step, evaluation and generation pinned (CPU): after one iteration on a known
batch each net has stepped down its own loss at the tensors the method names (the prior's energy
down on the posterior chains' ends and up on the prior chains', the generator on the posterior
chains' ends, the amortizer on the detached chain outputs with the mask's conditions); which
amortizer copy starts the training chains (``Q_ema``) and which one evaluates and generates
(``Q``, ``Q_ema`` with ``evaluate_with_ema``); which chain ``infer``, ``score``, ``reconstruct``
and validation run; the mask's rate; every setting of ``unconditional_training``,
``unconditional_target`` and ``prior_start``, the prior's ``init_std``, the amortizer's
``sampling_noise`` and its layers' linear skip (Yu et al. 2023, official ``train_gen_recon.py``,
``train_anomaly_det.py``, ``src/diffusion_net.py``).

A step's direction is read from Adam's first update, ``-lr * g / (|g| + eps)``: every parameter
with a clear gradient ``g`` of the named loss, recomputed at the pre-step weights, must have moved
against it. One Trainer iteration per setting, shared by a module-scoped fixture."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from cases import DATA, LATENT, Recording, damc, tiny_amortizer, toy_loader
from torch import Tensor, nn

from lebm.models import DAMC
from lebm.nets.diffusion import ConcatSquashLinear
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer

#: Gradients smaller than this are left out of the direction check (AdamW's decay could outweigh them).
CLEAR_GRADIENT = 1e-5


@dataclass
class StartCall:
    """One chain start drawn from an amortizer copy: which copy, how many, conditional or not, and
    its random stream's state before the draw (to draw it again)."""

    copy: str
    n: int | None
    context: Tensor | None
    state: Tensor | None


@dataclass
class LossCall:
    """One call of the amortizer's loss: its observations, teacher latents, mask and the stream's state."""

    x: Tensor | None
    z: Tensor
    conditional: Tensor | None
    state: Tensor


@dataclass
class Spies:
    """What an amortizer copy started and what its loss was called with, in order."""

    starts: list[StartCall] = field(default_factory=list)
    losses: list[LossCall] = field(default_factory=list)
    unwatched: dict[str, Callable[..., Tensor]] = field(default_factory=dict)

    def copies(self) -> list[str]:
        """The copy of every start, ``"online"`` or ``"ema"``, in order."""
        return [call.copy for call in self.starts]


def spy_on_starts(model: DAMC, spies: Spies) -> None:
    """Record every start of the online amortizer ``Q`` and of the EMA copy's average ``Q_ema``
    (``spies.unwatched``: their starts unrecorded, to draw again)."""
    for name, initializer in (("online", model.amortizer), ("ema", model.amortizer_ema.average)):
        original = initializer.start
        spies.unwatched[name] = original

        def start(n=None, context=None, *, generator=None, device=None, _name=name, _original=original):  # noqa: ANN001, ANN202
            state = generator.get_state() if generator is not None else None
            spies.starts.append(StartCall(_name, n, context, state))
            return _original(n, context, generator=generator, device=device)

        initializer.start = start


def spy_on_loss(model: DAMC, spies: Spies) -> None:
    """Record every call of the online amortizer's loss (the only copy that trains)."""
    original = model.amortizer.loss

    def loss(x, z, conditional=None, *, generator=None):  # noqa: ANN001, ANN202
        spies.losses.append(LossCall(x, z.detach().clone(), conditional, generator.get_state()))
        return original(x, z, conditional, generator=generator)

    model.amortizer.loss = loss


def other_weights() -> dict[str, Tensor]:
    """An amortizer's weights of another draw: the EMA copy made unlike the online ``Q``."""
    return tiny_amortizer().state_dict()


@dataclass
class Iteration:
    """One training iteration of DAMC on one known batch ``x`` ``(B, 2)``.

    Attributes:
        model: the model after the iteration.
        x: the batch.
        before: pre-step copies of ``decoder``, ``prior``, ``amortizer`` and ``amortizer_ema`` (its average).
        spies: the starts and amortizer losses of the iteration.
    """

    model: DAMC
    x: Tensor
    before: dict[str, nn.Module]
    spies: Spies

    @property
    def posterior_chain(self) -> tuple[Tensor, Tensor]:
        """The posterior chain's start ``z0`` and end ``z+`` ``(B, latent)``."""
        return self.model.posterior_sampler.calls[-1]

    @property
    def prior_chain(self) -> tuple[Tensor, Tensor]:
        """The prior chains' start and end ``z-`` ``(prior_chain_count(B), latent)``."""
        return self.model.prior.sampler.calls[-1]


def train_one_iteration(root: Any, batch_size: int = 16, init_std: float = 1.0, **settings: Any) -> Iteration:
    """DAMC (:func:`cases.damc` with ``settings``) after one iteration on one batch, its EMA copy
    unlike ``Q`` and its prior chains' noise of standard deviation ``init_std``."""
    model = damc(**settings)
    model.prior.init_std = init_std
    model.amortizer_ema.average.load_state_dict(other_weights())
    before = {name: copy.deepcopy(getattr(model, name)) for name in ("decoder", "prior", "amortizer")}
    before["amortizer_ema"] = copy.deepcopy(model.amortizer_ema.average)
    spies = Spies()
    spy_on_starts(model, spies)
    spy_on_loss(model, spies)
    loader = toy_loader(n_batches=1, batch_size=batch_size)
    quiet_trainer(max_epochs=1, default_root_dir=str(root), accelerator="cpu").fit(model, loader)
    return Iteration(model, next(iter(loader))[0], before, spies)


def moved_against(before: nn.Module, after: nn.Module, loss_of: Callable[[nn.Module], Tensor]) -> dict[str, int]:
    """Check that Adam's first step moved every parameter of ``before`` against the gradient of
    ``loss_of(net)`` at the pre-step weights (where the gradient is clear); the number of
    parameter values checked, per parameter name."""
    net = copy.deepcopy(before).requires_grad_(True)
    names, parameters = zip(*net.named_parameters(), strict=True)
    gradients = torch.autograd.grad(loss_of(net), parameters, allow_unused=True)
    checked = {}
    for name, gradient, old, new in zip(names, gradients, before.parameters(), after.parameters(), strict=True):
        if gradient is None:
            continue
        clear = gradient.abs() > CLEAR_GRADIENT
        moved = torch.sign(new.detach() - old.detach())[clear]
        wrong = int((moved != -torch.sign(gradient[clear])).sum())
        assert wrong == 0, f"{name}: {wrong} of {int(clear.sum())} values did not step down the loss"
        checked[name] = int(clear.sum())
    return checked


def assert_mostly_checked(net: nn.Module, checked: dict[str, int]) -> None:
    """Most of ``net``'s parameter values had a clear gradient: the direction check is not vacuous."""
    total = sum(p.numel() for p in net.parameters())
    assert sum(checked.values()) > total / 2, f"only {sum(checked.values())} of {total} values checked"


def replay(state: Tensor) -> torch.Generator:
    """A stream at ``state``: the draws of the call that saw it, again."""
    generator = torch.Generator()
    generator.set_state(state)
    return generator


# ------------------------------------------------------------------ training, "masked" (images)
@pytest.fixture(scope="module")
def masked(tmp_path_factory: pytest.TempPathFactory) -> Iteration:
    """The image recipes' iteration: 2B prior chains from ``[Q_ema(x); N(0, init_std^2 I)]``, the
    mask's unconditional rows fitted to the posterior chains' ends."""
    return train_one_iteration(
        tmp_path_factory.mktemp("masked"),
        init_std=4.0,
        prior_start="posterior+noise",
        unconditional_training="masked",
        unconditional_target="posterior",
        mask_probability=0.5,
    )


def test_the_prior_steps_its_energy_down_on_posterior_samples_and_up_on_prior_samples(masked: Iteration) -> None:
    """The EBM's step descends ``mean E(z+) - mean E(z-)`` at the two chains' ends (z+ positives)."""
    z_pos, z_neg = masked.posterior_chain[1], masked.prior_chain[1]

    def contrast(prior: nn.Module) -> Tensor:
        return prior.residual_energy(z_pos).mean() - prior.residual_energy(z_neg).mean()

    checked = moved_against(masked.before["prior"], masked.model.prior, contrast)
    assert_mostly_checked(masked.model.prior, checked)


def test_the_generator_steps_down_the_squared_error_at_the_posterior_chains_end(masked: Iteration) -> None:
    z_pos = masked.posterior_chain[1]
    checked = moved_against(
        masked.before["decoder"], masked.model.decoder, lambda g: g.squared_error(masked.x, z_pos).mean()
    )
    assert_mostly_checked(masked.model.decoder, checked)


def test_the_amortizer_steps_down_its_diffusion_loss_on_the_posterior_chains_end(masked: Iteration) -> None:
    """One loss call per amortizer step, on the observations, the detached chain ends z+ (the
    unconditional rows too: ``unconditional_target="posterior"``) and the mask's conditions; the
    step descends that loss at its draws (u, eps, the null embeddings')."""
    (call,) = masked.spies.losses
    z_pos = masked.posterior_chain[1]
    torch.testing.assert_close(call.x, masked.x, rtol=0, atol=0)
    torch.testing.assert_close(call.z, z_pos, rtol=0, atol=0)
    assert call.conditional is not None and call.conditional.shape == (16,)

    def distillation(amortizer: nn.Module) -> Tensor:
        return amortizer.loss(masked.x, z_pos, call.conditional, generator=replay(call.state))

    checked = moved_against(masked.before["amortizer"], masked.model.amortizer, distillation)
    assert_mostly_checked(masked.model.amortizer, checked)


def test_the_training_chains_start_from_the_ema_copys_conditional_samples(masked: Iteration) -> None:
    """Only ``Q_ema`` starts chains in training (``Q`` never), conditioned on the batch, and the
    posterior chain starts at exactly that draw."""
    (call,) = masked.spies.starts
    assert call.copy == "ema" and call.context is not None
    torch.testing.assert_close(call.context, masked.x, rtol=0, atol=0)
    again = masked.before["amortizer_ema"].start(context=masked.x, generator=replay(call.state))
    torch.testing.assert_close(masked.posterior_chain[0], again, rtol=0, atol=0)


def test_the_prior_chains_start_at_the_posterior_start_and_the_priors_init_std(masked: Iteration) -> None:
    """``posterior+noise``: 2B prior chains, the first B from the posterior chains' own start
    ``Q_ema(x)``, the last B from ``N(0, init_std^2 I)`` (init_std 4 here; the sample standard
    deviation of 48 values within 5 of its standard errors)."""
    start = masked.prior_chain[0]
    noise = start[16:]
    assert start.shape == (32, LATENT)
    torch.testing.assert_close(start[:16], masked.posterior_chain[0], rtol=0, atol=0)
    relative_error = 5 / math.sqrt(2 * noise.numel())
    assert abs(noise.std().item() / 4.0 - 1) < relative_error


# ------------------------------------------------------------- the mask's rate and the prior target
@pytest.fixture(scope="module")
def masked_prior_target(tmp_path_factory: pytest.TempPathFactory) -> Iteration:
    """A batch of 1024 with ``mask_probability=0.3`` and the pre-release target, the prior chains' ends."""
    return train_one_iteration(
        tmp_path_factory.mktemp("prior_target"),
        batch_size=1024,
        prior_start="posterior+noise",
        unconditional_training="masked",
        unconditional_target="prior",
        mask_probability=0.3,
    )


def test_each_example_is_unconditional_with_the_mask_probability(masked_prior_target: Iteration) -> None:
    """The conditional rows' share is ``1 - p_mask`` within 5 binomial standard errors."""
    (call,) = masked_prior_target.spies.losses
    n, p_conditional = len(call.conditional), 0.7
    share = call.conditional.float().mean().item()
    assert abs(share - p_conditional) < 5 * math.sqrt(p_conditional * (1 - p_conditional) / n)


def test_the_prior_target_fits_the_unconditional_rows_to_the_prior_chains_ends(masked_prior_target: Iteration) -> None:
    """Conditional rows are fitted to their posterior chain's end, unconditional rows to the
    prior chains' ends that started from ``Q_ema(x)`` (the first B of 2B)."""
    (call,) = masked_prior_target.spies.losses
    z_pos, z_neg = masked_prior_target.posterior_chain[1], masked_prior_target.prior_chain[1]
    conditional = call.conditional
    assert 0 < int(conditional.sum()) < len(conditional)
    torch.testing.assert_close(call.z[conditional], z_pos[conditional], rtol=0, atol=0)
    torch.testing.assert_close(call.z[~conditional], z_neg[: len(z_pos)][~conditional], rtol=0, atol=0)


# ----------------------------------------------------------------- training, "both" (MNIST anomaly)
@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iteration:
    """The MNIST recipe's iteration (B prior chains from ``Q_ema(x)``, both branches on every
    example), the unconditional branch on the prior chains' ends so that its teacher differs."""
    return train_one_iteration(
        tmp_path_factory.mktemp("both"),
        prior_start="posterior",
        unconditional_training="both",
        unconditional_target="prior",
    )


def test_both_trains_the_conditional_and_the_unconditional_branch_on_every_example(both: Iteration) -> None:
    """Per amortizer step, a conditional loss on (x, z+) and an unconditional one on the target
    z-; the step descends their sum, moving the encoder and the null embedding alike."""
    conditional, unconditional = both.spies.losses
    z_pos, z_neg = both.posterior_chain[1], both.prior_chain[1]
    assert conditional.conditional is None and unconditional.conditional is None and unconditional.x is None
    torch.testing.assert_close(conditional.x, both.x, rtol=0, atol=0)
    torch.testing.assert_close(conditional.z, z_pos, rtol=0, atol=0)
    torch.testing.assert_close(unconditional.z, z_neg, rtol=0, atol=0)

    def distillation(amortizer: nn.Module) -> Tensor:
        stream = replay(conditional.state)
        return amortizer.loss(both.x, z_pos, generator=stream) + amortizer.loss(None, z_neg, generator=stream)

    checked = moved_against(both.before["amortizer"], both.model.amortizer, distillation)
    assert sum(n for name, n in checked.items() if name.startswith("encoder.")) > 0
    assert sum(n for name, n in checked.items() if name.startswith("null.")) > 0
    assert_mostly_checked(both.model.amortizer, checked)


def test_the_posterior_prior_start_runs_b_prior_chains_from_the_posterior_start(both: Iteration) -> None:
    torch.testing.assert_close(both.prior_chain[0], both.posterior_chain[0], rtol=0, atol=0)
    assert both.spies.copies() == ["ema"]


# ------------------------------------------------------------------------ the other prior starts
def test_the_unconditional_prior_start_draws_the_ema_copys_unconditional_samples() -> None:
    model = damc(prior_start="unconditional")
    model.amortizer_ema.average.load_state_dict(other_weights())
    spies = Spies()
    spy_on_starts(model, spies)
    z0 = torch.zeros(6, LATENT)
    start = model.prior_chain_start(z0, torch.Generator().manual_seed(1))
    (call,) = spies.starts
    assert (call.copy, call.n, call.context) == ("ema", 6, None)
    again = spies.unwatched["ema"](6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(start, again, rtol=0, atol=0)


def test_the_noise_prior_start_draws_the_priors_init_std() -> None:
    """``prior_start="noise"`` (LatentEBM's): the prior chains start from ``N(0, init_std^2 I)``."""
    model = damc(prior_start="noise")
    model.prior.init_std = 4.0
    generator = torch.Generator().manual_seed(2)
    n = 200
    model.prior.sample(n, generator=generator, start=model.prior_chain_start(torch.zeros(n, LATENT), generator))
    noise = model.prior.sampler.calls[-1][0]
    assert noise.shape == (n, LATENT)
    assert abs(noise.std().item() / 4.0 - 1) < 5 / math.sqrt(2 * noise.numel())


# ----------------------------------------------------------------------- evaluation and generation
def evaluation_model(**settings: Any) -> tuple[DAMC, Spies]:
    """An untrained DAMC whose EMA copy is unlike ``Q``, its evaluation chain recorded, with spies."""
    model = damc(evaluation_sampler=Recording(Langevin(2, 0.1, noise_std=0.0)), **settings)
    model.amortizer_ema.average.load_state_dict(other_weights())
    spies = Spies()
    spy_on_starts(model, spies)
    return model, spies


def assert_evaluated_with(model: DAMC, spies: Spies, copy_name: str, x: Tensor) -> None:
    """Every start came from ``copy_name`` conditioned on ``x``, every chain was the evaluation
    chain (never the training posterior chain), starting at that copy's draw."""
    assert spies.copies() and set(spies.copies()) == {copy_name}
    assert all(call.context is not None and torch.equal(call.context, x) for call in spies.starts)
    assert model.posterior_sampler.calls == [], "the noisy training chain ran in evaluation"
    assert len(model.evaluation_sampler.calls) == len(spies.starts)
    draw = spies.unwatched[copy_name]
    for call, (start, _) in zip(spies.starts, model.evaluation_sampler.calls, strict=True):
        torch.testing.assert_close(start, draw(context=x, generator=replay(call.state)), rtol=0, atol=0)


@pytest.mark.parametrize(("evaluate_with_ema", "copy_name"), [(False, "online"), (True, "ema")])
def test_infer_score_and_reconstruct_run_the_evaluation_chain_from_the_evaluation_copy(
    evaluate_with_ema: bool, copy_name: str
) -> None:
    """``Q`` (official) or ``Q_ema`` (``evaluate_with_ema``), refined by the noise-free evaluation chain;
    the score is taken at that chain's end."""
    model, spies = evaluation_model(evaluate_with_ema=evaluate_with_ema)
    x = next(iter(toy_loader(n_batches=1, batch_size=8)))[0]
    z = model.infer(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, model.evaluation_sampler.calls[-1][1], rtol=0, atol=0)
    scores = model.score(x, generator=torch.Generator().manual_seed(1))
    end = model.evaluation_sampler.calls[-1][1]
    torch.testing.assert_close(scores, model.anomaly_terms(x, end)["score"])
    model.reconstruct(x, generator=torch.Generator().manual_seed(2))
    assert_evaluated_with(model, spies, copy_name, x)


def test_validation_runs_the_evaluation_chain_from_the_online_amortizer(tmp_path) -> None:
    model, spies = evaluation_model()
    loader = toy_loader(n_batches=1, batch_size=8)
    quiet_trainer(default_root_dir=str(tmp_path), accelerator="cpu").validate(model, loader)
    assert_evaluated_with(model, spies, "online", next(iter(loader))[0])


@pytest.mark.parametrize(("evaluate_with_ema", "copy_name"), [(False, "online"), (True, "ema")])
def test_generate_decodes_the_evaluation_copys_unconditional_samples(evaluate_with_ema: bool, copy_name: str) -> None:
    """``generate(n)`` (mode ``"amortizer"``) decodes ``Q``'s unconditional samples (``Q_ema``'s with
    ``evaluate_with_ema``); ``"amortizer+chain"`` starts the generation chain there."""
    model, spies = evaluation_model(evaluate_with_ema=evaluate_with_ema, generation_sampler=Recording(Langevin(3, 0.4)))
    draw = spies.unwatched[copy_name]
    samples = model.generate(5, generator=torch.Generator().manual_seed(0))
    z = draw(5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples, model.decoder.decode(z), rtol=0, atol=0)
    model.generate(5, mode="amortizer+chain", generator=torch.Generator().manual_seed(3))
    start = model.generation_chain.calls[-1][0]
    torch.testing.assert_close(start, draw(5, generator=torch.Generator().manual_seed(3)), rtol=0, atol=0)
    model.generate(5, mode="ebm")
    assert [(call.copy, call.context) for call in spies.starts] == [(copy_name, None)] * 2  # "ebm": none


@pytest.mark.parametrize("copy_name", ["online", "ema"])
def test_the_amortizer_starts_by_name_draw_from_their_copy(copy_name: str) -> None:
    """``infer(x, start="amortizer")`` starts from ``Q``, ``start="amortizer_ema"`` from ``Q_ema``."""
    model, spies = evaluation_model()
    x = torch.randn(4, DATA)
    model.infer(x, start={"online": "amortizer", "ema": "amortizer_ema"}[copy_name], generator=torch.Generator())
    assert_evaluated_with(model, spies, copy_name, x)


def test_the_default_evaluation_chain_is_noise_free() -> None:
    """From a fixed start, ``infer`` returns the same latents whatever the stream (the training
    chain, with its noise, does not)."""
    model = damc(evaluation_sampler=None)
    x, z0 = torch.randn(6, DATA), torch.randn(6, LATENT)
    ends = [model.infer(x, start=z0, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    torch.testing.assert_close(ends[0], ends[1], rtol=0, atol=0)
    noisy = [
        model.infer(x, start=z0, sampler=model.posterior_sampler, generator=torch.Generator().manual_seed(seed))
        for seed in (0, 1)
    ]
    assert not torch.equal(noisy[0], noisy[1])


# -------------------------------------------------------------------------------- the amortizer
@pytest.mark.parametrize("sampling_noise", [False, True])
def test_sampling_noise_false_draws_nothing_after_the_first_state(sampling_noise: bool) -> None:
    """A conditional sample draws ``z_T`` from the stream, then (noise on) each step's noise: with
    ``sampling_noise=False`` the stream stands right after ``z_T``."""
    amortizer = tiny_amortizer(sampling_noise=sampling_noise)
    x = torch.randn(4, DATA)
    stream = torch.Generator().manual_seed(0)
    amortizer.start(context=x, generator=stream)
    after_z_T = torch.Generator().manual_seed(0)
    torch.randn(4, LATENT, generator=after_z_T)
    assert torch.equal(stream.get_state(), after_z_T.get_state()) is not sampling_noise


def test_a_squash_layer_keeps_its_linear_skip_when_its_gate_is_closed() -> None:
    """With the gate shut (``sigmoid -> 0``) the layer is ``W_b h + skip(x)``: still affine in ``x``
    with a non-zero slope (the linear skip), the same step for any base point."""
    layer = ConcatSquashLinear(3, 4, 5)
    with torch.no_grad():
        layer.gate.bias.fill_(-1e4)
    context, step = torch.randn(2, 5), torch.randn(2, 3)
    base, other = torch.randn(2, 3), torch.randn(2, 3)
    change = layer(base + step, context) - layer(base, context)
    assert change.abs().min() > 0
    torch.testing.assert_close(change, layer(other + step, context) - layer(other, context))
