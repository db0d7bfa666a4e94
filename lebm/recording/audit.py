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
import os
import sys
import types
from collections.abc import Iterable
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


def _lebms(name: str | None) -> bool:
    return bool(name) and name.split(".")[0] == "lebm" and trusted_module(name)


# ------------------------------------------------------------------------- what a recording ran
class CodeWatch:
    """Within the block, every Python function that runs on this thread is noted (``sys.setprofile``,
    the previous profiler restored after): :attr:`foreign` names the first whose module is not
    trusted (:func:`trusted_module`, by the module of the function's globals), :attr:`lebm_code`
    holds the code objects of lebm's functions that ran."""

    def __init__(self) -> None:
        self.foreign: str | None = None
        self.lebm_code: set[types.CodeType] = set()
        self._verdicts: dict[types.CodeType, bool] = {}
        self._previous: Any = None

    def _note(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        verdict = self._verdicts.get(code)
        if verdict is None:
            module = frame.f_globals.get("__name__")
            verdict = self._verdicts[code] = trusted_module(module)
            if verdict and _lebms(module):
                self.lebm_code.add(code)
            elif not verdict and self.foreign is None:
                self.foreign = f"{module}.{code.co_qualname}"

    def __enter__(self) -> CodeWatch:
        self._previous = sys.getprofile()
        sys.setprofile(self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._previous)

    def refusal(self) -> str | None:
        """Why the recording watched may not be replayed (None: it ran trusted code only)."""
        if self.foreign is None:
            return None
        return (
            f"its training iteration runs {self.foreign}, code that is not lebm's, torch's or Lightning's, which "
            "recorded iterations do not replay (its chains are still captured, the CUDA default)"
        )


# ----------------------------------------------------------------------------- where lebm binds
def _function_of(value: Any) -> types.FunctionType | None:
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    elif isinstance(value, property):
        value = value.fget
    return value if isinstance(value, types.FunctionType) else None


class Bindings:
    """Where the lebm functions a recording ran (``code``) are bound, checked by identity before
    each replay (:meth:`unchanged`): every module-level name of lebm's loaded modules and every
    entry of a lebm class body (those of ``classes``' MROs too) that held one of them, and the
    number of entries of each lebm class body of ``classes``' MROs (a method added to a subclass's
    body hides the one that ran)."""

    def __init__(self, code: Iterable[types.CodeType], classes: Iterable[type]) -> None:
        ran = set(code)
        namespaces: list[dict[str, Any] | types.MappingProxyType[str, Any]] = []
        lebm_classes: dict[int, type] = {}
        for name, module in list(sys.modules.items()):
            if module is None or not _lebms(name):
                continue
            namespace = vars(module)
            namespaces.append(namespace)
            for value in list(namespace.values()):
                if isinstance(value, type) and _lebms(value.__module__):
                    lebm_classes[id(value)] = value
        for kind in classes:
            for owner in kind.__mro__:
                if _lebms(owner.__module__):
                    lebm_classes[id(owner)] = owner
        namespaces.extend(vars(kind) for kind in lebm_classes.values())
        self.bound: list[tuple[Any, str, Any]] = [
            (namespace, name, value)
            for namespace in namespaces
            for name, value in list(namespace.items())
            if (function := _function_of(value)) is not None and function.__code__ in ran
        ]
        self.sizes: list[tuple[Any, int, frozenset[str]]] = []
        for kind in classes:
            for owner in kind.__mro__:
                if _lebms(owner.__module__):
                    body = vars(owner)
                    self.sizes.append((body, len(body), frozenset(body)))

    def unchanged(self) -> bool:
        """Whether every binding still holds the same object and every class body its size."""
        return all(namespace.get(name) is value for namespace, name, value in self.bound) and all(
            len(body) == size for body, size, _ in self.sizes
        )

    def changed(self) -> str | None:
        """The first binding or class body that changed, named (None: none)."""
        for namespace, name, value in self.bound:
            if namespace.get(name) is not value:
                owner = namespace.get("__qualname__") or namespace.get("__name__", "?")
                return f"{owner}.{name}"
        for body, size, names in self.sizes:
            if len(body) != size:
                added = sorted(set(body) - names) or ["an entry removed"]
                return f"{body.get('__qualname__', '?')}.{added[0]}"
        return None
