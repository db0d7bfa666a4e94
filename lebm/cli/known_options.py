"""Misspelt option names caught before Lightning is imported, from the options of earlier commands.

Importing Lightning takes several seconds (4 s on a 2-core machine, most of it torchmetrics), and
the full parser needs it. The commonest parser error, a misspelt option name
(``--model.init_args.prior_lrr``, ``n_stepz:`` in a recipe), needs only the names a class accepts.
Every command that imports Lightning anyway records those names for the classes its recipe uses
(:func:`remember_options`, into ``~/.cache/lebm/options.json``); the next command reads them back
(:func:`check_known_options`) and reports an unknown name in well under a second.

The check can only refuse what the full parser would refuse:

- an entry is used only while the class would be imported from the same place (the origin of its
  top-level package: another checkout or folder is another entry) and that whole package is
  unchanged (:func:`package_stamp`: every source file of an installed-from-source package such as
  a clone of lebm or a user's folder, so a type defined in another of its modules counts too; the
  distribution's version for one installed in site-packages); a class whose ``__init__`` takes
  ``**kwargs`` is never checked;
- keys written as dotted paths in a recipe (``sub.init_args.b: 5``), help options and a malformed
  cache are left to the full parser;
- a part whose class changes between the recipe's files or on the command line is not checked
  (the full parser drops or keeps its settings by rules of its own);
- a value is checked only against an option whose type is a union of simple alternatives (int,
  float, bool, str, None, a Literal's choices) and only when it is a string (from the command line
  or quoted in a recipe) that none of them can read (``--trainer.max_epochs abc``, ``form: papr``);
  the message is the full parser's (:func:`lebm.cli.errors.expects`); anything else the full parser
  checks (other types, typed YAML values, missing classes) is left to it.

A recipe is read as a tree: a mapping with ``class_path`` is a *part*, its ``init_args`` keys are
checked against the class (and each value is walked in turn); the ``trainer`` section is a part of
class ``lightning.pytorch.Trainer``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lebm.cli.errors import did_you_mean, expects

TRAINER_CLASS = "lightning.pytorch.Trainer"
#: Keys of a part that are not init arguments.
PART_KEYS = ("class_path", "init_args", "dict_kwargs", "__path__")
#: Top-level sections whose values are parts.
SECTIONS = ("model", "data", "trainer")
_MIXED = object()  # a part whose class changed on the way: not checked


def cache_dir() -> Path:
    """Where the ``lebm`` command keeps what it can reuse (options, help texts): ``$LEBM_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/lebm``, else ``~/.cache/lebm``. Deleting it is always safe."""
    if os.environ.get("LEBM_CACHE_DIR"):
        return Path(os.environ["LEBM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lebm"


def cache_file() -> Path:
    """The recorded options: ``options.json`` in :func:`cache_dir`."""
    return cache_dir() / "options.json"


@dataclass
class Part:
    """One ``class_path`` node of a composed recipe: its class and the init argument names given."""

    class_path: Any = None  # a str, None (not given) or _MIXED
    arguments: dict[str, Any] = field(default_factory=dict)  # name -> Part, list or a plain value


def _merge(part: Part, node: dict, implicit_class: str | None = None) -> None:
    """Merge one source's mapping for ``part`` into it (later sources override earlier ones)."""
    given = node.get("class_path", implicit_class)
    if given is not None:
        if part.class_path is None:
            part.class_path = given
        elif part.class_path != given:
            part.class_path = _MIXED
    arguments = node.get("init_args") if "class_path" in node or "init_args" in node else None
    if arguments is None:
        arguments = {key: value for key, value in node.items() if key not in PART_KEYS}
    if not isinstance(arguments, dict):
        return
    for key, value in arguments.items():
        if "." in str(key):  # jsonargparse reads ``sub.init_args.b: 5`` as a path: not checked here
            part.class_path = _MIXED
            continue
        _merge_argument(part, str(key), value)


def _merge_argument(part: Part, key: str, value: Any) -> None:
    name = key.removesuffix("+")  # ``callbacks+:`` appends to ``callbacks``
    current = part.arguments.get(name)
    if isinstance(value, dict) and ("class_path" in value or "init_args" in value):
        child = current if isinstance(current, Part) else Part()
        if current is not None and not isinstance(current, Part):
            child.class_path = _MIXED
        _merge(child, value)
        part.arguments[name] = child
    elif isinstance(value, list):
        items = [_as_part(item) for item in value]
        part.arguments[name] = (current if isinstance(current, list) and key.endswith("+") else []) + items
    else:
        part.arguments[name] = value


def _as_part(value: Any) -> Any:
    if isinstance(value, dict) and "class_path" in value:
        part = Part()
        _merge(part, value)
        return part
    return value


def _override(tree: dict[str, Part], flag: str, value: str | None) -> None:
    """Apply one command-line ``--section.key[.key...] value`` to the tree."""
    path = flag[2:].split(".")
    section = path[0]
    if section not in SECTIONS:
        return
    part = tree.setdefault(section, Part(TRAINER_CLASS if section == "trainer" else None))
    names = [name for name in path[1:] if name not in ("init_args", "dict_kwargs")]
    if path[-1] == "class_path" or not names:  # a new class for a part (or its whole mapping)
        names = names[:-1] if path[-1] == "class_path" else names
        target = _walk(part, names)
        if target is not None and (target.class_path is None or target.class_path != value):
            target.class_path = _MIXED
        return
    owner = _walk(part, names[:-1])
    if owner is None:
        return
    name = names[-1].removesuffix("+")  # ``--trainer.callbacks+=Class`` appends to a list
    current = owner.arguments.get(name)
    if isinstance(current, Part):  # a value for a part: a class name or a whole mapping
        current.class_path = _MIXED
    elif not isinstance(current, list):
        owner.arguments[name] = value


def _walk(part: Part, names: list[str]) -> Part | None:
    """The part reached from ``part`` through the init arguments ``names`` (creating none)."""
    for name in names:
        child = part.arguments.get(name)
        if not isinstance(child, Part):
            if child is None:
                child = part.arguments[name] = Part()
            else:
                return None
        part = child
    return part


def compose(configs: list[str], overrides: list[tuple[str, str | None]]) -> dict[str, Part]:
    """The recipe's parts: ``configs`` (paths or YAML texts, in order), then ``overrides``."""
    tree: dict[str, Part] = {}
    for source in configs:
        text = Path(source).read_text() if "\n" not in source and os.path.isfile(source) else source
        loaded = yaml.safe_load(text)
        if not isinstance(loaded, dict):
            continue
        for flat in [key for key in loaded if isinstance(key, str) and key.split(".")[0] in SECTIONS and "." in key]:
            tree.setdefault(flat.split(".")[0], Part()).class_path = _MIXED  # ``model.class_path: X`` at the top
        for section in SECTIONS:
            node = loaded.get(section)
            if isinstance(node, str):  # ``model: SomeClass``
                node = {"class_path": node}
            if isinstance(node, dict):
                implicit = TRAINER_CLASS if section == "trainer" else None
                _merge(tree.setdefault(section, Part()), node, implicit)
    for flag, value in overrides:
        _override(tree, flag, value)
    return tree


def parts(tree: dict[str, Part]) -> Iterator[tuple[str, Part]]:
    """Every part of the tree with the dotted key it sits at (``model``, ``model.init_args.prior``...)."""

    def visit(key: str, part: Part) -> Iterator[tuple[str, Part]]:
        yield key, part
        for name, value in part.arguments.items():
            values = value if isinstance(value, list) else [value]
            for index, item in enumerate(values):
                if isinstance(item, Part):
                    at = f"{key}.init_args.{name}" if key != "trainer" else f"{key}.{name}"
                    yield from visit(f"{at}.{index}" if isinstance(value, list) else at, item)

    for section, part in tree.items():
        yield from visit(section, part)


def split_arguments(args: list[str]) -> tuple[list[str], list[tuple[str, str | None]]]:
    """The ``--config`` values and the ``--section.key value`` overrides of expanded arguments."""
    configs: list[str] = []
    overrides: list[tuple[str, str | None]] = []
    index = 0
    while index < len(args):
        arg = args[index]
        following = args[index + 1] if index + 1 < len(args) else None
        if arg in ("-c", "--config") and following is not None:
            configs.append(following)
            index += 2
            continue
        if arg.startswith("--config="):
            configs.append(arg.split("=", 1)[1])
            index += 1
            continue
        if arg.startswith("--") and arg[2:].split("=", 1)[0].split(".")[0] in SECTIONS:
            if "=" in arg:
                flag, value = arg.split("=", 1)
                overrides.append((flag, value))
            else:
                takes_value = following is not None and not following.startswith("--")
                overrides.append((arg, following if takes_value else None))
                index += 1 if takes_value else 0
        index += 1
    return configs, overrides


def packages_stamp(packages: list[str]) -> str | None:
    """:func:`package_stamp` of each top-level package, joined (None if one cannot be found)."""
    stamps = [package_stamp(name) for name in packages]
    return None if None in stamps else "|".join(stamps)  # type: ignore[arg-type]


def package_stamp(class_path: str) -> str | None:
    """What a class's recorded options depend on: its top-level package as a whole. For one in
    ``site-packages`` (a wheel: changed only by reinstalling), its origin and the origin file's
    modification time; for any other (an editable lebm, a user's package or module), the number
    and the newest modification time of every ``.py`` file of the package (a single module: of its
    folder). None when it cannot be found. Reads only file metadata, imports nothing."""
    origin = package_origin(class_path)
    if origin is None or not os.path.isfile(origin):
        return None
    path = Path(origin)
    if "site-packages" in path.parts or "dist-packages" in path.parts:
        return f"{origin}@{path.stat().st_mtime_ns}"
    sources = path.parent.rglob("*.py") if path.name == "__init__.py" else path.parent.glob("*.py")
    times = [source.stat().st_mtime_ns for source in sources]
    return hashlib.sha1(f"{origin}:{len(times)}:{max(times, default=0)}".encode()).hexdigest()


def _read_cache() -> dict[str, Any]:
    try:
        loaded = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def package_origin(class_path: str) -> str | None:
    """Where the class path's top-level package or module is found now (``importlib``'s spec
    origin): locating a top-level name imports nothing. Two checkouts of lebm, or two folders that
    each hold a ``my_parts.py``, give different origins."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(class_path.split(".")[0])
    except (ImportError, ValueError):
        return None
    return None if spec is None else str(spec.origin)


def _valid(entry: Any, class_path: str, stamps: dict[tuple[str, ...], str | None] | None = None) -> bool:
    """A well-formed entry, recorded from the copy of the class this command would import, whose
    files are all unchanged since. ``stamps``: the :func:`packages_stamp` of each package list read
    so far in this command (filled here), so that one command reads each package's files once."""
    if not isinstance(entry, dict) or not isinstance(entry.get("stamp"), str):
        return False
    if not isinstance(entry.get("parameters"), list) or not isinstance(entry.get("open"), bool):
        return False
    if not isinstance(entry.get("simple"), dict):  # recorded before values were checked: record it again
        return False
    packages = entry.get("packages")
    if not isinstance(packages, list) or not all(isinstance(name, str) for name in packages):
        return False
    if entry.get("origin") is None or entry.get("origin") != package_origin(class_path):
        return False
    key = tuple(packages)
    if stamps is None or key not in stamps:
        stamp = packages_stamp(packages)
        if stamps is None:
            return entry["stamp"] == stamp
        stamps[key] = stamp
    return entry["stamp"] == stamps[key]


def check_known_options(args: list[str]) -> str | None:
    """The message for the first init argument that no recorded class accepts, or None.

    ``args``: the command's arguments after ``lebm.cli.recipes.expand_includes``. Any part it cannot
    decide (an unreadable source, an unrecorded or changed class) is left to the full parser.
    """
    try:
        return _first_unknown_option(args)
    except Exception:  # a check that cannot decide leaves the command to the full parser
        return None


def _first_unknown_option(args: list[str]) -> str | None:
    if any(arg in ("-h", "--help") or arg.split("=", 1)[0].endswith(".help") for arg in args):
        return None  # help, also jsonargparse's --model.help CLASS
    entries = _read_cache()
    if not entries:
        return None
    tree = compose(*split_arguments(args))
    stamps: dict[tuple[str, ...], str | None] = {}
    for key, part in parts(tree):
        entry = entries.get(part.class_path) if isinstance(part.class_path, str) else None
        if entry is None or not _valid(entry, part.class_path, stamps) or entry["open"]:
            continue
        accepted = entry["parameters"]
        for name, value in part.arguments.items():
            at = f"{key}.{name}" if key == "trainer" else f"{key}.init_args.{name}"
            if name not in accepted:
                owner = "the Trainer" if part.class_path == TRAINER_CLASS else part.class_path
                return f"{name!r} is not an option of {owner}{did_you_mean(name, accepted)} (at {at})"
            spec = (entry.get("simple") or {}).get(name)
            if isinstance(spec, dict) and isinstance(value, str) and not _fits(value, spec):
                where = re.sub(r"\.\d+(?=\.)", "", at)  # the parser names a list's item without its index
                return expects(where, list(spec["kinds"]), [repr(choice) for choice in spec["choices"]], value)
    return None


def _fits(value: str, spec: dict[str, Any]) -> bool:
    """Whether some simple alternative of an option (``spec``: ``kinds`` and ``choices``) can read the
    string ``value``, leniently: a doubt counts as a fit (the full parser decides those)."""
    kinds, choices = spec["kinds"], spec["choices"]
    if "${" in value or "str" in kinds or "bool" in kinds:  # an interpolation OmegaConf resolves later
        return True
    try:
        read = yaml.safe_load(value)  # how the parser reads a value: YAML 1.1 (0x10, 1_000, .inf, 1:30)
    except Exception:
        return True
    if value.strip() in [str(choice) for choice in choices] or str(read) in [str(choice) for choice in choices]:
        return True
    if any(read == choice and type(read) is type(choice) for choice in choices):
        return True
    if read is None:
        return "NoneType" in kinds or not choices and not kinds
    if isinstance(read, str):  # the parser converts a string that YAML leaves alone (1e-3, nan) by the type
        read = _number(read.strip(), "float" in kinds)
    number = isinstance(read, (int, float)) and not isinstance(read, bool)
    return ("int" in kinds and isinstance(read, int) and not isinstance(read, bool)) or ("float" in kinds and number)


def _number(text: str, as_float: bool) -> Any:
    """``int(text)``, else ``float(text)`` when floats are accepted, else ``text`` itself."""
    for convert in (int, float) if as_float else (int,):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


def simple_alternatives(annotation: Any) -> dict[str, list[Any]] | None:
    """``{"kinds": [...], "choices": [...]}`` when ``annotation`` is a union of simple alternatives
    (int, float, bool, str, None and Literals of plain values, in the order the parser lists them),
    else None."""
    import types
    import typing

    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    kinds: list[str] = []
    choices: list[Any] = []
    for member in members or (annotation,):
        if typing.get_origin(member) is typing.Literal:
            values = typing.get_args(member)
            if not all(isinstance(v, (str, int, float, bool)) for v in values):
                return None
            choices += [v for v in values if v not in choices]
        elif member in (int, float, bool, str, type(None)):
            kinds.append(member.__name__)
        else:
            return None
    return {"kinds": kinds, "choices": choices}


def describe_class(class_path: str) -> dict[str, Any] | None:
    """What :func:`check_known_options` needs about a class: its ``__init__`` parameter names,
    whether it takes ``**kwargs`` (``open``), the types of its simple options, and the stamp of the
    package they were read from (:func:`package_stamp`)."""
    import importlib
    import inspect
    import typing

    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        return None
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, name)
        signature = inspect.signature(cls.__init__)
    except Exception:
        return None
    packages = sorted({class_path.split(".")[0], cls.__module__.split(".")[0]})  # where it is named, and defined
    stamp = packages_stamp(packages)
    if stamp is None:
        return None
    kinds = [parameter.kind for parameter in signature.parameters.values()]
    names = [p.name for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: no value is checked early
        hints = {}
    simple = {name: spec for name in names if (spec := simple_alternatives(hints.get(name, Any))) is not None}
    for name, spec in simple.items():  # ``x: int = None``: the parser makes it optional
        if signature.parameters[name].default is None and "NoneType" not in spec["kinds"]:
            spec["kinds"].append("NoneType")
    return {
        "parameters": [name for name in names if name != "self"],
        "simple": simple,
        "open": inspect.Parameter.VAR_KEYWORD in kinds,
        "origin": package_origin(class_path),
        "packages": packages,
        "stamp": stamp,
    }


def remember_options(args: list[str]) -> None:
    """Record the options of every class the command's recipe names (called once Lightning is
    imported, so that describing them costs nothing more); never fails the command."""
    with contextlib.suppress(Exception):
        tree = compose(*split_arguments(args))
        entries = _read_cache()
        wanted = {part.class_path for _, part in parts(tree) if isinstance(part.class_path, str)}
        changed, stamps = False, {}
        for class_path in sorted(wanted | {TRAINER_CLASS}):
            if _valid(entries.get(class_path), class_path, stamps):
                continue
            entry = describe_class(class_path)
            if entry is not None:
                entries[class_path] = entry
                changed = True
        if changed:
            target = cache_file()
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(entries, indent=1, sort_keys=True))
            os.replace(partial, target)
