"""The sampler contract: a target that owns the energy's gradient, and the context every chain runs in.

A sampler implements one method, ``run(target, z, generator=...)``, and asks ``target`` for
gradients. Everything a chain must get right whatever its update rule lives here, once:

- :class:`ChainTarget` adds the Gaussian reference term analytically, differentiates the
  batch-summed energy with one ``autograd.grad`` call and records the diagnostics;
- :func:`chain_context` freezes the parameters of the modules the energy reads, puts them in the
  stated train/eval mode, and enables gradients outside inference mode (so chains also run in
  validation), with recurrent nets made differentiable in eval mode;
- :meth:`Sampler.__call__` wires the two, checks the sampler's output and returns it detached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lebm.config import Configurable
from lebm.samplers.capture.cache import run_captured
from lebm.samplers.capture.keys import ChainCall, hashable, submodules
from lebm.samplers.capture.recorders import ChainBody, capture_possible, first_line
from lebm.samplers.capture.switch import chain_capture_enabled

EnergyFn = Callable[[Tensor], Tensor]
"""``energy_fn(z) -> U``: maps states ``(B, *shape)`` to total energies ``(B,)``.

``U(z) = -log pi(z) + const``: lower is more probable (the toolkit's one sign convention)."""

SamplerOutput = Tensor | tuple[Tensor, dict[str, Tensor]]
ModuleMode = Literal["train", "eval"]


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


# ------------------------------------------------------------------------------------ target
class ChainTarget:
    """The density a chain samples, ``pi(z) ∝ exp(-U(z))`` with
    ``U(z) = energy_fn(z) + reference_precision * ||z||^2 / 2``.

    Samplers ask it for ``grad U``: one ``torch.autograd.grad`` of the batch-summed
    ``energy_fn`` (samples are independent, so this yields every per-sample gradient) plus the
    Gaussian reference term ``reference_precision * z``, differentiated analytically. With
    ``record=True`` each gradient evaluation also records the batch-mean ``U`` and the batch-mean
    per-sample norm of ``grad U`` (device tensors: no host synchronisation).

    Args:
        energy_fn: ``(B, *shape) -> (B,)`` energies, called as ``energy_fn(z, *inputs)``.
        reference_precision: precision of the Gaussian reference factor (0: none).
        record: record the diagnostics.
        inputs: tensors passed to ``energy_fn`` after the state (the data a posterior energy reads).
    """

    def __init__(
        self,
        energy_fn: Callable[..., Tensor],
        reference_precision: float = 0.0,
        record: bool = False,
        inputs: Sequence[Tensor] = (),
    ) -> None:
        self.energy_fn = energy_fn
        self.reference_precision = float(reference_precision)
        self.record = record
        self.inputs = tuple(inputs)
        self._energies: list[Tensor] = []
        self._grad_norms: list[Tensor] = []
        self._checked = False

    def energy_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(U(z), grad U(z))``: ``(B,)`` detached total energies (the reference term included)
        and ``(B, *shape)`` gradients. ``z`` itself is not modified and needs no gradient."""
        return self._evaluate(z, with_energy=True)

    def grad(self, z: Tensor) -> Tensor:
        """``grad U(z)`` ``(B, *shape)`` (cheaper than :meth:`energy_and_grad` when the energy is not needed)."""
        return self._evaluate(z, with_energy=False)[1]

    def _evaluate(self, z: Tensor, with_energy: bool) -> tuple[Tensor, Tensor]:
        state = z.detach().requires_grad_(True)
        energy = self.energy_fn(state, *self.inputs)
        if not self._checked:
            self._check_energy(energy, state)
        (grad,) = torch.autograd.grad(energy.sum(), state)
        energy = energy.detach()
        if self.reference_precision:
            grad = grad.add(state.detach(), alpha=self.reference_precision)
            if with_energy or self.record:
                energy = energy + state.detach().flatten(1).square().sum(1) * (self.reference_precision / 2)
        if self.record:
            self._energies.append(energy.float().mean())
            self._grad_norms.append(torch.linalg.vector_norm(grad.flatten(1).float(), dim=1).mean())
        return energy, grad

    def diagnostics(self) -> dict[str, Tensor]:
        """``energy`` and ``grad_norm``, one value per gradient evaluation ``(K,)`` (empty
        when nothing was recorded)."""
        if not self._energies:
            return {}
        return {"energy": torch.stack(self._energies), "grad_norm": torch.stack(self._grad_norms)}

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


@contextlib.contextmanager
def out_of_memory_named(sampler: Sampler, energy_fn: Callable[..., Tensor], z0: Tensor) -> Iterator[None]:
    """Turn CUDA's out-of-memory error inside a chain into one that names the chain, its batch and
    what to lower (the same exception type, so code that catches it still does)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as error:
        energy = getattr(energy_fn, "__qualname__", type(energy_fn).__name__)
        usage = ""
        if z0.device.type == "cuda":
            total = torch.cuda.get_device_properties(z0.device).total_memory / 2**30
            usage = f", {torch.cuda.memory_allocated(z0.device) / 2**30:.1f} of {total:.1f} GiB allocated"
        cause = first_line(error)
        raise torch.cuda.OutOfMemoryError(
            f"CUDA ran out of memory in the chain {sampler!r} on {energy} for a batch of {z0.shape[0]} states of "
            f"shape {tuple(z0.shape[1:])} on {z0.device}{usage}. Lower the batch size (--data.init_args.batch_size), "
            f"run the nets in bfloat16 (--trainer.precision bf16-mixed) or use fewer chain steps. CUDA said: {cause}"
        ) from error


# ----------------------------------------------------------------------------------- sampler
class Sampler(Configurable):
    """An MCMC sampler: hyperparameters only, the target is given at call time.

    ``sampler(energy_fn, z0, freeze=(...)) -> z`` runs chains started at ``z0`` ``(B, *shape)``
    towards ``pi(z) ∝ exp(-U(z))``, ``U(z) = energy_fn(z, *inputs) + reference_precision * ||z||^2 / 2``,
    and returns the final states ``(B, *shape)``, detached. With ``return_diagnostics=True`` it
    returns ``(z, diagnostics)``: per-gradient-evaluation tensors ``energy`` and ``grad_norm``.

    To write a sampler, subclass this and implement :meth:`run`; ask the target for gradients
    (``target.grad(z)``). The reference term, the diagnostics, frozen parameters, the modules'
    mode and gradients inside validation are handled here, so a new update rule cannot get them
    wrong.

    **Whole-chain capture** (:mod:`lebm.samplers.capture.cache`). On a CUDA device a call that passes
    ``inputs=`` runs its chain as one CUDA graph, recorded at the first call of its kind and
    replayed after, while the run-wide switch is on (:mod:`lebm.samplers.capture.switch`), when
    the sampler's class opted in (``capturable = True``) and its own ``cuda_graph`` option does
    not keep it out. A subclass that overrides :meth:`run` does not inherit the opt-in:
    it states ``capturable = True`` itself once its ``run`` meets the conditions in
    ``docs/extending.md`` ("Captured chains"). Everywhere else chains run eagerly.
    """

    #: Whether :meth:`run` may be captured whole as a CUDA graph (see the class docstring).
    capturable: ClassVar[bool] = False
    #: False keeps this sampler's chains out of capture; True follows the run-wide switch.
    cuda_graph: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__ and "capturable" not in cls.__dict__:
            cls.capturable = False  # a new run() is not known to be capturable: it opts in itself

    def __init__(self) -> None:
        """A sampler without hyperparameters (subclasses add theirs); recorded for checkpoints."""
        super().__init__()

    def capture_allowed(self) -> bool:
        """Whether this sampler's chains may be captured: the run's switch is on, its class opted in
        and its own ``cuda_graph`` does not keep it out."""
        return bool(chain_capture_enabled() and type(self).capturable and self.cuda_graph)

    def capture_settings(self) -> Hashable:
        """The settings a captured chain depends on: the class and every public attribute."""
        public = sorted((name, hashable(value)) for name, value in vars(self).items() if not name.startswith("_"))
        return (type(self), tuple(public))

    def __call__(
        self,
        energy_fn: Callable[..., Tensor],
        z0: Tensor,
        *,
        inputs: Sequence[Tensor] | None = None,
        reference_precision: float = 0.0,
        freeze: Iterable[nn.Module] = (),
        module_mode: ModuleMode | None = None,
        generator: torch.Generator | None = None,
        return_diagnostics: bool = False,
    ) -> SamplerOutput:
        """Run the chains from ``z0``.

        Args:
            energy_fn: ``(B, *shape) -> (B,)`` energy without the reference term, called as
                ``energy_fn(z, *inputs)``.
            z0: initial states ``(B, *shape)``.
            inputs: the tensors ``energy_fn`` reads besides the state (e.g. the data batch of a
                posterior chain), passed after ``z``. Giving them (``()`` when there are none)
                declares that ``energy_fn`` reads nothing else but the parameters and buffers of
                ``freeze``, which lets the chain be captured on a GPU; None (the default) calls
                ``energy_fn(z)`` and always runs eagerly.
            reference_precision: precision of the Gaussian reference term added to ``energy_fn``.
            freeze: modules whose parameters ``energy_fn`` reads (frozen during the chain; an
                ``energy_fn`` that is itself a module is frozen too).
            module_mode: ``"train"``/``"eval"``: the mode of ``freeze``'s modules during the
                chain (BatchNorm, dropout); None leaves them as they are.
            generator: the random stream of the chain's noise (None: torch's global one).
            return_diagnostics: also return the diagnostics dict.
        """
        modules = list(freeze)
        if isinstance(energy_fn, nn.Module):
            modules.append(energy_fn)
        with chain_context(modules, module_mode), out_of_memory_named(self, energy_fn, z0):
            data = tuple(t.clone() if t.is_inference() else t for t in (inputs or ()))  # outside inference mode
            body_for = self._chain_body(energy_fn, float(reference_precision), return_diagnostics)
            captured = None
            if inputs is not None and capture_possible(z0.device):
                read = submodules([*modules, self] if isinstance(self, nn.Module) else modules)  # + a persistent buffer
                call = ChainCall(
                    self, energy_fn, z0, data, float(reference_precision), read, generator, return_diagnostics
                )
                captured = run_captured(call, body_for)
            if captured is not None:
                z, diagnostics = captured
            else:
                start = z0.detach().clone()
                if start.dtype in (torch.float16, torch.bfloat16):
                    # under autocast a start may come out of a net in half precision: chains keep float32 states
                    # (a data chain's 1e-3 noise is below bfloat16's resolution of values near 1)
                    start = start.float()
                z, diagnostics = body_for(start, data, generator)()
        if not isinstance(z, Tensor) or z.shape != z0.shape:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(
                f"{type(self).__name__}.run must return the final states with the shape of z0 "
                f"{tuple(z0.shape)}, got {got}"
            )
        z = z.detach()
        return (z, diagnostics) if return_diagnostics else z

    def _chain_body(
        self, energy_fn: Callable[..., Tensor], reference_precision: float, record: bool
    ) -> Callable[[Tensor, tuple[Tensor, ...], torch.Generator | None], ChainBody]:
        """``body_for(z, inputs, generator)``: the chain as a function of its state and input
        tensors, ``run`` on a fresh :class:`ChainTarget`. An eager call runs it once on its own
        tensors; a captured call records it over static buffers: the same steps either way."""

        def body_for(z: Tensor, inputs: tuple[Tensor, ...], generator: torch.Generator | None) -> ChainBody:
            def body() -> tuple[Tensor, dict[str, Tensor]]:
                target = ChainTarget(energy_fn, reference_precision, record=record, inputs=inputs)
                final = self.run(target, z, generator=generator)
                return final, target.diagnostics()

            return body

        return body_for

    def run(self, target: ChainTarget, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Move the states ``z`` ``(B, *shape)`` (a private copy: in-place updates are fine)
        towards ``target`` and return them. Draw every random number from ``generator``."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement run(target, z, *, generator) -> z, "
            "using target.grad(z) for the gradient of the energy"
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
