"""The sampler contract: :class:`Sampler`, whose subclasses implement ``run(target, z, generator=...)``.

Everything a chain must get right whatever its update rule lives once, in :mod:`.chain` (the
target that owns the energy's gradient, the context every chain runs in) and here:
:meth:`Sampler.__call__` wires the two, hands a declared chain to whole-chain capture on a GPU
(:mod:`lebm.recording`), checks the sampler's output and returns it detached.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lebm.config import Configurable
from lebm.recording.cache import run_captured
from lebm.recording.keys import ChainCall
from lebm.recording.recorders import (
    ChainBody,
    capture_possible,
    first_line,
    inside_recording,
    refuse_unless_opted_in,
)
from lebm.recording.switch import CaptureOptIn
from lebm.samplers.chain import (  # noqa: F401 (EnergyFn, frozen_parameters, ...: re-exported, as before the split)
    ChainTarget,
    Diagnostics,
    EnergyFn,
    ModuleMode,
    chain_context,
    differentiable_recurrent_nets,
    frozen_parameters,
    modules_in_mode,
)

#: What a sampler call returns: the final states ``z`` ``(B, *shape)``, or ``(z, diagnostics)``
#: with ``return_diagnostics`` (a dict of tensors such as ``energy`` and ``grad_norm``).
SamplerOutput = Tensor | tuple[Tensor, dict[str, Tensor]]


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


def check_call(sampler: Sampler, energy_fn: Any, z0: Any) -> None:
    """Refuse, with the fix, a call whose start or energy is not what a chain takes."""
    if not isinstance(z0, Tensor):
        raise TypeError(
            f"{type(sampler).__name__} takes the chains' start z0 as a torch.Tensor (B, *shape), got "
            f"{type(z0).__name__}: pass torch.as_tensor(z0, dtype=torch.float32)"
        )
    if not callable(energy_fn):
        kind = type(energy_fn).__name__
        raise TypeError(f"{type(sampler).__name__} takes an energy function (z -> (B,) energies) first, got {kind}")
    if not z0.is_floating_point():
        raise TypeError(f"the chains' start z0 must be floating point, got {z0.dtype}: pass z0.float()")


# ----------------------------------------------------------------------------------- sampler
class Sampler(CaptureOptIn, Configurable):
    """An MCMC sampler: hyperparameters only, the target is given at call time.

    ``sampler(energy_fn, z0, freeze=(...)) -> z`` runs chains started at ``z0`` ``(B, *shape)``
    towards ``pi(z) ∝ exp(-U(z))``, ``U(z) = energy_fn(z, *inputs) + reference_precision * ||z||^2 / 2``,
    and returns the final states ``(B, *shape)``, detached. With ``return_diagnostics=True`` it
    returns ``(z, diagnostics)``: per-gradient-evaluation tensors ``energy`` and ``grad_norm``
    (``"ends"``: their first and last values only, without per-step reductions).

    To write a sampler, subclass this and implement :meth:`run`; ask the target for gradients
    (``target.grad(z)``). The reference term, the diagnostics, frozen parameters, the modules'
    mode and gradients inside validation are handled here, so a new update rule cannot get them
    wrong.

    **Whole-chain capture** (:mod:`lebm.recording.cache`). On a CUDA device a call that passes
    ``inputs=`` runs its chain as one CUDA graph, recorded at the first call of its kind and
    replayed after, while the run-wide switch is on (:mod:`lebm.recording.switch`), when
    the sampler's class opted in (``capturable = True``) and its own ``cuda_graph`` option does
    not keep it out. A subclass that overrides :meth:`run` does not inherit the opt-in:
    it states ``capturable = True`` itself once its ``run`` meets the conditions in
    ``docs/extending.md`` ("Captured chains"). Everywhere else chains run eagerly.
    """

    #: :meth:`run` is what a capture records (``capturable``, ``cuda_graph``: :class:`CaptureOptIn`).
    recorded_methods: ClassVar[tuple[str, ...]] = ("run",)

    def __init__(self) -> None:
        """A sampler without hyperparameters (subclasses add theirs); recorded for checkpoints."""
        super().__init__()

    def current_step_size(self) -> float:
        """This sampler's configured step size (a wrapper's: the wrapped sampler's); a TypeError
        naming the sampler when it has none."""
        if not isinstance(getattr(self, "step_size", None), (int, float)):
            raise TypeError(
                f"{type(self).__name__} has no numeric step_size to lower: leave it out of the samplers a divergence "
                "recovery lowers, or give it current_step_size() and scale_step_size(factor) methods"
            )
        return float(self.step_size)  # type: ignore[attr-defined]

    def scale_step_size(self, factor: float) -> float:
        """Multiply this sampler's step size by ``factor`` (e.g. 0.5 after a divergence) and
        return the new value. Samplers without a ``step_size`` say so; a wrapper (persistent
        chains) scales the sampler it wraps; an adaptive sampler scales its adapted value too."""
        if not factor > 0:
            raise ValueError(f"a step size can only be scaled by a positive factor, got {factor}")
        self.step_size = self.current_step_size() * float(factor)
        return self.step_size

    def prepare(self, z0: Tensor) -> None:
        """Called with the chains' start ``(B, *shape)`` before every call runs (eagerly or captured):
        a sampler whose state depends on the batch (per-chain step sizes) allocates it here, outside
        any captured graph. The default does nothing."""

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
        return_diagnostics: Diagnostics = False,
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
            return_diagnostics: also return the diagnostics dict: ``True`` every recorded state's,
                ``"ends"`` the first and the last state's (what training logs; cheaper).
        """
        check_call(self, energy_fn, z0)
        refuse_unless_opted_in(self)  # inside a recorded training iteration
        with torch.inference_mode(False):  # state a sampler allocates must be usable by later chains
            self.prepare(z0)
        modules = list(freeze)
        if isinstance(energy_fn, nn.Module):
            modules.append(energy_fn)
        with chain_context(modules, module_mode), out_of_memory_named(self, energy_fn, z0):
            data = tuple(t.clone() if t.is_inference() else t for t in (inputs or ()))  # outside inference mode
            body_for = self._chain_body(energy_fn, float(reference_precision), return_diagnostics)
            captured = None
            if inputs is not None and capture_possible(z0.device):
                precision = float(reference_precision)
                call = ChainCall(self, energy_fn, z0, data, precision, modules, generator, return_diagnostics)
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
        if (
            z.device.type == "cpu" and not inside_recording() and not bool(torch.isfinite(z).all())
        ):  # (a GPU chain is not synchronised for it)
            warnings.warn(
                f"{self!r} ended with states that are not finite (NaN or inf): the energy returned NaN, or the "
                "chain diverged; lower its step size (or check the energy)",
                RuntimeWarning,
                stacklevel=2,
            )
        return (z, diagnostics) if return_diagnostics else z

    def _chain_body(
        self, energy_fn: Callable[..., Tensor], reference_precision: float, record: Diagnostics
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
