"""Recording a chain body as a CUDA graph, or emulating that on the CPU.

A :class:`GraphRecorder` warms a chain body up and records it; :func:`recorder_for` picks one for a
device: :class:`CUDAGraphRecorder` on a CUDA device, :class:`ReplayEmulator` on the CPU inside
:func:`emulate_on_cpu` (tests, and users checking a sampler of their own without a GPU), none
elsewhere (chains run eagerly).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

ChainBody = Callable[[], tuple[Tensor, dict[str, Tensor]]]
"""The chain as a function of its static buffers: ``() -> (final states, diagnostics)``."""


class GraphRecorder(Protocol):
    """How a chain body is warmed up and recorded on one device."""

    def warm_up(self, body: ChainBody, runs: int) -> None:
        """Run ``body`` eagerly ``runs`` times, as the capture will see it."""

    def record(self, body: ChainBody, generators: Sequence[torch.Generator]) -> tuple[Callable[[], None], Any]:
        """Record ``body`` (registering ``generators``); return ``(replay, outputs)``: calling
        ``replay()`` recomputes ``outputs`` in place from the static buffers ``body`` reads."""


class CUDAGraphRecorder:
    """Records chains as CUDA graphs on one device: warm-up and capture on one side stream, one
    memory pool shared by the sampler's graphs (safe because every replay's outputs are copied
    out before the next replay), ``thread_local`` capture mode (a DataLoader's pin-memory thread
    may allocate host memory while a chain is being captured)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        with torch.cuda.device(device):
            self.stream = torch.cuda.Stream(device)
            self.pool = torch.cuda.graph_pool_handle()

    def warm_up(self, body: ChainBody, runs: int) -> None:
        with torch.cuda.device(self.device):
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                for _ in range(runs):
                    body()
            torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def record(self, body: ChainBody, generators: Sequence[torch.Generator]) -> tuple[Callable[[], None], Any]:
        graph = torch.cuda.CUDAGraph()
        for generator in generators:
            graph.register_generator_state(generator)
        with torch.cuda.device(self.device):
            caller_stream = torch.cuda.current_stream(self.device)
            try:
                with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
                    outputs = body()
            except Exception:
                # a failed capture can leave the capture stream current: give the caller its stream back
                torch.cuda.set_stream(caller_stream)
                torch.cuda.synchronize(self.device)
                raise
        return graph.replay, outputs


class ReplayEmulator:
    """A stand-in for :class:`CUDAGraphRecorder` on the CPU: "replaying" runs the body again and
    copies its results into the outputs recorded at capture, as a graph writes into its static
    outputs. It exercises everything around the graph (keys, static buffers, generator hand-over,
    warm-up side effects, fallbacks) without a GPU; see :func:`emulate_on_cpu`."""

    def warm_up(self, body: ChainBody, runs: int) -> None:
        for _ in range(runs):
            body()

    def record(self, body: ChainBody, generators: Sequence[torch.Generator]) -> tuple[Callable[[], None], Any]:
        outputs = body()

        def replay() -> None:
            z, diagnostics = body()
            outputs[0].copy_(z)
            for name, value in diagnostics.items():
                outputs[1][name].copy_(value)

        return replay, outputs


_EMULATE_ON_CPU = False


@contextlib.contextmanager
def emulate_on_cpu() -> Iterator[None]:
    """Within this context, chains on the CPU go through the capture machinery with a
    :class:`ReplayEmulator`: a way to test on a CPU that a sampler or an energy behaves under
    capture (same numbers, same random streams, no stale cache entry) before a GPU run."""
    global _EMULATE_ON_CPU
    previous, _EMULATE_ON_CPU = _EMULATE_ON_CPU, True
    try:
        yield
    finally:
        _EMULATE_ON_CPU = previous


def recorder_for(device: torch.device) -> GraphRecorder | None:
    """The recorder for chains on ``device``: CUDA graphs on a CUDA device, the emulator on the CPU
    inside :func:`emulate_on_cpu`, else None (eager)."""
    if device.type == "cuda":
        return CUDAGraphRecorder(device)
    if device.type == "cpu" and _EMULATE_ON_CPU:
        return ReplayEmulator()
    return None


def capture_possible(device: torch.device) -> bool:
    """Whether a chain on ``device`` may be captured at all (cheap: checked before anything else)."""
    if device.type == "cuda":
        return not torch.cuda.is_current_stream_capturing()  # inside a user's own capture: eager
    return device.type == "cpu" and _EMULATE_ON_CPU
