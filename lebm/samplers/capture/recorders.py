"""Recording a chain body as a CUDA graph, or emulating that on the CPU.

A :class:`GraphRecorder` warms a chain body up, records it, and owns what it recorded.
:func:`recorder_for` picks one for a device: the device's :class:`CUDAGraphStore` on a CUDA device,
an emulator on the CPU inside :func:`emulate_on_cpu` (tests, and users checking a sampler or an
energy of their own without a GPU), none elsewhere (chains run eagerly).

**Graph lifetime.** Every chain graph of a process on one device is recorded on one stream that
lebm creates for itself (outside torch's stream pool, so no other library captures on it) and
allocates from one memory pool. No graph is ever destroyed while another graph recorded on that
stream is alive: from torch 2.11 on, destroying a graph frees the cuBLAS workspace of the stream
it was recorded on, which every other graph recorded there still uses. So a graph a sampler no
longer needs (evicted from its cache, or its sampler garbage-collected) is only *retired*; when
:data:`RETIRED_LIMIT` graphs are retired, :meth:`GraphStore.release_all` destroys every graph of
the device at once and starts a new *generation*: cached chains of older generations record again
at their next call. One pool for every graph keeps the memory captured chains hold close to one
chain's working memory plus each graph's outputs (graphs never replay concurrently, and every
replay's outputs are copied out at once, so sharing the pool is safe).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from lebm.samplers.capture.host_sync import HostSynchronisation, RefuseHostSync

if TYPE_CHECKING:
    from lebm.samplers.capture.op_replay import OpReplayEmulator

ChainBody = Callable[[], tuple[Tensor, dict[str, Tensor]]]
"""The chain as a function of its static buffers: ``() -> (final states, diagnostics)``."""

#: Retired graphs a device keeps before every graph of the device is destroyed at once.
RETIRED_LIMIT = 16
#: torch versions that follow a non-default generator in a graph only when it is registered
#: (``CUDAGraph.register_generator_state``, from 2.4: the floor of ``setup.cfg``'s torch range, so
#: that a chain with a generator is captured on every version lebm supports); from 2.14 that call
#: is a deprecated no-op (generators are registered on their first draw in a capture).
_GENERATOR_REGISTRATION_UNTIL = (2, 14)


class CaptureRejected(RuntimeError):
    """A chain that cannot be captured, found before its recording started."""


class CaptureBroken(RuntimeError):
    """A failed recording left the device unusable for eager work: the run must stop."""


def run_refusing_host_sync(body: ChainBody) -> None:
    """Run ``body`` once with every host synchronisation refused (this thread only): raise
    :class:`CaptureRejected` naming the operation, before anything is recorded."""
    try:
        with RefuseHostSync():
            body()
    except HostSynchronisation as error:
        raise CaptureRejected(
            f"the chain synchronises with the host ({error}): .item(), float(tensor), printing a tensor, "
            "a copy to the CPU, data-dependent shapes or a BatchNorm with momentum=None cannot be recorded"
        ) from error


class GraphRecorder(Protocol):
    """How a chain body is warmed up and recorded on one device, and what it recorded is kept."""

    generation: int

    def warm_up(self, body: ChainBody, runs: int) -> None:
        """Run ``body`` eagerly ``runs`` times, as the capture will see it; raise
        :class:`CaptureRejected` when the body does what a capture cannot."""

    def record(self, body: ChainBody, generators: Sequence[torch.Generator]) -> tuple[Callable[[], None], Any]:
        """Record ``body`` (following ``generators``); return ``(replay, outputs)``: calling
        ``replay()`` recomputes ``outputs`` in place from the static buffers ``body`` reads."""

    def retire(self) -> None:
        """Note that one recorded graph will not be replayed again."""

    def release_due(self) -> bool:
        """Whether enough graphs are retired for :meth:`release_all`."""

    def release_all(self) -> None:
        """Destroy every graph recorded here, at once; a new generation starts."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


# ------------------------------------------------------------------------------ retiring
class GraphStore:
    """What every recorder shares: the generation counter and the retired graphs' count."""

    def __init__(self) -> None:
        self.generation = 0
        self.retired = 0

    def retire(self) -> None:
        self.retired += 1

    def release_due(self) -> bool:
        return self.retired >= RETIRED_LIMIT

    def release_all(self) -> None:
        self._destroy_all()
        self.generation += 1
        self.retired = 0

    def _destroy_all(self) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------------------ CUDA graphs
def dedicated_stream(device: torch.device) -> torch.cuda.Stream:
    """A non-blocking CUDA stream of lebm's own on ``device``, created with the driver API so that
    it is not one of the pooled streams ``torch.cuda.Stream()`` hands out round-robin (which other
    samplers or libraries may record graphs on). Falls back to a pooled stream with a warning."""
    with torch.cuda.device(device):
        torch.cuda.current_stream(device).synchronize()  # the device's context is current on this thread
        handle = ctypes.c_void_p()
        status = -1
        with contextlib.suppress(OSError, AttributeError):
            driver = ctypes.CDLL(ctypes.util.find_library("cuda") or "libcuda.so.1")
            status = driver.cuStreamCreate(ctypes.byref(handle), ctypes.c_uint(1))  # CU_STREAM_NON_BLOCKING
        if status == 0 and handle.value:
            return torch.cuda.ExternalStream(handle.value, device=device)
    warnings.warn(
        f"lebm could not create a CUDA stream of its own (cuStreamCreate returned {status}); chains are recorded "
        "on a pooled stream, which another library's CUDA graph may share",
        stacklevel=3,
    )
    return torch.cuda.Stream(device)


class GeneratorRescue:
    """The generators a recording touches, saved before it, so that a failed recording can give
    them back: on torch 2.11-2.13 a recording that fails before its epilogue leaves a generator
    flagged as capturing, and every later draw from it raises."""

    def __init__(self, device: torch.device, generators: Sequence[torch.Generator]) -> None:
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.device = device
        self.generators = [torch.cuda.default_generators[index], *generators]
        self.saved = [self._save(generator) for generator in self.generators]

    @staticmethod
    def _save(generator: torch.Generator) -> tuple[Any, Tensor]:
        clone = generator.clone_state() if hasattr(generator, "clone_state") else None
        return clone, generator.get_state()

    def restore(self) -> bool:
        """Put every generator's values back; where a generator still refuses to draw, give it a
        fresh state object (``graphsafe_set_state``). Returns whether the *default* generator's
        state object was replaced: graphs recorded earlier follow the old one, so they must go."""
        replaced_default = False
        for position, (generator, (clone, state)) in enumerate(zip(self.generators, self.saved, strict=True)):
            if self._draws(generator, state):
                continue
            if clone is not None and hasattr(generator, "graphsafe_set_state"):
                with contextlib.suppress(RuntimeError):
                    generator.graphsafe_set_state(clone)
                    replaced_default = replaced_default or position == 0
            with contextlib.suppress(RuntimeError):
                generator.set_state(state)
        return replaced_default

    def _draws(self, generator: torch.Generator, state: Tensor) -> bool:
        """Set ``state`` and check that ``generator`` draws (the probe's draw is undone)."""
        try:
            generator.set_state(state)
            torch.empty(1, device=self.device).normal_(generator=generator)
            generator.set_state(state)
            return True
        except RuntimeError:
            return False


def register_generators(graph: torch.cuda.CUDAGraph, generators: Sequence[torch.Generator]) -> None:
    """Register the chain's generators with ``graph`` where this torch needs it (2.4 to 2.13);
    from 2.14 every generator a capture draws from is followed without it. A torch without the
    call has nothing to register: that is no capture failure."""
    register = getattr(graph, "register_generator_state", None)
    if register is None or torch_version() >= _GENERATOR_REGISTRATION_UNTIL:
        return
    for generator in generators:
        register(generator)


class CUDAGraphStore(GraphStore):
    """Every chain graph of this process on one CUDA device: one dedicated capture stream, one
    memory pool, graphs destroyed all together (see the module docstring).

    Warm-up, capture and replays run on the dedicated stream, each ordered after the caller's
    stream and before it goes on. Capture mode is ``thread_local`` (a DataLoader's pin-memory
    thread may allocate host memory meanwhile).
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.stream = dedicated_stream(device)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.broken: str | None = None  # set when a failed recording could not be undone

    def warm_up(self, body: ChainBody, runs: int) -> None:
        """``runs`` eager runs on the capture stream; the last refusing host synchronisations
        (:func:`run_refusing_host_sync`), so that such a chain is rejected before capture. The
        caller's stream waits for them whatever happens: what the warm-up changed is put back there."""
        caller = torch.cuda.current_stream(self.device)
        with torch.cuda.device(self.device):
            self.stream.wait_stream(caller)
            try:
                with torch.cuda.stream(self.stream):
                    for _ in range(runs - 1):
                        body()
                    run_refusing_host_sync(body)
            finally:
                caller.wait_stream(self.stream)

    def record(self, body: ChainBody, generators: Sequence[torch.Generator]) -> tuple[Callable[[], None], Any]:
        """Record ``body`` on the dedicated stream into the shared pool. Neither synchronises the
        device nor empties the allocator's cache (``torch.cuda.graph`` does both at every capture)."""
        if self.broken:
            raise CaptureRejected(self.broken)
        graph = torch.cuda.CUDAGraph()
        register_generators(graph, generators)
        rescue = GeneratorRescue(self.device, generators)
        caller = torch.cuda.current_stream(self.device)
        self.graphs.append(graph)  # destroyed only with every other graph of the device
        with torch.cuda.device(self.device):
            self.stream.wait_stream(caller)
            try:
                with torch.cuda.stream(self.stream):
                    graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
                    try:
                        outputs = body()
                    except BaseException:
                        with contextlib.suppress(Exception):
                            graph.capture_end()
                        raise
                    graph.capture_end()
            except BaseException:
                self.retire()
                self._recover(rescue)
                raise
            finally:
                caller.wait_stream(self.stream)
        return self._replay_on_capture_stream(graph), outputs

    def _replay_on_capture_stream(self, graph: torch.cuda.CUDAGraph) -> Callable[[], None]:
        """The graph's replay, run on the capture stream after the caller's work and before the
        caller goes on: replays of graphs that share one pool and one cuBLAS workspace never run
        concurrently, whatever stream a caller has current."""

        def replay() -> None:
            caller = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(caller)
            with torch.cuda.stream(self.stream):
                graph.replay()
            caller.wait_stream(self.stream)

        return replay

    def _recover(self, rescue: GeneratorRescue) -> None:
        """After a failed recording: stop routing allocations to the pool, give the generators
        back, and check that eager work runs; if it does not, no chain records again here."""
        end_pool = getattr(torch._C, "_cuda_endAllocateToPool", None)
        if end_pool is not None:
            with contextlib.suppress(Exception):
                end_pool(self.device.index if self.device.index is not None else torch.cuda.current_device(), self.pool)
        if rescue.restore():
            self.release_all()  # earlier graphs follow the default generator's former state object
        try:
            torch.randn(1, device=self.device)
            torch.cuda.synchronize(self.device)
        except RuntimeError as error:
            self.broken = f"a failed chain recording left CUDA unusable for eager work ({first_line(error)})"
            raise CaptureBroken(
                f"{self.broken}. Turn chain capture off (-c recipes/speed/eager_chains.yaml) and report this with "
                f"your torch version ({torch.__version__})"
            ) from error

    def _destroy_all(self) -> None:
        torch.cuda.synchronize(self.device)
        for graph in self.graphs:
            with contextlib.suppress(RuntimeError):
                graph.reset()
        self.graphs.clear()
        self.pool = torch.cuda.graph_pool_handle()


_CUDA_STORES: dict[torch.device, CUDAGraphStore] = {}


def cuda_store(device: torch.device) -> CUDAGraphStore:
    """The process's :class:`CUDAGraphStore` of ``device`` (created on first use)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = torch.device("cuda", index)
    if key not in _CUDA_STORES:
        if not _CUDA_STORES:
            atexit.register(_release_every_store)
        _CUDA_STORES[key] = CUDAGraphStore(key)
    return _CUDA_STORES[key]


def _release_every_store() -> None:
    """At exit, destroy each device's graphs together (not one by one, as garbage collection would)."""
    for store in _CUDA_STORES.values():
        with contextlib.suppress(Exception):
            store.release_all()


# ------------------------------------------------------------------------------ CPU emulation
class ReplayEmulator:
    """The loose CPU stand-in: "replaying" runs the body again and copies its results into the
    outputs recorded at capture. Python numbers are read afresh at every replay, so it cannot
    show a stale replay; :class:`~lebm.samplers.capture.op_replay.OpReplayEmulator` can."""

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


class EmulatedStore(GraphStore):
    """A CPU recorder with the CUDA store's lifetime rules: an emulator's recordings, retired and
    destroyed all together; a destroyed recording refuses to replay (as a reset graph must never be)."""

    def __init__(self, emulator: ReplayEmulator | OpReplayEmulator) -> None:
        super().__init__()
        self.emulator = emulator
        self.alive: list[list[bool]] = []
        self.destroyed = 0

    def warm_up(self, body: ChainBody, runs: int) -> None:
        """The emulator's warm-up, its last run refusing host synchronisations as on a GPU."""
        self.emulator.warm_up(body, runs - 1)
        run_refusing_host_sync(body)

    def record(self, body: ChainBody, generators: Sequence[torch.Generator]) -> tuple[Callable[[], None], Any]:
        replay, outputs = self.emulator.record(body, generators)
        alive = [True]
        self.alive.append(alive)

        def guarded_replay() -> None:
            if not alive[0]:
                raise RuntimeError("replay of a destroyed graph")
            replay()

        return guarded_replay, outputs

    def _destroy_all(self) -> None:
        for alive in self.alive:
            alive[0] = False
        self.destroyed += len(self.alive)
        self.alive.clear()


_CPU_STORE: EmulatedStore | None = None


@contextlib.contextmanager
def emulate_on_cpu(strict: bool = True) -> Iterator[EmulatedStore]:
    """Within this context, chains on the CPU go through the capture machinery: a way to test on
    a CPU that a sampler or an energy behaves under capture (same numbers, same random streams, no
    stale replay) before a GPU run. ``strict`` (the default) replays the recorded operations with
    their Python numbers baked in, as a CUDA graph does
    (:class:`~lebm.samplers.capture.op_replay.OpReplayEmulator`); ``strict=False`` reruns the body
    (:class:`ReplayEmulator`). Yields the store, whose counters tests may read."""
    from lebm.samplers.capture.op_replay import OpReplayEmulator  # the CPU's tool only: loaded when asked for

    global _CPU_STORE
    previous = _CPU_STORE
    _CPU_STORE = EmulatedStore(OpReplayEmulator() if strict else ReplayEmulator())
    try:
        yield _CPU_STORE
    finally:
        _CPU_STORE = previous


def recorder_for(device: torch.device) -> GraphRecorder | None:
    """The recorder for chains on ``device``: the device's CUDA graph store, the emulator on the
    CPU inside :func:`emulate_on_cpu`, else None (eager)."""
    if device.type == "cuda":
        return cuda_store(device)
    if device.type == "cpu" and _CPU_STORE is not None:
        return _CPU_STORE
    return None


def capture_possible(device: torch.device) -> bool:
    """Whether a chain on ``device`` may be captured at all (cheap: checked before anything else)."""
    if device.type == "cuda":
        return not torch.cuda.is_current_stream_capturing()  # inside a user's own capture: eager
    return device.type == "cpu" and _CPU_STORE is not None
