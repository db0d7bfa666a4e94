"""Which training iterations a recording may replay: lebm's own audited iterations, and nothing else.

A recorded iteration replays kernels; the Python that launched them runs once per key, and whatever
it read is baked in. lebm vouches for its own methods' iterations (audited, and tested bit for bit
against the eager path) and for no one else's code, by three allow-lists:

- **the class** (:func:`unaudited_class`): the method's class is one that lebm marks with
  :func:`audited_iteration` (LatentEBM, MultiStageNCE, DualMCMC, JointHierarchicalEBM, DAMC), the
  very class and not a subclass of it: a user's subclass runs its iterations eagerly, its chains
  captured, with one line. A class that still states the withdrawn opt-in
  ``records_iterations = True`` gets a line saying so;
- **the code that runs** (:class:`CodeWatch`): while an iteration is recorded, every Python function
  that runs is noted; one whose module does not lie in lebm's installed folder or in one of the
  :data:`TRUSTED_PACKAGES` (torch, Lightning, the standard library ...) refuses the recording, and
  the line names it. So a user's net, sampler, energy or a lebm helper replaced by a user's function
  (before the fit) keeps the iterations eager;
- **where lebm's functions are bound** (:class:`Bindings`): the recording notes every binding of the
  lebm functions it ran (module-level names of lebm's modules, entries of lebm's class bodies) and
  how many entries each lebm class body on the way held; before every replay they are checked by
  identity, so a helper patched or a method rebound during the fit drops the recordings (the
  iteration records again, and a replacement of the user's is then refused by the watch).

Nothing here walks code to guess what it reads: a class is lebm's or not, a function ran or not.
"""

from __future__ import annotations

import functools
import gc
import operator
import os
import sys
import types
from collections.abc import Iterable
from itertools import repeat
from typing import Any, TypeVar

from lebm.recording.code_reads import installed_roots

__all__ = [
    "WITHDRAWN_OPT_IN",
    "Bindings",
    "CodeWatch",
    "audited_iteration",
    "is_audited",
    "unaudited_class",
]

#: The classes whose training iterations lebm has audited for recording (exactly these classes).
AUDITED: set[type] = set()
#: The class attribute by which earlier lebm versions let a user's class opt in; withdrawn.
WITHDRAWN_OPT_IN = "records_iterations"
#: Packages whose code may run inside a recorded iteration, besides the standard library: lebm's
#: own and the libraries its iterations call into. Any other module's function refuses a recording.
TRUSTED_PACKAGES = (
    "lebm",
    "torch",
    "lightning",
    "lightning_fabric",
    "pytorch_lightning",
    "lightning_utilities",
    "torchmetrics",
    "numpy",
    "typing_extensions",
)

T = TypeVar("T", bound=type)


def audited_iteration(kind: T) -> T:
    """Mark ``kind`` (one of lebm's method classes) as audited: its training iteration may be
    recorded and replayed (a class decorator, for lebm's own methods only)."""
    AUDITED.add(kind)
    return kind


def is_audited(kind: type) -> bool:
    """Whether recorded iterations may replay ``kind``'s training iteration."""
    return kind in AUDITED


def unaudited_class(kind: type) -> str | None:
    """Why a method of class ``kind`` runs its iterations eagerly (None: lebm audited it)."""
    stated = next((k for k in kind.__mro__ if WITHDRAWN_OPT_IN in vars(k)), None)
    if stated is not None and not is_audited(kind):
        return (
            f"{stated.__name__} states {WITHDRAWN_OPT_IN}, an opt-in lebm has withdrawn: recorded iterations replay "
            "lebm's own audited methods only, and a subclass's iterations run eagerly with their chains captured "
            "(as fast by the GPU records: docs/performance.md, 'Recorded iterations'); remove the line"
        )
    if is_audited(kind):
        return None
    audited = next((k for k in kind.__mro__[1:] if is_audited(k)), None)
    what = f"a subclass of lebm's {audited.__name__}" if audited is not None else "not one of lebm's own methods"
    return (
        f"{kind.__name__} is {what}, and recorded iterations replay lebm's own audited iterations only "
        "(its chains are still captured, the CUDA default)"
    )


# ------------------------------------------------------------------------------ trusted modules
def _trusted_roots() -> tuple[str, ...]:
    """The folders of :data:`TRUSTED_PACKAGES` as installed and the standard library's (``site-packages``
    left out: another package there is not trusted)."""
    return installed_roots(TRUSTED_PACKAGES)


def _site_packages(path: str) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in path.split(os.sep))


@functools.cache
def _trusted_file(file: str) -> bool:
    path = os.path.realpath(file)
    for root in _trusted_roots():
        if path.startswith(root):
            # the standard library's folder holds site-packages: only the trusted packages' own folders count there
            return not _site_packages(path[len(root) :]) or _site_packages(root)
    return False


def trusted_module(name: str | None) -> bool:
    """Whether the module named ``name`` is code a recorded iteration may run: a builtin module, or
    one whose file lies in a trusted package's folder or the standard library's (lebm's CPU
    emulation of a recording, ``lebm.testing.capture``, included)."""
    if not name:
        return False
    if name.startswith("namedtuple_"):  # the code collections.namedtuple generates (its __new__), by its template
        return True
    module = sys.modules.get(name)
    if module is None:
        return False
    file = getattr(module, "__file__", None)
    if file is None:  # a builtin or frozen module (importlib's own) is the standard library's
        return name in sys.builtin_module_names or getattr(module.__spec__, "origin", None) in ("built-in", "frozen")
    return _trusted_file(file)


def trusted_code(module: str | None, file: str) -> bool:
    """Whether a function whose globals are module ``module``'s and whose code was compiled from
    ``file`` may run inside a recorded iteration: both trusted (code made at run time, whose file
    reads ``<string>``, by its module alone: a dataclass's or a named tuple's methods)."""
    return trusted_module(module) and (file.startswith("<") or _trusted_file(file))


def _lebms(name: str | None) -> bool:
    return bool(name) and name.split(".")[0] == "lebm" and trusted_module(name)


# ------------------------------------------------------------------------- what a recording ran
class CodeWatch:
    """Within the block, every Python function that runs on this thread is noted (``sys.setprofile``,
    the previous profiler restored after): :attr:`foreign` names the first that is not trusted, by
    the module of its globals (:func:`trusted_module`) and by the file its code was compiled from
    (a lebm function given a user's ``__code__`` is the user's); :attr:`ran` maps the code of every
    trusted function that ran to its module's name; :attr:`c_calls` holds every C function called
    (a torch operation, a tensor's method), once per calling module, with that module's globals.
    The garbage collector does not run by itself within the block (its setting restored after), so
    no finalizer of garbage made elsewhere runs as if the block had run it."""

    def __init__(self, any_code: bool = False) -> None:
        self.any_code = any_code  # a captured chain's watch: the user's code runs there too, and is noted
        self.foreign: str | None = None
        self.ran: dict[types.CodeType, str] = {}
        self.c_calls: dict[tuple[int, Any], tuple[dict[str, Any] | None, Any, type | None]] = {}
        self._verdicts: dict[types.CodeType, bool] = {}
        self._previous: Any = None
        self._collecting = False

    def _profiler(self) -> Any:
        """The profile function: a closure over this watch's tables (it runs at every call, return
        and C call of the recording, so it reads nothing through ``self``)."""
        verdicts, ran, c_calls, any_code = self._verdicts, self.ran, self.c_calls, self.any_code
        instance_free = (types.ModuleType, type, type(None))

        def note(frame: types.FrameType, event: str, arg: Any) -> None:
            if event == "c_call":
                owner = getattr(arg, "__self__", None)
                if isinstance(owner, instance_free):
                    key: tuple[int, Any] = (id(frame.f_globals), id(arg))
                    if key not in c_calls:
                        c_calls[key] = (frame.f_globals, arg, None)
                else:  # a method of an object (a tensor's add_): by its class and name, the object not kept alive
                    key = (id(type(owner)), arg.__name__)
                    if key not in c_calls:
                        c_calls[key] = (None, arg.__name__, type(owner))
                return
            if event != "call":
                return
            code = frame.f_code
            if code in verdicts:
                return
            module = frame.f_globals.get("__name__")
            verdict = verdicts[code] = trusted_code(module, code.co_filename)
            if verdict or any_code:
                ran[code] = module
            if not verdict and self.foreign is None:
                self.foreign = f"{module}.{code.co_qualname}"

        return note

    def __enter__(self) -> CodeWatch:
        # No automatic garbage collection inside: a collection runs the finalizers (``__del__``,
        # weakref callbacks) of whatever garbage the process holds, code the watched block does not
        # run, and a user's finalizer would refuse the recording by chance (torch's graph capture
        # collects before it captures, for the same reason).
        self._collecting = gc.isenabled()
        gc.disable()
        self._previous = sys.getprofile()
        sys.setprofile(self._profiler())
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._previous)
        if self._collecting:
            gc.enable()

    def refusal(self) -> str | None:
        """Why the recording watched may not be replayed (None: it ran trusted code only)."""
        if self.foreign is None:
            return None
        return (
            f"its training iteration runs {self.foreign}, code that is not lebm's, torch's or Lightning's, which "
            "recorded iterations do not replay (its chains are still captured, the CUDA default)"
        )


# ----------------------------------------------------------------------------- where code is bound
def _function_of(value: Any) -> types.FunctionType | None:
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    elif isinstance(value, property):
        value = value.fget
    return value if isinstance(value, types.FunctionType) else None


def _resolved(code: types.CodeType, module_name: str) -> tuple[Any, str, Any] | None:
    """``(owner, name, function)``: where the function that ran ``code`` is bound by its qualified
    name (a module or a class; for a class method, the class body and the ``classmethod`` it
    holds), or None (a nested function, a wrapper, a name bound elsewhere)."""
    parts = code.co_qualname.split(".")
    if "<locals>" in parts or "<lambda>" in parts:
        return None
    owner: Any = sys.modules.get(module_name)
    for part in parts[:-1]:
        owner = getattr(owner, part, None)
    if isinstance(owner, type) and isinstance(vars(owner).get(parts[-1]), classmethod):
        function: Any = vars(owner)[parts[-1]]  # bound anew at every read: held as its class body holds it
        return (vars(owner), parts[-1], function) if function.__func__.__code__ is code else None
    function = getattr(owner, parts[-1], None) if owner is not None else None
    if not isinstance(function, types.FunctionType) or function.__code__ is not code:
        return None
    return owner, parts[-1], function


def _c_binding(namespace: dict[str, Any] | None, function: Any, kind: type | None) -> tuple[Any, str, Any] | None:
    """Where a C function (:attr:`CodeWatch.c_calls`) was looked up: ``(class, name, descriptor)``
    for a method of an object of class ``kind`` (a tensor's ``add_``), ``(module namespace, name,
    function)`` for a name of the calling module (``namespace``) or of a module it holds
    (``torch.tanh``, ``F.gelu``); None where that cannot be told (a builtin type's method)."""
    if kind is not None:
        if kind.__module__ == "builtins":
            return None  # a list's append, a dict's get: their types cannot be patched
        descriptor = getattr(kind, function, None)
        return (kind, function, descriptor) if descriptor is not None else None
    name = getattr(function, "__name__", None)
    if not isinstance(name, str) or namespace is None:
        return None
    if namespace.get(name) is function:
        return namespace, name, function
    for value in list(namespace.values()):
        if isinstance(value, types.ModuleType) and vars(value).get(name) is function:
            return vars(value), name, function
    return None


_CODE = operator.attrgetter("__code__")
_DEFAULTS = operator.attrgetter("__defaults__")
_KWDEFAULTS = operator.attrgetter("__kwdefaults__")
_MISSING = object()


class Bindings:
    """What the code a recording ran (:attr:`CodeWatch.ran`) is bound to, checked by identity before
    each replay (:meth:`unchanged`, a few C-level passes):

    - every function that ran, looked up again by its qualified name in its module or class
      (lebm's, torch's, Lightning's), with its ``__code__`` and default arguments: a function
      replaced or rebound, or given other code or defaults, is seen;
    - every C function called (``c_calls``: a torch operation, a tensor's method), looked up again
      where the calling module found it (:func:`_c_binding`): ``F.gelu`` or ``Tensor.add_``
      replaced is seen;
    - every module-level name of the lebm modules whose code ran, whatever it holds (a helper
      imported there, a constant such as a bound the iteration reads);
    - the number of entries of each lebm class body on ``classes``' MROs (a method added to a
      subclass's body hides the one that ran), and the names each held."""

    def __init__(
        self,
        ran: dict[types.CodeType, str],
        classes: Iterable[type],
        c_calls: Iterable[tuple[dict[str, Any] | None, Any, type | None]] = (),
    ) -> None:
        resolved = [where for code, module in ran.items() if (where := _resolved(code, module)) is not None]
        found = [where for where in resolved if not isinstance(where[2], classmethod)]
        self.class_methods = [where for where in resolved if isinstance(where[2], classmethod)]
        c_bound = [where for call in c_calls if (where := _c_binding(*call))]
        found += [where for where in c_bound if isinstance(where[0], type)]
        found = list({(id(owner), name): (owner, name, function) for owner, name, function in found}.values())
        self.owners = [owner for owner, _, _ in found]
        self.names = [name for _, name, _ in found]
        self.functions = [function for _, _, function in found]
        python = [function for function in self.functions if isinstance(function, types.FunctionType)]
        self.python = python
        self.codes = list(map(_CODE, python))
        self.defaults = list(map(_DEFAULTS, python))
        self.kwdefaults = list(map(_KWDEFAULTS, python))
        namespaces = [vars(sys.modules[m]) for m in dict.fromkeys(ran.values()) if _lebms(m) and m in sys.modules]
        self.namespaces = [(namespace, len(namespace)) for namespace in namespaces]
        self.in_namespace = [namespace for namespace in namespaces for _ in namespace]
        self.globals = [name for namespace in namespaces for name in namespace]
        self.values = [value for namespace in namespaces for value in namespace.values()]
        for namespace, name, function in c_bound:
            if not isinstance(namespace, type):  # a module's namespace: a C function bound there
                self.in_namespace.append(namespace)
                self.globals.append(name)
                self.values.append(function)
        self.sizes: list[tuple[Any, int, frozenset[str]]] = []
        for kind in classes:
            for owner in kind.__mro__:
                if _lebms(owner.__module__):
                    body = vars(owner)
                    self.sizes.append((body, len(body), frozenset(body)))

    def unchanged(self) -> bool:
        """Whether every binding, code object, default and class body is still the one recorded."""
        is_ = operator.is_
        return (
            all(map(is_, map(getattr, self.owners, self.names, repeat(None)), self.functions))
            and all(map(is_, map(_CODE, self.python), self.codes))
            and all(map(is_, map(_DEFAULTS, self.python), self.defaults))
            and all(map(is_, map(_KWDEFAULTS, self.python), self.kwdefaults))
            and all(len(namespace) == size for namespace, size in self.namespaces)
            and all(map(is_, map(dict.get, self.in_namespace, self.globals, repeat(_MISSING)), self.values))
            and all(len(body) == size for body, size, _ in self.sizes)
            and all(body.get(name) is held for body, name, held in self.class_methods)
        )

    def changed(self) -> str | None:
        """The first binding, code object, default or class body that changed, named (None: none)."""
        for owner, name, function in zip(self.owners, self.names, self.functions, strict=True):
            if getattr(owner, name, None) is not function:
                return f"{getattr(owner, '__qualname__', getattr(owner, '__name__', '?'))}.{name}"
        for function, code, defaults, kwdefaults in zip(
            self.python, self.codes, self.defaults, self.kwdefaults, strict=True
        ):
            if function.__code__ is not code or function.__defaults__ is not defaults:
                return function.__qualname__
            if function.__kwdefaults__ is not kwdefaults:
                return function.__qualname__
        for namespace, size in self.namespaces:
            if len(namespace) != size:
                return f"the module {namespace.get('__name__', '?')} (a name added or removed)"
        for namespace, name, value in zip(self.in_namespace, self.globals, self.values, strict=True):
            if namespace.get(name, _MISSING) is not value:
                return f"{namespace.get('__name__', '?')}.{name}"
        for body, size, names in self.sizes:
            if len(body) != size:
                added = sorted(set(body) - names) or ["an entry removed"]
                return f"{body.get('__qualname__', '?')}.{added[0]}"
        for body, name, held in self.class_methods:
            if body.get(name) is not held:
                return f"{body.get('__qualname__', '?')}.{name}"
        return None
