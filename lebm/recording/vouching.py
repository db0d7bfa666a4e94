"""Which training iterations a recording may replay: code lebm vouches for, and what it reads outside the method.

A recorded iteration replays kernels; the Python that launched them runs once per key. lebm's own
methods' ``training_iteration`` and the hooks it calls are audited and tested bit for bit, so they
are **vouched for**: recorded by default. Code a user writes is not, until its class opts in:

- :func:`unvouched_code` names the first function an iteration reaches (``training_iteration`` and
  every method of the class it calls, found by name through the code objects:
  :func:`reached_functions`) whose class is not lebm's and has not stated
  ``records_iterations = True`` in its own body (:data:`OPT_IN`), or a function held on the
  instance under such a name. That iteration runs eagerly with one line naming it.
- :func:`globals_read` describes what the user's code in an iteration reads outside the method (the
  opted-in methods, functions held on the instance, and the methods of the user's module classes in
  its tree, such as a ``forward``): module-level names, closure cells, default arguments and what
  they reach, by :mod:`lebm.recording.code_reads`'s rules: a plain value (None, a bool, a
  number, a string, a tuple of them) goes into the key, anything else is a marker
  (:class:`~lebm.recording.code_reads.NotPlain`) that the recording refuses (a list, a dict,
  a tensor, an object: a replay would not read it again).
- :func:`class_description` describes the method's class and its attributes along the MRO, so a
  class attribute changed mid-run or ``module.__class__`` switched makes a new key.

lebm's own code (and torch's, Lightning's, NumPy's and the standard library's, known by where their
files lie) is not walked for globals: it is vouched for as a whole.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from lebm.recording.code_reads import (
    PLAIN,
    NotPlain,
    code_objects,
    code_reads,
    first_not_plain,
    function_of,
    global_reads,
    is_trusted,
    is_trusted_module,
)

__all__ = ["NotPlain", "first_not_plain", "globals_read", "unvouched_code", "class_description", "reached_functions"]

#: The class attribute by which a class of the user's vouches for the iteration code it defines.
OPT_IN = "records_iterations"
#: Where a recorded iteration starts.
ITERATION = "training_iteration"
#: Packages whose methods are vouched for: lebm's own (its test helpers are not lebm's methods).
VOUCHED_PACKAGES = ("lebm",)


def package_of(module_name: str | None) -> str:
    """The top-level package of a module's name (``""`` for None)."""
    return (module_name or "").split(".")[0]


def is_lebms(module_name: str | None) -> bool:
    """Whether a module is lebm's own, where lebm is installed (not its testing helpers)."""
    name = module_name or ""
    return package_of(name) in VOUCHED_PACKAGES and not name.startswith("lebm.testing") and is_trusted_module(name)


def is_library(module_name: str | None) -> bool:
    """Whether a module is trusted code other than lebm's (torch's, Lightning's, the standard library's)."""
    return package_of(module_name) not in VOUCHED_PACKAGES and is_trusted_module(module_name)


def attribute_names(code: types.CodeType) -> set[str]:
    """Every name ``code`` (nested code included) uses: the candidates for ``self.NAME`` calls."""
    return {name for inner in code_objects(code) for name in inner.co_names}


# ------------------------------------------------------------------------------ vouch by code
def owner_of(kind: type, name: str) -> type | None:
    """The class of ``kind``'s MRO whose body defines ``name`` (None: no class does)."""
    return next((k for k in kind.__mro__ if name in vars(k)), None)


def reached_functions(kind: type) -> tuple[dict[str, types.FunctionType], frozenset[str]]:
    """The methods of ``kind`` that its ``training_iteration`` may call, found by name: every
    function attribute of the class named in the code reached, from ``training_iteration`` on,
    through the module-level functions that code calls too (lebm's ``step_directly`` calls
    ``method.backward``). An over-approximation: a name is enough. Lightning's and torch's
    methods are reached but not walked. Returns ``(reached, names)``, ``names`` every name the
    walked code uses (a function later set on the class under one of them changes what is reached)."""
    reached: dict[str, types.FunctionType] = {}
    names: set[str] = {ITERATION}
    walked: set[types.CodeType] = set()
    pending: list[types.FunctionType] = []

    def reach(name: str) -> None:
        owner = owner_of(kind, name)
        function = function_of(vars(owner)[name]) if owner is not None else None
        if function is not None and name not in reached:
            reached[name] = function
            pending.append(function)

    reach(ITERATION)
    while pending:
        function = pending.pop()
        if function.__code__ in walked or is_library(function.__module__):
            continue  # Lightning's own methods (log, optimizers ...) call no hook of the user's
        walked.add(function.__code__)
        for name in attribute_names(function.__code__):
            names.add(name)
            reach(name)
        for name, _, _ in global_reads(function.__code__):
            called = function_of(function.__globals__.get(name))
            if called is not None:
                pending.append(called)
    return reached, frozenset(names)


@dataclass
class _Walk:
    """A class's walk (:func:`reached_functions`), the fingerprint it was made under, and the
    verdict of :func:`unvouched_code` on the class's code (None until asked for)."""

    fingerprint: tuple[Hashable, ...]
    reached: dict[str, types.FunctionType]
    names: frozenset[str]  # the names the walked code uses that the class resolved then
    verdict: tuple[str | None] | None = None


_walks: dict[type, _Walk] = {}


def class_walk(kind: type) -> _Walk:
    """:func:`reached_functions` of ``kind``, cached per class and walked again when the class
    changed where the walk looked: a function set on a class of its MRO under a name the walked code
    uses and the class resolved, an attribute added to a class of its MRO, or an opt-in stated or
    taken back (:func:`_fingerprint`)."""
    cached = _walks.get(kind)
    if cached is not None and cached.fingerprint == _fingerprint(kind, cached.names):
        return cached
    reached, used = reached_functions(kind)
    names = frozenset(name for name in used if owner_of(kind, name) is not None)
    walk = _Walk(_fingerprint(kind, names), reached, names)
    _walks[kind] = walk
    return walk


def reached_now(kind: type) -> dict[str, types.FunctionType]:
    """The functions :func:`reached_functions` finds for ``kind`` now (cached: :func:`class_walk`)."""
    return class_walk(kind).reached


def _fingerprint(kind: type, names: frozenset[str]) -> tuple[Hashable, ...]:
    """What the walk of ``kind`` depends on: what each name found on the class then resolves to
    now, how many attributes each class of the MRO holds (a name added anywhere), and the opt-ins."""
    found = tuple(id(function_of(getattr(kind, name, None))) for name in names)
    return (*found, *(len(vars(k)) for k in kind.__mro__), *(vars(k).get(OPT_IN) is True for k in kind.__mro__))


def vouched(owner: type, function: types.FunctionType, kind: type | None = None) -> bool:
    """Whether ``function``, found on ``owner``'s body, is vouched for in a ``kind`` (``owner``
    itself by default): lebm's own code on lebm's own class (Lightning's and torch's methods too),
    or code that ``owner`` or a class of ``kind``'s MRO below it opts in to in its own body (a
    subclass that overrides the function again does not inherit that opt-in: it is the owner then)."""
    kind = owner if kind is None else kind
    below = kind.__mro__[: kind.__mro__.index(owner) + 1]
    if any(vars(k).get(OPT_IN) is True for k in below):
        return True
    library = is_library(owner.__module__)
    return (is_lebms(owner.__module__) or library) and package_of(function.__module__) == package_of(owner.__module__)


def unvouched_code(method: Any) -> str | None:
    """Why ``method``'s iteration runs code lebm does not vouch for (None: every function it
    reaches is vouched for): the first override of the iteration or a hook it calls on a class
    that did not opt in, or such a function held on the instance."""
    kind = type(method)
    walk = class_walk(kind)
    held = next((name for name in walk.reached if callable(vars(method).get(name))), None)
    if held is not None:
        return (
            f"its {held} is a function held on the instance, which lebm does not vouch for: define it in a subclass "
            f"that states {OPT_IN} = True (docs/extending.md, 'Recorded iterations of your own method')"
        )
    if walk.verdict is None:
        walk.verdict = (unvouched_override(kind, walk.reached),)
    return walk.verdict[0]


def unvouched_override(kind: type, reached: dict[str, types.FunctionType]) -> str | None:
    """The first of the ``reached`` functions that ``kind``'s class body or one of its bases
    overrides without vouching for it (:func:`vouched`), as the line that names it; None: none."""
    for name, function in reached.items():
        owner = owner_of(kind, name)
        if owner is not None and not vouched(owner, function, kind):
            return (
                f"{owner.__name__}.{name} overrides lebm's training iteration or a hook it calls, and "
                f"{owner.__name__} has not opted in: state {OPT_IN} = True in its class body once it meets the "
                "contract in docs/extending.md, 'Recorded iterations of your own method'"
            )
    return None


# --------------------------------------------------------------- what the code reads outside
def globals_read(method: Any, described: Any = None) -> tuple[Hashable, ...]:
    """What the user's code in ``method``'s iteration may read outside the method
    (:func:`lebm.recording.code_reads.code_reads`): every function of the method's own user
    classes (the class part holds their attributes), the functions held on the instance (its
    attribute parts hold their closure cells and defaults), and every function and class attribute
    of the user's classes among the modules and objects the key described (``described``: a
    ``forward``, a ``__call__``, a held helper's methods). Returns ``((where, description), ...)``."""
    kind = type(method)
    held = [f for value in vars(method).values() if (f := function_of(value)) is not None and not is_trusted(f)]
    met = [] if described is None else [*described.modules.values(), *described.objects.values()]
    met = met or list(method.modules())
    classes = [k for k in dict.fromkeys(type(value) for value in met) if k is not kind and not is_trusted(k)]
    return code_reads((), classes, held, keyed_classes=[kind])  # every function of kind's user classes


def class_description(kind: type, describe: Callable[[Any, str], Hashable]) -> Hashable:
    """``kind`` and its class attributes along its MRO (torch's, Lightning's and ``object``'s
    classes left out): functions by identity, everything else by ``describe(value, where)``."""
    classes = []
    for owner in kind.__mro__:
        if is_library(owner.__module__) or owner is object:
            continue
        attributes = tuple(
            (name, _class_attribute(value, f"{owner.__name__}.{name}", describe))
            for name, value in vars(owner).items()
            if not (name.startswith("__") and name.endswith("__"))
        )
        classes.append((owner, attributes))
    return (kind, tuple(classes))


def _class_attribute(value: Any, where: str, describe: Callable[[Any, str], Hashable]) -> Hashable:
    function = function_of(value)
    if function is not None:
        return ("function", function)
    if isinstance(value, (types.ModuleType, type, types.BuiltinFunctionType, types.MemberDescriptorType)):
        return ("identity", id(value))
    if isinstance(value, types.GetSetDescriptorType) or hasattr(value, "__get__") and not isinstance(value, PLAIN):
        return ("descriptor", id(value))
    return describe(value, where)
