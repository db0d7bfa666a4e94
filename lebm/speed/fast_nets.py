"""Fast paths for the nets a method's chains evaluate: ``torch.compile`` and channels-last.

Every lebm method spends most of an iteration in short-run chains: tens of forward passes of its
nets, each followed by one backward pass to the chain state. :class:`FastNets` switches on, from a
recipe, the ways of making those passes cheaper that do not change what is computed::

    trainer:
      callbacks:
        - class_path: lebm.speed.FastNets
          init_args: {compile: true, channels_last: true}

- ``channels_last``: the convolutional nets keep their 4-d weights in NHWC order (oneDNN and
  cuDNN pick faster kernels for it); the numbers are those of NCHW up to summation order.
- ``compile``: ``nn.Module.compile()`` on each net (TorchInductor: pointwise ops fused into
  their neighbours, one kernel instead of several per activation). The state dict keeps its
  keys, so checkpoints written with and without it are interchangeable. The first iterations
  pay the compilation (tens of seconds on a CPU); a net that flips between frozen parameters (in
  a chain) and trainable ones (in its update) is compiled once for each.
- CUDA graphs are not here: on a CUDA device every chain is captured whole, as one graph, by its
  sampler (:mod:`lebm.recording.cache`), whatever this callback does. Compile modes that
  make CUDA graphs of their own (``reduce-overhead``, ``max-autotune``) cannot run inside a
  captured chain and are refused: use ``max-autotune-no-cudagraphs``.

Mixed precision is not here: it is Lightning's ``trainer.precision: bf16-mixed`` (nets in
bfloat16 under autocast, chain states and their gradients in float32: see
:meth:`lebm.samplers.Sampler.__call__`).

Which nets: by default every lebm net (a :class:`~lebm.config.Configurable` module whose class
lives in :mod:`lebm.nets`) that holds no other lebm net, e.g. the generator inside a
:class:`~lebm.nets.GaussianDecoder` and the energy MLP inside a prior; ``nets`` names them
instead by their dotted attribute paths (``["decoder.net", "prior.energy_net"]``); a net of your
own that is not an lebm component must be named there (a warning lists the parameters left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lebm.config import Configurable

NETS_PACKAGE = "lebm.nets"
#: torch.compile modes that record CUDA graphs themselves (a graph cannot be captured inside another).
GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")


def _is_lebm_net(module: nn.Module) -> bool:
    return isinstance(module, Configurable) and type(module).__module__.startswith(NETS_PACKAGE)


def innermost_nets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(dotted name, module)`` of every lebm net in ``model`` that holds no other lebm net
    (``model`` itself, named ``""``, when it is such a net)."""
    nets = [(name, module) for name, module in model.named_modules() if _is_lebm_net(module)]
    return [
        (name, module)
        for name, module in nets
        if not any(other is not module and _is_lebm_net(other) for other in module.modules())
    ]


def named_nets(model: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """The submodules of ``model`` at the dotted paths ``names``, with a clear error for a wrong name."""
    available = dict(model.named_modules())
    missing = [name for name in names if name not in available or not name]
    if missing:
        choices = ", ".join(name for name, _ in innermost_nets(model))
        raise ValueError(
            f"FastNets nets {missing} are not submodules of {type(model).__name__}; "
            f"name them by dotted attribute path, e.g. one of: {choices}"
        )
    return [(name, available[name]) for name in names]


def has_image_convolutions(module: nn.Module) -> bool:
    """Whether ``module`` holds a 2-d convolution (whose weights channels-last reorders)."""
    return any(isinstance(sub, nn.Conv2d | nn.ConvTranspose2d) for sub in module.modules())


class FastNets(L.Callback):
    """Compile and/or reorder to channels-last the nets a method's chains evaluate.

    Args:
        compile: ``torch.compile`` each net (``nn.Module.compile``, state-dict keys unchanged).
        channels_last: keep the 4-d weights of convolutional nets in channels-last order.
        compile_mode: a ``torch.compile`` mode, e.g. ``"max-autotune-no-cudagraphs"``; modes
            that make their own CUDA graphs are refused (see the module docstring).
        dynamic: ``torch.compile``'s ``dynamic``: None (default) compiles for the first shape
            and generalises when another batch size comes; False compiles one graph per shape;
            True starts with shape-generic graphs.
        nets: dotted paths of the nets to treat (default: every innermost lebm net, see module doc).
    """

    def __init__(
        self,
        compile: bool = False,
        channels_last: bool = False,
        compile_mode: str | None = None,
        dynamic: bool | None = None,
        nets: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        check_compile_mode(compile_mode)
        self.compile = bool(compile or compile_mode)
        self.channels_last = bool(channels_last)
        self.compile_mode = compile_mode
        self.dynamic = dynamic
        self.nets = list(nets) if nets is not None else None
        self.applied: list[str] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Apply the fast paths once, before the first batch (fit, validate, test or predict)."""
        if self.applied:
            return
        self.applied = apply_fast_paths(
            pl_module,
            compile=self.compile,
            channels_last=self.channels_last,
            compile_mode=self.compile_mode,
            dynamic=self.dynamic,
            nets=self.nets,
        )
        untreated = untreated_modules(pl_module, self.applied)
        if untreated:
            rank_zero_warn(
                f"FastNets treats {self.applied} but not the parameters of {untreated} (not lebm nets): "
                "name every net to treat in FastNets(nets=[...]) by its dotted path"
            )


def check_compile_mode(compile_mode: str | None) -> None:
    """Refuse a ``torch.compile`` mode that records CUDA graphs itself (see the module docstring)."""
    if compile_mode in GRAPHING_COMPILE_MODES:
        raise ValueError(
            f"FastNets compile_mode={compile_mode!r} makes CUDA graphs of its own, which cannot run inside lebm's "
            "captured chains: use compile_mode 'max-autotune-no-cudagraphs' (or 'default')"
        )


def untreated_modules(model: nn.Module, treated: Sequence[str]) -> list[str]:
    """Names of ``model``'s direct-parameter holders that lie outside every ``treated`` net."""
    modules = dict(model.named_modules())
    covered = {id(p) for name in treated for p in modules[name].parameters()}
    return [
        name
        for name, module in model.named_modules()
        if any(id(p) not in covered for p in module.parameters(recurse=False))
    ]


def apply_fast_paths(
    model: nn.Module,
    *,
    compile: bool = False,
    channels_last: bool = False,
    compile_mode: str | None = None,
    dynamic: bool | None = None,
    nets: Sequence[str] | None = None,
) -> list[str]:
    """Apply :class:`FastNets`' switches to ``model``'s nets in place; returns the treated names.

    Usable without a Trainer (a script's own loop), on a method or on one net:
    ``apply_fast_paths(model, compile=True)``.
    """
    check_compile_mode(compile_mode)
    chosen = named_nets(model, nets) if nets is not None else innermost_nets(model)
    for _, net in chosen:
        if channels_last and has_image_convolutions(net):
            net.to(memory_format=torch.channels_last)
        if compile:
            options: dict[str, Any] = {"dynamic": dynamic}
            if compile_mode is not None:
                options["mode"] = compile_mode
            net.compile(**options)
    return [name for name, _ in chosen]
