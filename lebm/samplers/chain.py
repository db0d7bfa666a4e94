"""Where a chain runs: the target it samples and the context around it.

- :class:`ChainTarget` adds the Gaussian reference term analytically, differentiates the
  batch-summed energy with one ``autograd.grad`` call and records the diagnostics;
- :func:`chain_context` freezes the parameters of the modules the energy reads, puts them in the
  stated train/eval mode, and enables gradients outside inference mode (so chains also run in
  validation), with recurrent nets made differentiable in eval mode.

:class:`lebm.samplers.Sampler` (``base.py``) builds both for every call; a sampler's ``run`` only
asks the target for gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

EnergyFn = Callable[[Tensor], Tensor]
"""``energy_fn(z) -> U``: maps states ``(B, *shape)`` to total energies ``(B,)``.

``U(z) = -log pi(z) + const``: lower is more probable (the toolkit's one sign convention)."""

ModuleMode = Literal["train", "eval"]

Diagnostics = bool | Literal["ends"]
"""What a chain records: ``False`` nothing; ``True`` the ``energy`` and ``grad_norm`` of every
recorded state; ``"ends"`` those of the first and the last recorded state only (series of length
2, the same numbers as the first and last of ``True``'s, and no per-step reductions in between:
what a training step logs). Per-step notes such as ``acceptance`` are kept whole either way."""


# ------------------------------------------------------------------------------ chain context
@contextlib.contextmanager
def frozen_parameters(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on every parameter of ``modules``.

    Inside a chain only the state needs a gradient: freezing stops autograd from saving
    activations for, and computing, parameter gradients. Parameters that were already frozen
    stay frozen afterwards.
    """
    switched: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in modules:
        for parameter in module.parameters():
            if parameter.requires_grad and id(parameter) not in seen:
                seen.add(id(parameter))
                parameter.requires_grad_(False)
                switched.append(parameter)
    try:
        yield
    finally:
        for parameter in switched:
            parameter.requires_grad_(True)


@contextlib.contextmanager
def modules_in_mode(modules: Iterable[nn.Module], mode: ModuleMode | None) -> Iterator[None]:
    """Put every submodule of ``modules`` in ``mode`` (``"train"`` or ``"eval"``) and restore each
    submodule's own flag afterwards; ``mode=None`` leaves the modes as they are.

    The mode changes the chain's target for nets with BatchNorm (batch statistics in train mode,
    running statistics in eval mode) or dropout, so a method states it for each of its chains.
    """
    if mode is None:
        yield
        return
    if mode not in ("train", "eval"):
        raise ValueError(f"chain module mode must be 'train', 'eval' or None, got {mode!r}")
    saved = [(sub, sub.training) for module in modules for sub in module.modules()]
    for module in modules:
        module.train(mode == "train")
    try:
        yield
    finally:
        for sub, training in saved:
            sub.training = training


@contextlib.contextmanager
def differentiable_recurrent_nets(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Let chains differentiate through recurrent nets that are in eval mode.

    cuDNN refuses the backward pass of an RNN in eval mode. For an RNN/LSTM/GRU the only
    difference between the modes is inter-layer dropout, so each eval-mode recurrent submodule
    runs in train mode with ``dropout = 0`` inside the chain: the numbers are those of eval mode,
    and the backward pass works on every device. Modes and dropout are restored afterwards.
    """
    switched: list[tuple[nn.RNNBase, float]] = []
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, nn.RNNBase) and not sub.training:
                switched.append((sub, sub.dropout))
                sub.dropout = 0.0
                sub.training = True
    try:
        yield
    finally:
        for sub, dropout in switched:
            sub.dropout = dropout
            sub.training = False


@contextlib.contextmanager
def chain_context(modules: Iterable[nn.Module], mode: ModuleMode | None = None) -> Iterator[None]:
    """The context of every chain: gradients on (also inside ``inference_mode``/``no_grad``),
    the parameters of ``modules`` frozen, their train/eval ``mode`` set (None: unchanged) and
    eval-mode recurrent nets made differentiable."""
    modules = list(modules)
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        frozen_parameters(modules),
        modules_in_mode(modules, mode),
        differentiable_recurrent_nets(modules),
    ):
        yield


def per_chain(values: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` per-chain values viewed as ``(B, 1, ..., 1)`` to broadcast over states ``like`` ``(B, *shape)``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def shares_storage(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors are views of the same memory."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


# ------------------------------------------------------------------------------- diagnostics
class StateRecorder:
    """What a chain records (``record=True``): the batch-mean energy and gradient norm of every
    recorded state, reduced at once, and the per-step :meth:`note` series.

    Args:
        complete: ``(energy, state) -> energy`` with the reference term of ``state`` added: for an
            evaluation whose energy still lacks it.
    """

    def __init__(self, complete: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.complete = complete
        self.energies: list[Tensor] = []
        self.grad_norms: list[Tensor] = []
        self.notes: dict[str, list[Tensor]] = {}

    def add(self, energy: Tensor, grad: Tensor, state: Tensor | None = None) -> None:
        """Record one state from its ``(B,)`` energies and ``(B, *shape)`` gradients; ``state``: the
        state whose reference term ``energy`` still lacks (None: ``energy`` is complete)."""
        self._append(self._reduce(energy, grad, state))

    def _reduce(self, energy: Tensor, grad: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        """The batch-mean energy (the reference term of ``state`` added, if given) and the
        batch-mean gradient norm, device scalars."""
        if state is not None:
            energy = self.complete(energy, state)
        return energy.float().mean(), torch.linalg.vector_norm(grad.flatten(1).float(), dim=1).mean()

    def _append(self, reductions: tuple[Tensor, Tensor]) -> None:
        self.energies.append(reductions[0])
        self.grad_norms.append(reductions[1])

    def note(self, name: str, value: Tensor) -> None:
        """Append a device scalar to the ``name`` series."""
        self.notes.setdefault(name, []).append(value.detach().float().reshape(()))

    def series(self) -> dict[str, Tensor]:
        """``energy`` and ``grad_norm`` ``(K,)`` and each note's series; empty when nothing was recorded."""
        out = {}
        if self.energies:
            out = {"energy": torch.stack(self.energies), "grad_norm": torch.stack(self.grad_norms)}
        out.update({name: torch.stack(values) for name, values in self.notes.items()})
        return out


class EndsRecorder(StateRecorder):
    """``record="ends"``: the first recorded state reduced at once, each later one held (its energy
    and gradient tensors, and a copy of its state when the reference term is still to be added)
    until :meth:`series` reduces the last one held: one copy a step instead of about seven kernels.
    An energy that is a view of the state (``z[:, 0]``), which moves in place after it, cannot be
    held: set :attr:`may_hold` to False and each later state is reduced at once, the last kept."""

    def __init__(self, complete: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__(complete)
        self.may_hold = True
        self._held: tuple[Tensor, Tensor, Tensor | None] | None = None  # energy, gradient, state copy or None
        self._held_reductions: tuple[Tensor, Tensor] | None = None  # when it may not hold
        self._state_copy: Tensor | None = None

    def add(self, energy: Tensor, grad: Tensor, state: Tensor | None = None) -> None:
        """The first state reduced, a later one held (or reduced and kept, when it may not hold)."""
        if not self.energies:
            super().add(energy, grad, state)
        elif not self.may_hold:
            self._held_reductions = self._reduce(energy, grad, state)
        else:
            if state is not None:  # the state changes in place after this: keep a copy to add the term at the end
                if self._state_copy is None:
                    self._state_copy = torch.empty_like(state, requires_grad=False)
                with torch.no_grad():
                    self._state_copy.copy_(state)
                state = self._state_copy
            self._held = (energy, grad, state)

    def series(self) -> dict[str, Tensor]:
        """The first and the last recorded state's values (the last reduced now) and each note's series."""
        if self._held is not None:
            energy, grad, state = self._held
            self._held = None
            super().add(energy, grad, state)
        elif self._held_reductions is not None:
            self._append(self._held_reductions)
            self._held_reductions = None
        return super().series()


# ------------------------------------------------------------------------------------ target
class ChainTarget:
    """The density a chain samples, ``pi(z) ∝ exp(-U(z))`` with
    ``U(z) = energy_fn(z) + reference_precision * ||z||^2 / 2``.

    Samplers ask it for ``grad U``: one ``torch.autograd.grad`` of the batch-summed
    ``energy_fn`` (samples are independent, so this yields every per-sample gradient; taken with
    output gradients of ones made once per chain, which is the batch sum's gradient) plus the
    Gaussian reference term ``reference_precision * z``, differentiated analytically. With
    ``record`` set, each gradient evaluation is also handed to a recorder (:class:`StateRecorder`,
    or :class:`EndsRecorder` for ``"ends"``): the batch-mean ``U`` and the batch-mean per-sample
    norm of ``grad U``, as device tensors (no host synchronisation).

    Args:
        energy_fn: ``(B, *shape) -> (B,)`` energies, called as ``energy_fn(z, *inputs)``.
        reference_precision: precision of the Gaussian reference factor (0: none).
        record: what to record (:data:`Diagnostics`).
        inputs: tensors passed to ``energy_fn`` after the state (the data a posterior energy reads).
    """

    def __init__(
        self,
        energy_fn: Callable[..., Tensor],
        reference_precision: float = 0.0,
        record: Diagnostics = False,
        inputs: Sequence[Tensor] = (),
    ) -> None:
        if record is None:
            record = False
        if record not in (True, False, "ends"):
            raise ValueError(f"return_diagnostics must be True, False or 'ends', got {record!r}")
        self.energy_fn = energy_fn
        self.reference_precision = float(reference_precision)
        self.record = bool(record)
        self.recorder: StateRecorder | None = None
        if record:
            self.recorder = (EndsRecorder if record == "ends" else StateRecorder)(self._with_reference)
        self.inputs = tuple(inputs)
        self._checked = False
        self._ones: Tensor | None = None
        self._reuse_ones = True  # False once a gradient came back as a view of the ones (then made afresh)

    def energy_and_grad(self, z: Tensor, *, record: bool = True, full_precision: bool = False) -> tuple[Tensor, Tensor]:
        """``(U(z), grad U(z))``: ``(B,)`` detached total energies (the reference term included)
        and ``(B, *shape)`` gradients. ``z`` itself is not modified and needs no gradient.

        ``record=False`` leaves this evaluation out of the diagnostics: a Metropolis-Hastings
        sampler evaluates proposals and records the states its chains keep (:meth:`record_state`).
        ``full_precision=True`` evaluates the energy with autocast off, in float32: what an
        accept/reject step needs (energies rounded to bfloat16 differ by their rounding)."""
        return self._evaluate(z, with_energy=True, record=record, full_precision=full_precision)

    def grad(self, z: Tensor) -> Tensor:
        """``grad U(z)`` ``(B, *shape)`` (cheaper than :meth:`energy_and_grad` when the energy is not needed)."""
        return self._evaluate(z, with_energy=False, record=True)[1]

    def record_state(self, energy: Tensor, grad: Tensor) -> None:
        """Record the diagnostics of the chains' current states from their ``(B,)`` energies and
        ``(B, *shape)`` gradients (what :meth:`grad` records by itself); nothing unless ``record``.
        With ``record="ends"``, a state after the first is held, not reduced: a sampler must not
        modify these tensors in place afterwards."""
        if self.recorder is not None:
            self.recorder.add(energy, grad)

    def note(self, name: str, value: Tensor) -> None:
        """Record one more per-step diagnostic, e.g. ``note("acceptance", accept_prob.mean())``:
        a device scalar appended to the ``name`` series (no host synchronisation)."""
        if self.recorder is not None:
            self.recorder.note(name, value)

    def _ones_like(self, energy: Tensor) -> Tensor:
        """Ones shaped like ``energy`` ``(B,)``, made once per chain: the output gradient of every
        step's ``autograd.grad`` (the gradient of the batch sum, without a sum and a fill at each
        step)."""
        ones = self._ones
        if ones is None or ones.shape != energy.shape or ones.dtype != energy.dtype or ones.device != energy.device:
            ones = torch.ones_like(energy, requires_grad=False)
            if self._reuse_ones:
                self._ones = ones
        return ones

    def _with_reference(self, energy: Tensor, state: Tensor) -> Tensor:
        """``energy + reference_precision * ||state||^2 / 2`` per chain ``(B,)``."""
        return energy + state.detach().flatten(1).square().sum(1) * (self.reference_precision / 2)

    def _evaluate(
        self, z: Tensor, with_energy: bool, record: bool, full_precision: bool = False
    ) -> tuple[Tensor, Tensor]:
        state = z.detach().requires_grad_(True)
        if full_precision and torch.is_autocast_enabled(state.device.type):
            with torch.autocast(state.device.type, enabled=False):
                energy = self.energy_fn(state, *self.inputs).float()
        else:
            energy = self.energy_fn(state, *self.inputs)
        first = not self._checked
        if first:
            self._check_energy(energy, state)
        ones = self._ones_like(energy)
        (grad,) = torch.autograd.grad(energy, state, grad_outputs=ones)
        if first and shares_storage(grad, ones):  # e.g. z.squeeze(1): an in-place change would corrupt the ones
            self._reuse_ones = False
            self._ones = None
        energy = energy.detach()
        lacks_reference = None  # the state whose reference term the energy lacks, if it does
        if self.reference_precision:
            grad = grad.add(state.detach(), alpha=self.reference_precision)
            if with_energy:
                energy = self._with_reference(energy, state)
            else:
                lacks_reference = state
        if record and self.recorder is not None:
            self.recorder.add(energy, grad, lacks_reference)
        return energy, grad

    def diagnostics(self) -> dict[str, Tensor]:
        """``energy`` and ``grad_norm`` ``(K,)``: the batch means of the chains' energies and
        gradient norms, one value per recorded state (for Langevin: per gradient evaluation; with
        ``record="ends"`` the first and the last, ``(2,)``, or ``(1,)`` after one evaluation), plus
        each series of :meth:`note` (e.g. ``acceptance``, one value per Metropolis-Hastings step);
        empty when nothing was recorded."""
        return self.recorder.series() if self.recorder is not None else {}

    def _check_energy(self, energy: Tensor, state: Tensor) -> None:
        self._checked = True
        if not isinstance(energy, Tensor) or energy.shape != state.shape[:1]:
            got = tuple(energy.shape) if isinstance(energy, Tensor) else type(energy).__name__
            raise ValueError(
                f"the chain's energy function must map states {tuple(state.shape)} to one energy per sample, "
                f"shape ({state.shape[0]},); it returned {got}. Reduce over the non-batch dimensions "
                "(e.g. .flatten(1).sum(1)) and return -log density, not a batch total."
            )
        if not energy.requires_grad:
            raise ValueError(
                "the chain's energy does not depend on the state differentiably (it has no gradient): "
                "do not detach z or call .item() inside the energy function"
            )
        if isinstance(self.recorder, EndsRecorder) and shares_storage(energy, state):
            self.recorder.may_hold = False  # a view of the state (z[:, 0]), which moves in place after this
