"""lebm's Adam/AdamW step on the device equals torch's own step bit for bit (device: CPU).

The recorded iterations step every net with :func:`lebm.recording.device_adam.device_adam_step`, whose
step count lives on the device and whose learning rate is a device tensor; on a CPU its numbers are
torch's ``Adam.step()``'s, for every option lebm records (L2 and decoupled weight decay), over many
steps with gradients of very different sizes, a rate a schedule changes, and a state loaded from a
checkpoint (its step count on the CPU, where torch keeps it).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.optim import SGD, Adam, AdamW

from lebm.recording.device_adam import LearningRates, device_adam_step, device_step_refusal

SETTINGS = {
    "Adam": (Adam, {}),
    "Adam, L2 weight decay": (Adam, {"weight_decay": 1e-3}),
    "Adam, decoupled weight decay": (Adam, {"weight_decay": 1e-2, "decoupled_weight_decay": True}),
    "AdamW": (AdamW, {"weight_decay": 1e-2}),
}


def parameters(seed: int) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=generator)) for shape in ((20, 7), (13,), (3, 3, 2))]


@pytest.mark.parametrize("setting", SETTINGS)
def test_the_device_step_equals_torchs_step_bit_for_bit(setting: str) -> None:
    kind, options = SETTINGS[setting]
    theirs, ours = parameters(0), parameters(0)
    torch_optimizer = kind(theirs, lr=3e-3, betas=(0.5, 0.999), **options)
    lebm_optimizer = kind(ours, lr=3e-3, betas=(0.5, 0.999), **options)
    rates = LearningRates(lebm_optimizer)
    generator = torch.Generator().manual_seed(1)
    for step in range(120):
        if step == 60:  # a schedule (or a hand) changes the rate: the tensor is refilled
            for optimizer in (torch_optimizer, lebm_optimizer):
                optimizer.param_groups[0]["lr"] *= 0.3
        grads = [torch.randn(p.shape, generator=generator) * 10.0 ** (step % 5 - 2) for p in theirs]
        for p, q, grad in zip(theirs, ours, grads, strict=True):
            p.grad, q.grad = grad.clone(), grad.clone()
        torch_optimizer.step()
        device_adam_step(lebm_optimizer, rates.refresh())
    for p, q in zip(theirs, ours, strict=True):
        assert torch.equal(p, q)
    for p, q in zip(theirs, ours, strict=True):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch_optimizer.state[p][name], lebm_optimizer.state[q][name]), name


def test_a_state_loaded_from_a_checkpoint_goes_on_as_torchs() -> None:
    theirs, ours = parameters(0), parameters(0)
    torch_optimizer = Adam(theirs, lr=1e-2)
    for p in theirs:
        p.grad = torch.ones_like(p)
    torch_optimizer.step()
    saved = copy.deepcopy(torch_optimizer.state_dict())
    lebm_optimizer = Adam(ours, lr=1e-2)
    with torch.no_grad():
        for p, q in zip(theirs, ours, strict=True):
            q.copy_(p)
    lebm_optimizer.load_state_dict(saved)
    rates = LearningRates(lebm_optimizer)
    for p, q in zip(theirs, ours, strict=True):
        p.grad, q.grad = -p.detach().clone(), -q.detach().clone()
    torch_optimizer.step()
    device_adam_step(lebm_optimizer, rates.refresh())
    for p, q in zip(theirs, ours, strict=True):
        assert torch.equal(p, q)
        assert float(lebm_optimizer.state[q]["step"]) == 2.0


def test_a_parameter_without_a_gradient_or_skipped_is_left_alone() -> None:
    ours = parameters(0)
    before = [p.detach().clone() for p in ours]
    optimizer = AdamW(ours, lr=1e-2, weight_decay=0.1)
    ours[0].grad = torch.ones_like(ours[0])
    ours[1].grad = torch.zeros_like(ours[1])  # kept at zero, not reached: skipped by id
    device_adam_step(optimizer, LearningRates(optimizer).refresh(), skip=frozenset({id(ours[1])}))
    assert not torch.equal(ours[0], before[0])
    assert torch.equal(ours[1], before[1]) and torch.equal(ours[2], before[2])
    assert ours[1] not in optimizer.state and ours[2] not in optimizer.state


def test_what_the_device_step_does_not_implement_is_named() -> None:
    assert "SGD has no recorded step" in (device_step_refusal(SGD(parameters(0), lr=0.1)) or "")
    assert "amsgrad=True" in (device_step_refusal(Adam(parameters(0), amsgrad=True)) or "")
    assert "maximize=True" in (device_step_refusal(AdamW(parameters(0), maximize=True)) or "")
    assert device_step_refusal(Adam(parameters(0), weight_decay=0.1, decoupled_weight_decay=True)) is None


def test_an_option_the_device_step_does_not_know_is_refused_by_name() -> None:
    """The options are an allow-list: one a later torch adds to Adam (here added by hand to its
    defaults and groups) is refused, naming it; a key a scheduler adds to a group (``initial_lr``)
    is no option of the step and passes."""
    optimizer = Adam(parameters(0), lr=0.1)
    optimizer.param_groups[0]["initial_lr"] = 0.1
    assert device_step_refusal(optimizer) is None
    optimizer.defaults["spectral_momentum"] = True
    optimizer.param_groups[0]["spectral_momentum"] = True
    assert "has the option spectral_momentum, which lebm's recorded step does not know" in (
        device_step_refusal(optimizer) or ""
    )


def test_a_group_added_or_removed_gives_new_rate_tensors() -> None:
    """One rate tensor per group: a group added makes them anew (no IndexError), at the groups' rates."""
    optimizer = Adam(parameters(0), lr=0.1)
    rates = LearningRates(optimizer)
    first = rates.tensors[0]
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.5})
    tensors = rates.refresh()
    assert [float(t) for t in tensors] == [0.1, 0.5] and tensors[0] is not first
    optimizer.param_groups.pop()
    assert [float(t) for t in rates.refresh()] == [0.1]


def test_a_rate_that_goes_up_or_down_refills_the_same_tensor() -> None:
    """CPU. A warm restart raises the rate, a decay lowers it: either reaches the tensor a recorded
    step reads, at the same address (a recording keeps reading it), and an unchanged rate leaves it."""
    optimizer = Adam(parameters(0), lr=0.1)
    rates = LearningRates(optimizer)
    (tensor,) = rates.tensors
    for rate in (0.05, 0.2, 0.2, 0.01):
        optimizer.param_groups[0]["lr"] = rate
        (refreshed,) = rates.refresh()
        assert refreshed is tensor and float(tensor) == rate
