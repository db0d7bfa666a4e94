"""Recording chain bodies as CUDA graphs: one :class:`GraphStore` per device.

**Graph lifetime.** Every chain graph of a process on one device is recorded on one stream that
lebm creates for itself (outside torch's stream pool, so no other library captures on it) and
allocates from one memory pool. No graph is destroyed while another graph recorded on that stream
is alive: from torch 2.11 on, destroying a graph frees the cuBLAS workspace of the stream it was
recorded on, which every other graph recorded there still uses. So a graph a sampler no longer
needs is only *retired*; when :data:`RETIRED_LIMIT` graphs are retired,
:meth:`GraphStore.release_all` destroys every graph of the device at once and starts a new
*generation*: cached chains of older generations record again at their next call. One pool for
every graph keeps the memory captured chains hold close to one chain's working memory plus each
graph's outputs (graphs never replay concurrently, and every replay's outputs are copied out at
once, so sharing the pool is safe).

On the CPU chains run eagerly, unless a test installs a store of its own (:func:`set_cpu_store`;
``lebm.testing.capture.emulate_on_cpu`` installs one that emulates the recording).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from lebm.recording.host_sync import HostSynchronisation, RefuseHostSync
from lebm.recording.torch_internals import end_allocating_to_pool

ChainBody = Callable[[], tuple[Tensor, dict[str, Tensor]]]
"""The chain as a function of its static buffers: ``() -> (final states, diagnostics)``."""

#: Retired graphs a device keeps before every graph of the device is destroyed at once.
RETIRED_LIMIT = 16
#: torch versions that follow a non-default generator in a graph only when it is registered
#: (``CUDAGraph.register_generator_state``, from 2.4: the floor of ``setup.cfg``'s torch range);
#: from 2.14 that call is a deprecated no-op (generators are registered on their first draw).
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


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


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


def restore_generators(device: torch.device, saved: list[tuple[torch.Generator, Any, Tensor]]) -> bool:
    """After a failed recording, put back each generator's ``(generator, cloned state object,
    values)``: on torch 2.11-2.13 a recording that fails before its epilogue leaves a generator
    flagged as capturing, and every later draw from it raises. Where a generator still refuses to
    draw, it gets a fresh state object (``graphsafe_set_state``). Returns whether the device's
    *default* generator (first in ``saved``) got one: graphs recorded earlier follow the old one."""
    replaced_default = False
    for position, (generator, clone, state) in enumerate(saved):
        try:
            generator.set_state(state)
            torch.empty(1, device=device).normal_(generator=generator)  # the probe's draw is undone next
            generator.set_state(state)
            continue
        except RuntimeError:
            pass
        if clone is not None and hasattr(generator, "graphsafe_set_state"):
            with contextlib.suppress(RuntimeError):
                generator.graphsafe_set_state(clone)
                replaced_default = replaced_default or position == 0
        with contextlib.suppress(RuntimeError):
            generator.set_state(state)
    return replaced_default


class GraphStore:
    """Every chain graph of this process on one device, retired one by one and destroyed all
    together (see the module docstring). On a CUDA device: one dedicated capture stream, one memory
    pool; warm-up, capture and replays run on that stream, each ordered after the caller's stream
    and before it goes on. Capture mode is ``thread_local`` (a DataLoader's pin-memory thread may
    allocate host memory meanwhile)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.generation = 0
        self.retired = 0
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
        self.broken: str | None = None  # set when a failed recording could not be undone

    #: Whether :meth:`record` also runs the body (the CPU emulation does; a CUDA capture only records).
    recording_runs_body = False

    def run_on_capture_stream(self, work: Callable[[], Any]) -> Any:
        """``work()`` eagerly on the capture stream, ordered after the caller's work and before it
        goes on: the warm-up of a body that will be recorded there (a whole training iteration's
        autograd and optimiser state must be made on the stream it is captured on)."""
        caller = torch.cuda.current_stream(self.device)
        with torch.cuda.device(self.device):
            self.stream.wait_stream(caller)
            try:
                with torch.cuda.stream(self.stream):
                    return work()
            finally:
                caller.wait_stream(self.stream)

    @functools.cached_property
    def stream(self) -> torch.cuda.Stream:
        """The device's capture stream (:func:`dedicated_stream`), made on first use."""
        return dedicated_stream(self.device)

    def retire(self) -> None:
        """Note that one recorded graph will not be replayed again."""
        self.retired += 1

    def release_due(self) -> bool:
        """Whether enough graphs are retired for :meth:`release_all`."""
        return self.retired >= RETIRED_LIMIT

    def release_all(self) -> None:
        """Destroy every graph recorded here, at once; a new generation starts."""
        self._destroy_all()
        self.generation += 1
        self.retired = 0

    def _destroy_all(self) -> None:
        torch.cuda.synchronize(self.device)
        for graph in self.graphs:
            with contextlib.suppress(RuntimeError):
                graph.reset()
        self.graphs.clear()
        self.pool = torch.cuda.graph_pool_handle()

    def warm_up(self, body: ChainBody, runs: int) -> None:
        """``runs`` eager runs on the capture stream, the last refusing host synchronisations
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
        """Record ``body`` (following ``generators``) on the capture stream into the shared pool;
        return ``(replay, outputs)``: ``replay()`` recomputes ``outputs`` in place from the static
        buffers ``body`` reads. Neither synchronises the device nor empties the allocator's cache
        (``torch.cuda.graph`` does both at every capture)."""
        if self.broken:
            raise CaptureRejected(self.broken)
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        touched = [torch.cuda.default_generators[index], *generators]
        saved = [(g, g.clone_state() if hasattr(g, "clone_state") else None, g.get_state()) for g in touched]
        caller = torch.cuda.current_stream(self.device)
        steps: list[Callable[[], None]] = []  # graph replays, and the host gaps between them
        capturing: list[torch.cuda.CUDAGraph] = []

        def begin() -> None:
            graph = torch.cuda.CUDAGraph()
            register = getattr(graph, "register_generator_state", None)
            if register is not None and torch_version() < _GENERATOR_REGISTRATION_UNTIL:
                for generator in generators:
                    register(generator)
            self.graphs.append(graph)  # destroyed only with every other graph of the device
            capturing.append(graph)
            graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")

        def end() -> None:
            graph = capturing.pop()
            graph.capture_end()
            steps.append(graph.replay)

        def gap(work: Callable[[], None]) -> None:  # close this graph, keep the work, record on in a new one
            end()
            steps.append(work)
            begin()

        with torch.cuda.device(self.device):
            self.stream.wait_stream(caller)
            try:
                with torch.cuda.stream(self.stream), host_gaps(gap):
                    begin()
                    try:
                        outputs = body()
                    except BaseException:
                        with contextlib.suppress(Exception):
                            capturing.pop().capture_end()
                        raise
                    end()
            except BaseException:
                self.retire()
                self._recover(saved, index)
                raise
            finally:
                caller.wait_stream(self.stream)

        def replay() -> None:  # after the caller's work, before it goes on: replays never run concurrently
            caller = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(caller)
            with torch.cuda.stream(self.stream):
                for step in steps:
                    step()
            caller.wait_stream(self.stream)

        return replay, outputs

    def _recover(self, saved: list[tuple[torch.Generator, Any, Tensor]], index: int) -> None:
        """After a failed recording: stop routing allocations to the pool, give the generators
        back, and check that eager work runs; if it does not, no chain records again here."""
        with contextlib.suppress(Exception):
            end_allocating_to_pool()(index, self.pool)
        if restore_generators(self.device, saved):
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


_CUDA_STORES: dict[torch.device, GraphStore] = {}
_cpu_store: GraphStore | None = None


def cuda_store(device: torch.device) -> GraphStore:
    """The process's :class:`GraphStore` of a CUDA ``device`` (created on first use)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = torch.device("cuda", index)
    if key not in _CUDA_STORES:
        if not _CUDA_STORES:
            atexit.register(_release_every_store)
        _CUDA_STORES[key] = GraphStore(key)
    return _CUDA_STORES[key]


def _release_every_store() -> None:
    """At exit, destroy each device's graphs together (not one by one, as garbage collection would)."""
    for store in _CUDA_STORES.values():
        with contextlib.suppress(Exception):
            store.release_all()


def set_cpu_store(store: GraphStore | None) -> GraphStore | None:
    """Record chains on the CPU in ``store`` from now on (None: run them eagerly, the default);
    returns the previous one. For tests: a CPU cannot record a CUDA graph, but a store that
    emulates one checks everything around it (``lebm.testing.capture``)."""
    global _cpu_store
    previous, _cpu_store = _cpu_store, store
    return previous


def recorder_for(device: torch.device) -> GraphStore | None:
    """The store for chains on ``device``: the device's CUDA store, the CPU store a test
    installed, else None (eager)."""
    if device.type == "cuda":
        return cuda_store(device)
    return _cpu_store if device.type == "cpu" else None


_inline = threading.local()


@contextlib.contextmanager
def host_gaps(handler: Callable[[Callable[[], None]], None]) -> Iterator[None]:
    """Within the block (this thread), :func:`outside_the_recording` hands its work to ``handler``:
    the recording leaves it out and runs it at every replay, in its place."""
    previous = getattr(_inline, "gap", None)
    _inline.gap = handler
    try:
        yield
    finally:
        _inline.gap = previous


def outside_the_recording(work: Callable[[], None]) -> None:
    """Run ``work`` (host work on live tensors, such as a gradient all-reduce across processes) now;
    inside a recording, leave it out of the recording, which then runs it at every replay between
    the operations recorded before it and those recorded after it (a CUDA recording closes its graph
    there and records the rest in a new one)."""
    handler = getattr(_inline, "gap", None)
    if handler is None:
        work()
    else:
        handler(work)


@contextlib.contextmanager
def recording_inline() -> Iterator[None]:
    """Within this block (this thread), a chain is part of a larger recording (a whole training
    iteration): it runs its body inline, where the enclosing recording sees it, instead of
    capturing or replaying a graph of its own; a host check it would make (a CPU chain's finiteness
    warning) is skipped, as a recording cannot read values."""
    depth = getattr(_inline, "depth", 0)
    _inline.depth = depth + 1
    try:
        yield
    finally:
        _inline.depth = depth


class NotOptedIn(RuntimeError):
    """A sampler that did not opt in to capture ran inside the recording of a whole iteration."""


@contextlib.contextmanager
def recording_an_iteration() -> Iterator[None]:
    """Within this block (this thread) a whole training iteration is being recorded (not warmed up):
    a sampler that did not opt in to capture refuses to be part of it (:func:`refuse_unless_opted_in`).
    Chain initializers (a start drawn inside the iteration) are recorded inline; the recording's
    checks of Python state and host random streams cover them."""
    previous = getattr(_inline, "iteration", False)
    _inline.iteration = True
    try:
        yield
    finally:
        _inline.iteration = previous


def refuse_unless_opted_in(part: Any) -> None:
    """Inside :func:`recording_an_iteration`, raise :class:`NotOptedIn` for ``part`` (a sampler) that
    did not opt in to capture (``opted_in()``): its Python would be baked into the recording, and
    ``docs/extending.md`` promises that such a sampler runs eagerly."""
    if getattr(_inline, "iteration", False) and not part.opted_in():
        raise NotOptedIn(
            f"{type(part).__name__} did not opt in to capture (its class states no capturable = True, or its "
            "cuda_graph is False), so a recording would bake in its Python (docs/extending.md, 'Captured chains')"
        )


def inside_recording() -> bool:
    """Whether this thread is recording a larger body (:func:`recording_inline`)."""
    return getattr(_inline, "depth", 0) > 0


def capture_possible(device: torch.device) -> bool:
    """Whether a chain on ``device`` may be captured at all (cheap: checked before anything else)."""
    if inside_recording():
        return False  # part of a whole iteration's recording: inline
    if device.type == "cuda":
        return not torch.cuda.is_current_stream_capturing()  # inside a user's own capture: eager
    return device.type == "cpu" and _cpu_store is not None
