"""Where a chain starts: :class:`ChainInitializer`, one concept for every start.

A chain's start ``z0`` is given to a sampler the way its energy is, at call time::

    z0 = initializer.start(n, context=x, generator=stream)       # (n, *state_shape), detached
    z = sampler(energy_fn, z0, inputs=(x,), generator=stream)

The start may be noise (:class:`NoiseStart`, LatentEBM), a network of the data or of a latent
(:class:`NetworkStart`: Dual-MCMC's inference net ``q(z|x)`` for the posterior chain and its
generator ``g(z)`` for the data chain), or a learned sampler (DAMC's latent diffusion model,
``lebm.nets.LatentDiffusionAmortizer``, and its :class:`AveragedStart` EMA copy). Methods differ in
which initializer they learn and how, not in how chains consume it.

**The contract** (kept by :meth:`ChainInitializer.start`, whatever ``draw`` does):

- shape: ``start(n, context)`` returns ``(n, *state_shape)``; ``n`` defaults to the context's rows
  and must equal them when both are given;
- no gradient reaches the initializer unless it asks (``detach = False``): ``draw`` runs under
  ``torch.no_grad()`` and the start comes back detached;
- its noise comes from ``generator``, the caller's per-rank stream (never torch's global RNG when
  a stream is given), so ranks start differently and a resumed run starts where it left off;
- half-precision starts (a net under autocast) come back as float32: chain states are float32;
- capture: a start is computed before the chain, outside the chain's CUDA graph; the chain it
  feeds is captured as before (``docs/extending.md``, "Captured chains"). A start that is itself a
  loop of small launches (DAMC's 100-step ancestral sampler) is recorded too when its class opts
  in (``capturable = True``): it splits its draw into :meth:`ChainInitializer.initial_state`, drawn
  eagerly (``z_T ~ N(0, I)``), and :meth:`ChainInitializer.from_state`, recorded once per capture
  key as one CUDA graph and replayed after, under the chains' keys, eviction and per-rank stream
  rules (:mod:`lebm.recording`).

Initializers that read a method's nets (:class:`NetworkStart`) hold them without registering them
as submodules, so a method's checkpoint keeps one copy of each net; one that owns parameters (the
diffusion amortizer, the EMA copy) is an ``nn.Module`` as well and is registered by its method.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lebm import arguments
from lebm.recording.cache import run_captured
from lebm.recording.keys import ChainCall
from lebm.recording.recorders import ChainBody, capture_possible
from lebm.recording.switch import CaptureOptIn

__all__ = ["AveragedStart", "ChainInitializer", "NetworkStart", "NoiseStart", "check_start"]


def check_start(
    z0: Any, n: int, owner: str, state_shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """``z0`` as a start of ``n`` chains: a floating tensor ``(n, *state_shape)`` (any state shape
    when ``state_shape`` is None), cast to the chains' ``dtype`` (the model's: a float64 start of a
    float32 model, or the reverse) or, without one, half precision to float32; a
    ``ValueError``/``TypeError`` naming ``owner`` otherwise."""
    if not isinstance(z0, Tensor) or not z0.is_floating_point():
        got = z0.dtype if isinstance(z0, Tensor) else type(z0).__name__
        raise TypeError(f"{owner} must return the chains' start as a floating torch.Tensor (n, *shape), got {got}")
    if z0.dim() < 1 or z0.shape[0] != n:
        raise ValueError(f"{owner} must return a start of {n} chains, (n, *shape), got shape {tuple(z0.shape)}")
    if state_shape is not None and tuple(z0.shape[1:]) != tuple(state_shape):
        raise ValueError(
            f"{owner} starts chains of states {tuple(z0.shape[1:])}, but this model's chains run on states "
            f"{tuple(state_shape)}: give an initializer made for this model's latent size {tuple(state_shape)}"
        )
    if dtype is not None:
        return z0 if z0.dtype == dtype else z0.to(dtype)
    return z0.float() if z0.dtype in (torch.float16, torch.bfloat16) else z0


class ChainInitializer(CaptureOptIn):
    """Where ``n`` chains start: ``start(n, context=None, generator=None) -> (n, *state_shape)``.

    Subclass it and implement :meth:`draw`; :meth:`start` keeps the contract (module docstring):
    the shape, no gradient into the initializer (unless ``detach = False``), float32 states. Draw
    every random number from the ``generator`` given.

    **Captured starts.** A class whose start is worth recording (many small launches) implements
    :meth:`initial_state` and :meth:`from_state` instead of :meth:`draw` and states
    ``capturable = True``; on a CUDA device, with the run's capture switch on and its own
    ``cuda_graph`` not False, :meth:`start` then draws the initial state eagerly and serves
    ``from_state`` from a graph recorded once per key (the initializer's module tree, the state's
    and the context's shapes, the autocast state) and replayed after, its noise drawn from the
    caller's stream inside the graph. ``from_state`` must meet the conditions of a captured chain
    (``docs/extending.md``, "Captured chains"): no host synchronisation, everything it reads in
    the initializer's attributes, its parameters read in place.

    Attributes:
        detach: True (default): ``draw`` runs without autograd and the start is detached; False
            lets a loss on the chain's start reach the initializer's parameters (never captured).
        capturable: whether :meth:`from_state` may be recorded as a CUDA graph (overriding
            ``draw``, ``initial_state`` or ``from_state`` revokes an inherited opt-in).
        cuda_graph: False keeps this initializer's starts eager.
    """

    detach: bool = True
    recorded_methods: ClassVar[tuple[str, ...]] = ("draw", "initial_state", "from_state")

    def draw(
        self, n: int, context: Tensor | None, generator: torch.Generator | None, device: torch.device | None
    ) -> Tensor:
        """The start ``(n, *state_shape)`` of ``n`` chains given ``context`` ``(n, ...)`` or None:
        ``from_state(initial_state(...))`` for a class that splits its draw."""
        if type(self).initial_state is ChainInitializer.initial_state:
            raise NotImplementedError(f"{type(self).__name__} must implement draw(n, context, generator, device)")
        return self.from_state(self.initial_state(n, context, generator, device), context, generator)

    def initial_state(
        self, n: int, context: Tensor | None, generator: torch.Generator | None, device: torch.device | None
    ) -> Tensor:
        """A captured start's eager part: the state ``(n, ...)`` that :meth:`from_state` transports
        (e.g. ``z_T ~ N(0, I)`` from ``generator``)."""
        raise NotImplementedError(f"{type(self).__name__} draws its start whole (draw), not from an initial state")

    def from_state(self, state: Tensor, context: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """A captured start's recorded part: the start ``(n, *state_shape)`` from ``state`` ``(n, ...)``
        given ``context`` ``(n, ...)`` or None, its further noise from ``generator``."""
        raise NotImplementedError(f"{type(self).__name__} draws its start whole (draw), not from an initial state")

    def start(
        self,
        n: int | None = None,
        context: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """The start ``(n, *state_shape)`` of ``n`` chains (default: one per row of ``context``).

        Args:
            n: the number of chains.
            context: what the start is conditioned on, ``(n, ...)`` (the data batch ``x`` for a
                posterior chain, latents ``z`` for a data chain), or None.
            generator: the random stream of the start's noise (the caller's per-rank stream).
            device: where a start without context is made (default: the initializer's own, else the CPU).
        """
        if n is None:
            if context is None:
                raise ValueError(f"{type(self).__name__}.start needs n (the number of chains) or a context (n, ...)")
            n = int(context.shape[0])
        n = arguments.whole(type(self).__name__, "start(n)", n, at_least=1)
        if context is not None and (not isinstance(context, Tensor) or context.shape[0] != n):
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(f"{type(self).__name__}.start: the context must have n={n} rows, got {shape}")
        where = torch.device(device) if device is not None else (context.device if context is not None else None)
        if arguments.flag(type(self).__name__, "detach", self.detach):  # "no" would read as true
            with torch.no_grad():
                z0 = self._detached_draw(n, context, generator, where)
            z0 = z0.detach()
        else:
            z0 = self.draw(n, context, generator, where)
        return check_start(z0, n, f"{type(self).__name__}.draw")

    def _detached_draw(
        self, n: int, context: Tensor | None, generator: torch.Generator | None, device: torch.device | None
    ) -> Tensor:
        """:meth:`draw` (under the caller's ``no_grad``); for an initializer allowed to capture
        (:meth:`capture_allowed`), its initial state drawn eagerly and :meth:`from_state` served by a
        captured graph where capture is possible (:func:`run_captured`), else run eagerly."""
        if not self.capture_allowed():
            return self.draw(n, context, generator, device)
        state = self.initial_state(n, context, generator, device)
        if not capture_possible(state.device):
            return self.from_state(state, context, generator)
        # a graph's static buffers serve calls in and out of inference mode; no autograd either way
        with torch.inference_mode(False), torch.no_grad():
            state = state.clone() if state.is_inference() else state
            inputs = () if context is None else (context.clone() if context.is_inference() else context,)
            modules = [self] if isinstance(self, nn.Module) else []
            call = ChainCall(self, self.from_state, state, inputs, 0.0, modules, generator)
            captured = run_captured(call, self._start_body)
            if captured is None:
                return self.from_state(state, inputs[0] if inputs else None, generator)
            return captured[0]

    def _start_body(self, state: Tensor, inputs: tuple[Tensor, ...], generator: torch.Generator | None) -> ChainBody:
        """``from_state`` over the static buffers of a captured start: ``() -> (start, {})``."""

        def body() -> tuple[Tensor, dict[str, Tensor]]:  # run under _detached_draw's no_grad
            return self.from_state(state, inputs[0] if inputs else None, generator), {}

        return body

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "training")
        return f"{type(self).__name__}({fields})"


class NoiseStart(ChainInitializer):
    """Chains from ``N(0, std^2 I)`` noise ``(n, *shape)``, drawn from the caller's stream
    (LatentEBM's posterior and prior chains).

    Args:
        shape: the state's shape without the batch, e.g. ``[latent_dim]`` (an int is ``[int]``).
        std: the noise's standard deviation.
    """

    def __init__(self, shape: int | Sequence[int], std: float = 1.0) -> None:
        dims = [shape] if isinstance(shape, int) else list(shape)
        self.shape = [arguments.whole("NoiseStart", "shape", d, at_least=1) for d in dims]
        self.std = arguments.number("NoiseStart", "std", std, above=0, at_most=arguments.SQUARE_FITS_FLOAT32)

    def draw(
        self, n: int, context: Tensor | None, generator: torch.Generator | None, device: torch.device | None
    ) -> Tensor:
        return torch.randn(n, *self.shape, generator=generator, device=device) * self.std


#: What a :class:`NetworkStart` takes of its network's output.
NETWORK_OUTPUTS = ("tensor", "sample", "mean")


class NetworkStart(ChainInitializer):
    """Chains from a network of the context: ``net(context)`` itself (``output="tensor"``:
    Dual-MCMC's data chain starts at the generator's ``g(z)``), or a reparameterised sample or
    the mean of the distribution it returns (``"sample"``/``"mean"``: Dual-MCMC's posterior chain
    starts at a sample of ``q(z|x)``; the sample's noise is drawn from the caller's stream).

    The net is held, not registered: the method that owns it keeps it (and its one copy in the
    checkpoint).

    Args:
        net: a callable of the context ``(n, ...)``: a tensor ``(n, *shape)``, or a distribution
            with ``rsample(generator)`` and ``mean`` (``lebm.nets.DiagonalGaussian``).
        output: ``"tensor"``, ``"sample"`` or ``"mean"``.
    """

    def __init__(self, net: Callable[[Tensor], Any], output: str = "tensor") -> None:
        if not callable(net):
            raise TypeError(f"NetworkStart takes a network (a callable of the context), got {type(net).__name__}")
        self.output = arguments.one_of("NetworkStart", "output", output, NETWORK_OUTPUTS)
        self._net = net

    @property
    def net(self) -> Callable[[Tensor], Any]:
        """The network the start is read from."""
        return self._net

    def draw(
        self, n: int, context: Tensor | None, generator: torch.Generator | None, device: torch.device | None
    ) -> Tensor:
        if context is None:
            raise ValueError(f"NetworkStart({type(self._net).__name__}) starts chains from a context: pass context=")
        out = self._net(context)
        if self.output == "tensor":
            return out
        return out.rsample(generator) if self.output == "sample" else out.mean

    def __repr__(self) -> str:
        return f"NetworkStart({type(self._net).__name__}, output={self.output!r})"


class AveragedStart(ChainInitializer, nn.Module):
    """An exponential moving average of a learned initializer (DAMC's ``Q_dummy``): a frozen copy,
    starting equal to ``online``, that starts chains as the online one would with its averaged
    weights. Update rule (:meth:`update`)::

        theta_avg <- rate * theta_online + (1 - rate) * theta_avg     # buffers copied

    It is an ``nn.Module`` holding the copy, so a method that registers it checkpoints the average.

    Args:
        online: the initializer to average, a ``ChainInitializer`` that is an ``nn.Module``.
    """

    def __init__(self, online: ChainInitializer) -> None:
        if not isinstance(online, ChainInitializer) or not isinstance(online, nn.Module):
            raise TypeError(
                "AveragedStart averages a learned initializer: a ChainInitializer that is an nn.Module, got "
                f"{type(online).__name__}"
            )
        nn.Module.__init__(self)
        self.average = copy.deepcopy(online)
        self.average.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module, rate: float) -> None:
        """Move the average ``rate`` of the way to ``online``'s parameters (buffers copied):
        ``a <- a + rate * (online - a)``, ``rate`` in (0, 1] (1 copies; a rate outside is refused)."""
        arguments.number("AveragedStart.update", "rate", rate, above=0.0, at_most=1.0)
        for averaged, current in zip(self.average.parameters(), online.parameters(), strict=True):
            averaged.lerp_(current.detach(), rate)
        for averaged, current in zip(self.average.buffers(), online.buffers(), strict=True):
            averaged.copy_(current)

    def draw(
        self, n: int, context: Tensor | None, generator: torch.Generator | None, device: torch.device | None
    ) -> Tensor:
        return self.average.start(n, context, generator=generator, device=device)

    def __repr__(self) -> str:
        return f"AveragedStart({type(self.average).__name__})"
