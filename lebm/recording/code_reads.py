"""What a user's code run inside a recording reads beyond the objects a key describes.

A recording runs the Python once; a replay repeats its kernels with every value that Python read
baked in. A key describes the objects a chain or an iteration holds (its modules, sampler, method);
this module describes what *user code* reaches besides them, the way ``torch.compile`` guards on the
globals and closures its traced code reads:

- the module-level names its code objects load (nested code, lambdas and comprehensions included),
  and an attribute read through the user's modules (``pkg.settings.BETA``);
- its closure cells and its default arguments;
- the functions (a library decorator's wrapped one too), ``functools.partial`` objects, functions
  in containers (a dispatch table) and classes reached through those, walked alike;
- every function of the user's classes handed in (the modules and objects a key described: a
  ``forward``, a ``__call__``, a method reached by ``getattr``), and their class attributes.

**The rules** (:func:`describe_value`) for a value reached:

- ``None``, a bool, a number, a string, bytes, an enum member, or a tuple of them: by value (a
  change makes a new key);
- a user function: identity, then walked; a ``functools.partial``: its function and arguments;
- a user class: identity, its functions walked and its other class attributes by these rules (an
  enum class: identity, its members being constants);
- trusted code (a function, class, builtin or module of lebm, of the standard library or of an
  installed library, known by where its file lies, not by its module's name): identity; the user's
  code is what runs from its own folder (a script, a repository, an editable install);
- anything else (a list, a dict, a tensor, an object, an object's bound method) and any assignment to
  a module-level name: :class:`NotPlain`, which the caller refuses (a replay would not read it again);
  a chain's key describes the values instead by its own rules (a tensor by address, a list item by
  item: :func:`code_reads`'s ``describe``), and refuses only the assignments.

Trusted code is not walked: lebm's own is audited, the libraries' do not read a user's globals.
"""

from __future__ import annotations

import dis
import enum
import functools
import importlib.util
import os
import sys
import sysconfig
import types
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

#: Packages whose code is trusted as a whole, where they are installed (see :func:`is_trusted_module`).
TRUSTED_PACKAGES = ("lebm", "torch", "lightning", "lightning_fabric", "pytorch_lightning", "torchmetrics", "numpy")
#: Values described by value.
PLAIN = (type(None), bool, int, float, complex, str, bytes, enum.Enum)
#: Modules and C functions: described by identity (an object's bound method or a callable object is not).
_CODE_WITHOUT_STATE = (
    types.ModuleType,
    types.BuiltinFunctionType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


@dataclass(frozen=True)
class NotPlain:
    """A value user code reads that a key cannot hold by value: the recording refuses it."""

    where: str
    kind: str


# --------------------------------------------------------------------------------- trusted code
@functools.cache
def installed_roots(packages: tuple[str, ...]) -> tuple[str, ...]:
    """The folders of ``packages`` as installed (found without importing them; a one-file module's
    own file, not its folder) and the standard library's, each folder ending with a separator."""
    roots = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            origin = os.path.realpath(spec.origin)
            roots.append(origin if spec.submodule_search_locations is None else os.path.dirname(origin) + os.sep)
    for key in ("stdlib", "platstdlib"):
        roots.append(os.path.realpath(sysconfig.get_paths()[key]) + os.sep)
    return tuple(dict.fromkeys(roots))


def _trusted_roots() -> tuple[str, ...]:
    """The folders of :data:`TRUSTED_PACKAGES` and the standard library's."""
    return installed_roots(TRUSTED_PACKAGES)


@functools.cache
def _is_trusted_file(file: str) -> bool:
    """Whether code compiled from ``file`` is trusted: it lies in an installed package's folder
    (``site-packages``: a library, whose module state is its own), the standard library's, or
    lebm's (an editable install's included)."""
    path = os.path.realpath(file)
    if any(part in ("site-packages", "dist-packages") for part in path.split(os.sep)):
        return True
    return any(path.startswith(root) for root in _trusted_roots())


def is_trusted_module(name: str | None) -> bool:
    """Whether the module named ``name`` is trusted code: a builtin module, or one whose file lies in
    the standard library's folder or in a trusted package's (a user's package named ``code`` or
    ``profile`` is the user's, whatever the standard library holds)."""
    if not name:
        return False
    module = sys.modules.get(name)
    if module is None:
        return False
    file = getattr(module, "__file__", None)
    if file is None:
        return name in sys.builtin_module_names
    return _is_trusted_file(file)


def is_trusted(value: Any) -> bool:
    """Whether ``value`` (a function, class or module) is trusted code: a function by the file its
    code was compiled from (``functools.wraps`` copies a wrapped function's ``__module__``)."""
    if isinstance(value, types.ModuleType):
        return is_trusted_module(value.__name__)
    if isinstance(value, types.FunctionType):
        return _is_trusted_file(value.__code__.co_filename)
    if isinstance(value, types.BuiltinFunctionType | types.MethodWrapperType | types.WrapperDescriptorType):
        return True
    return is_trusted_module(getattr(value, "__module__", None))


# --------------------------------------------------------------------------------- code objects
def function_of(value: Any) -> types.FunctionType | None:
    """The plain function behind a method, a static or class method, or a property's getter."""
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    elif isinstance(value, property):
        value = value.fget
    elif isinstance(value, types.MethodType):
        value = value.__func__
    return value if isinstance(value, types.FunctionType) else None


def code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and every code object nested in it (lambdas, comprehensions, inner functions)."""
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from code_objects(constant)


_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"})
_ATTRIBUTE_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
#: A global read: its name, the attributes read off it in a row (``pkg.settings.BETA``), whether stored.
GlobalRead = tuple[str, tuple[str, ...], bool]
_global_reads: dict[types.CodeType, tuple[GlobalRead, ...]] = {}


def global_reads(code: types.CodeType) -> tuple[GlobalRead, ...]:
    """The module-level names ``code`` (nested code included) loads or stores, as ``(name,
    attributes read off it in a row, stored)``; cached per code object."""
    cached = _global_reads.get(code)
    if cached is not None:
        return cached
    found: list[GlobalRead] = []
    for inner in code_objects(code):
        instructions = list(dis.get_instructions(inner))
        for index, instruction in enumerate(instructions):
            if instruction.opname not in _GLOBAL_OPS:
                continue
            chain = []
            for following in instructions[index + 1 :]:
                if following.opname not in _ATTRIBUTE_OPS:
                    break
                chain.append(str(following.argval))
            found.append((str(instruction.argval), tuple(chain), instruction.opname != "LOAD_GLOBAL"))
    result = tuple(dict.fromkeys(found))
    _global_reads[code] = result
    return result


def class_functions(kind: type) -> list[types.FunctionType]:
    """Every function the body of each untrusted class of ``kind``'s MRO defines (methods, static
    and class methods, properties' getters): any of them may run, by name or by ``getattr``."""
    return [
        function
        for owner in kind.__mro__
        if not is_trusted(owner)
        for value in vars(owner).values()
        if (function := function_of(value)) is not None
    ]


def _functions_in(value: Any, depth: int = 0) -> Iterator[types.FunctionType]:
    """The functions a container holds (a dispatch table: a dict or list of functions), a few levels deep."""
    if depth > 3:
        return
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple | set | frozenset):
        for item in value:
            function = function_of(item)
            if function is not None:
                yield function
            else:
                yield from _functions_in(item, depth + 1)


# ------------------------------------------------------------------------------------ the walk
class _Walk:
    """One description of what user code reads (:func:`code_reads`)."""

    def __init__(self, describe: Callable[[Any, str], Hashable] | None = None) -> None:
        self.describe = describe
        self.parts: dict[str, Hashable] = {}
        self.pending: list[types.FunctionType] = []
        self.seen: set[types.CodeType] = set()
        self.classes: set[type] = set()

    def function(self, function: types.FunctionType, cells_described: bool = False) -> None:
        if function.__code__ in self.seen:
            return
        self.seen.add(function.__code__)
        if is_trusted(function):  # a library's decorator: the function it wraps is the user's
            wrapped = function_of(getattr(function, "__wrapped__", None))
            if wrapped is not None:
                self.pending.append(wrapped)
            return
        if not cells_described:
            self.cells(function)
        self.globals(function)

    def cells(self, function: types.FunctionType) -> None:
        """The function's closure cells and default arguments, by the rules."""
        where = f"{function.__module__}.{function.__qualname__}"
        names = function.__code__.co_freevars
        for name, cell in zip(names, function.__closure__ or (), strict=True):
            if name == "__class__":  # super()'s cell: the class whose method this is
                continue
            self.value(_cell_value(cell), f"{where} (closure {name!r})")
        for index, default in enumerate(function.__defaults__ or ()):
            self.value(default, f"{where} (default {index})")
        for name, default in (function.__kwdefaults__ or {}).items():
            self.value(default, f"{where} (default {name!r})")

    def globals(self, function: types.FunctionType) -> None:
        """The module-level names the function's code loads (or stores), by the rules; a read
        through the user's modules (``pkg.settings.BETA``) reads the attribute at its end."""
        namespace = function.__globals__
        module = namespace.get("__name__", "?")
        for name, chain, stored in global_reads(function.__code__):
            at = f"{module}.{name}"
            if stored:
                self.parts[at] = NotPlain(at, "an assignment to a module-level global")
                continue
            if name not in namespace:
                continue  # a builtin (len, range ...), or a name not bound yet: a NameError either way
            value = namespace[name]
            for attribute in chain:
                if not isinstance(value, types.ModuleType) or is_trusted(value):
                    break
                at, value = f"{value.__name__}.{attribute}", getattr(value, attribute, None)
            self.value(value, at)

    def value(self, value: Any, where: str) -> None:
        self.pending.extend(_functions_in(value))
        self.parts[where] = describe_value(value, where, self)

    def user_class(self, kind: type, attributes: bool = True) -> None:
        """Every function of ``kind``'s untrusted classes walked, and (``attributes``) their other
        class attributes described by the rules."""
        if kind in self.classes:
            return
        self.classes.add(kind)
        for owner in kind.__mro__:
            if is_trusted(owner):
                continue
            for name, value in vars(owner).items():
                function = function_of(value)
                if function is not None:
                    self.pending.append(function)
                elif name.startswith("__") and name.endswith("__"):
                    continue  # Python's bookkeeping (a dataclass's fields, slots, the module name)
                elif isinstance(value, types.MemberDescriptorType | types.GetSetDescriptorType):
                    continue
                elif attributes:
                    self.value(value, f"{owner.__module__}.{owner.__qualname__}.{name}")
                else:
                    self.pending.extend(_functions_in(value))


def describe_value(value: Any, where: str, walk: _Walk) -> Hashable:
    """``value`` by the module docstring's rules; the functions and classes to walk go to ``walk``."""
    if isinstance(value, PLAIN):
        return (type(value), value) if isinstance(value, enum.Enum) else value
    if isinstance(value, tuple) and all(isinstance(item, PLAIN) for item in value):
        return value
    if isinstance(value, functools.partial):
        walk.value(value.func, f"{where}.func")
        for index, argument in enumerate(value.args):
            walk.value(argument, f"{where} (argument {index})")
        for name, argument in value.keywords.items():
            walk.value(argument, f"{where} (argument {name!r})")
        return ("partial", id(value))
    if isinstance(value, types.FunctionType | staticmethod | classmethod):
        function = function_of(value)
        if function is not None:
            walk.pending.append(function)
        return ("function", function)
    if isinstance(value, type):
        if not is_trusted(value) and not issubclass(value, enum.Enum):  # an enum's members are constants
            walk.user_class(value)
        return ("class", value)
    if isinstance(value, _CODE_WITHOUT_STATE):
        return ("identity", id(value))
    if walk.describe is not None:
        return walk.describe(value, where)
    return NotPlain(where, type(value).__name__)


def code_reads(
    functions: Iterable[types.FunctionType],
    classes: Iterable[type] = (),
    held: Iterable[types.FunctionType] = (),
    describe: Callable[[Any, str], Hashable] | None = None,
    keyed_classes: Iterable[type] = (),
) -> tuple[Hashable, ...]:
    """What user code may read outside the objects a key describes, walked by the module
    docstring's rules: ``functions``; every function of the untrusted classes of ``classes`` (the
    modules and objects a key described: a ``forward``, a ``__call__``, a method reached by
    ``getattr``), their class attributes described by the rules; the same functions of
    ``keyed_classes`` (a class whose attributes the key holds already: the method's); and the
    functions ``held`` by an object the key describes (whose closure cells and defaults it describes
    already). Returns ``((where, description), ...)``, sorted, ``where`` as ``module.NAME`` (a
    :class:`NotPlain` description: refused). ``describe`` (a capture key's
    :meth:`~lebm.recording.keys.Description.of`) describes what the rules would refuse (a
    list, a dict, a tensor, an object) instead, by that key's rules."""
    walk = _Walk(describe)
    for function in held:
        walk.function(function, cells_described=True)
    walk.pending.extend(functions)
    for kind in classes:
        walk.user_class(kind)
    for kind in keyed_classes:
        walk.user_class(kind, attributes=False)
    while walk.pending:
        walk.function(walk.pending.pop())
    return tuple(sorted(walk.parts.items(), key=lambda item: item[0]))


def first_not_plain(reads: tuple[Hashable, ...]) -> NotPlain | None:
    """The first value of :func:`code_reads`'s description that a key cannot hold by value."""
    return next((value for _, value in reads if isinstance(value, NotPlain)), None)  # type: ignore[misc]


def _cell_value(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None
