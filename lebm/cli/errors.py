"""Short, actionable messages for mistakes on the command line and in recipes.

:func:`fail` prints ``lebm: error: ...`` and exits; every part of the CLI reports through it.

jsonargparse reports a bad option deep inside nested "Does not validate against any of the Union
subtypes" blocks that end with the whole given value. :func:`summarize_parser_error` finds what
went wrong (an unknown option, a misspelt class path, a value of the wrong type), names the full
key and, for names, suggests the nearest valid one ("did you mean").
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import re
import sys
from typing import NoReturn

from lebm.cli.kinds import mismatch, slot_kind, wrong_kind

#: The commands of ``lebm``: LightningCLI's subcommands.
SUBCOMMANDS = ("fit", "validate", "test", "predict")

_PROBLEM_CLASS = re.compile(r"Problem with given class_path '([\w.]+)'")
_NOT_ACCEPTED = re.compile(r"Option '([\w.]+)' is not accepted")
_NO_ATTRIBUTE = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_EXPECTED = re.compile(r"Expected a <class '([\w.]+)'>\. Got value: (.*)")
_PARSER_KEY = re.compile(r'Parser key "([\w.]+)"')
_NESTED_KEY = re.compile(r"NestedArg\(key='([\w.]+)'")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
_TRAINER_KEY = re.compile(r"does not accept option 'trainer\.(\w+)'")
_TRAINER_FLAG = re.compile(r"--trainer\.(\w+)(?:[ =]\S*)?")
_NOT_SUBCLASS = re.compile(r"Import path (?:([\w.]+) )?does not correspond to a subclass of (\w+)")
_GIVEN_NAME = re.compile(r"Given value: ([\w.]+)$")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``lebm: error: message`` and exit."""
    sys.stderr.write(f"lebm: error: {message}\n")
    raise SystemExit(code)


def did_you_mean(word: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def class_parameters(class_path: str) -> list[str]:
    """The ``__init__`` parameter names of the class at ``class_path`` (empty if it cannot be read)."""
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    except Exception:
        return []


def module_classes(module_name: str) -> list[str]:
    """Public class names of a module (empty if it cannot be imported)."""
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return []
    return [name for name, value in vars(module).items() if inspect.isclass(value) and not name.startswith("_")]


def _full_key(message: str, option: str | None = None) -> str:
    """The dotted key the error is about: the outer parser key plus the nested argument's key."""
    outer = _PARSER_KEY.findall(message)
    nested = _NESTED_KEY.findall(message)
    parts = [outer[0]] if outer else []
    if nested:
        parts.append("init_args." + nested[-1] if not nested[-1].startswith("init_args") else nested[-1])
    key = ".".join(parts)
    if option and not key.endswith(option):
        key = f"{key}.{option}" if key else option
    return key


def summarize_parser_error(message: str) -> str:
    """A short version of a jsonargparse error: the problem first, with a suggestion."""
    unrecognized = _UNRECOGNIZED.search(message)
    trainer_key = _TRAINER_KEY.search(message) or (unrecognized and _TRAINER_FLAG.fullmatch(unrecognized.group(1)))
    if trainer_key:  # one misspelt Trainer option, on the command line or in a recipe
        return not_a_trainer_option(trainer_key.group(1))
    if unrecognized:
        given = unrecognized.group(1)
        hints = [hint for flag in re.findall(r"--trainer\.(\w+)", given) if (hint := trainer_option_hint(flag))]
        if hints:
            return f"unknown option(s): {given}{''.join(hints)}"
        example = "e.g. --trainer.max_epochs 3"
        return f"unknown option(s): {given} (options are written --section.key, {example})"
    classes = _PROBLEM_CLASS.findall(message)
    missing = _NO_ATTRIBUTE.search(message)
    if missing:
        module, name = missing.groups()
        hint = did_you_mean(name, module_classes(module))
        return f"{module} has no class {name!r}{hint}: check the class_path '{module}.{name}'"
    no_module = _NO_MODULE.search(message)
    if no_module and classes:
        return f"cannot import the class_path '{classes[-1]}': no module named {no_module.group(1)!r}"
    kind = wrong_kind_in(message)
    if kind:
        return kind
    refused = _NOT_ACCEPTED.search(message)
    if refused:
        option = refused.group(1)
        owner = classes[-1] if classes else None
        hint = did_you_mean(option, class_parameters(owner)) if owner else ""
        where = f" of {owner}" if owner else ""
        key = _full_key(message)
        at = f" (at {key})" if key else ""
        return f"{option!r} is not an option{where}{hint}{at}"
    choice = wrong_choice(message)
    if choice:
        return choice
    expected = _EXPECTED.search(message)
    if expected:
        kind, value = expected.group(1), expected.group(2).strip()
        lines = message.splitlines()
        blocks = [i for i, line in enumerate(lines) if _PARSER_KEY.search(line)]
        inner = _PARSER_KEY.findall(message)
        key = _key_chain(lines, blocks[-1]) if blocks else _full_key(message, inner[-1] if inner else None)
        if kind in ("float", "int") and _is_non_finite(value):
            return f"{key} must be a finite number, got {value}"
        return f"{key} expects {_SIMPLE_TYPES.get(kind, f'a {kind}')}, got {value!r}"
    return _first_lines(message)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" -"))


def _enclosing(lines: list[str], index: int, pattern: re.Pattern[str]) -> int | None:
    """The index of the nearest line above ``lines[index]``, less indented, that matches ``pattern``."""
    depth = _indent(lines[index])
    for above in range(index - 1, -1, -1):
        if _indent(lines[above]) < depth and pattern.search(lines[above]):
            return above
    return None


def _owner(lines: list[str], block: int) -> str | None:
    """The class whose argument the parser block at ``lines[block]`` is (None at the top)."""
    owner = _enclosing(lines, block, _PROBLEM_CLASS)
    outer = _enclosing(lines, block, _PARSER_KEY)
    if owner is None or (outer is not None and outer > owner):
        return None
    return _PROBLEM_CLASS.search(lines[owner]).group(1)  # type: ignore[union-attr]


def wrong_kind_in(message: str) -> str | None:
    """The message for a part of the wrong kind in a jsonargparse error (:mod:`lebm.cli.kinds`): a
    class that is not a subclass of its slot's type (``Import path X does not correspond to a
    subclass of Y``, with X in the line or, for ``--key X``, in the block's ``Given value``), or one
    of lebm's parts of another kind that the parser refused for a reason of its own (an argument it
    lacks); None for any other error."""
    lines = message.splitlines()
    for index, line in enumerate(lines):
        refused = _NOT_SUBCLASS.search(line)
        block = _enclosing(lines, index, _PARSER_KEY) if refused else None
        if refused is None or block is None:
            continue
        given = refused.group(1)
        if given is None:
            after = [row for row in lines[index + 1 :] if _indent(row) < _indent(line) and "Given value:" in row]
            found = _GIVEN_NAME.search(after[0].strip()) if after else None
            given = found.group(1) if found else None
        if given:
            key, type_name = _key_chain(lines, block), refused.group(2)
            kind = slot_kind(key.rsplit(".", 1)[-1], _owner(lines, block), type_name)
            return wrong_kind(key, given, kind, type_name)
    for index, line in enumerate(lines):
        problem = _PROBLEM_CLASS.search(line)
        if problem and index and _PARSER_KEY.search(lines[index - 1]) and _indent(lines[index - 1]) < _indent(line):
            key = _key_chain(lines, index - 1)
            text = mismatch(key, problem.group(1), key.rsplit(".", 1)[-1], _owner(lines, index - 1))
            if text:
                return text
    return None


#: How a simple type of a Union or a Literal's values are named in a message.
_SIMPLE_TYPES = {"int": "an int", "float": "a float", "bool": "true or false", "str": "a string", "NoneType": "null"}
_SUBTYPE = re.compile(r"<class '(\w+)'>|typing\.Literal\[(.*?)\]")


def wrong_choice(message: str) -> str | None:
    """``key expects <the alternatives>, got 'value'`` for the innermost option whose value fits none
    of its simple alternatives (ints, floats, booleans, strings, null, literal choices: a Union's
    subtypes or one Literal), with the nearest choice; None for any other error."""
    lines = message.splitlines()
    blocks = [(len(line) - len(line.lstrip()), i) for i, line in enumerate(lines) if _PARSER_KEY.search(line)]
    if not blocks:
        return None
    indent, start = max(blocks, key=lambda block: (block[0], block[1]))
    body = [line.lstrip() for line in lines[start + 1 :] if len(line) - len(line.lstrip()) > indent]
    value: str | None = None
    if body and body[0].startswith("Expected a typing.Literal["):
        literal, _, value = body[0].partition(". Got value:")
        value = value.removeprefix(" ")
        subtypes = [(None, literal[len("Expected a typing.Literal[") : -1])]
    elif len(body) > 1 and body[1].startswith("Subtypes: ["):
        subtypes = _SUBTYPE.findall(body[1][len("Subtypes: [") : -1])
        if not subtypes or len(subtypes) != body[1].count("<class") + body[1].count("typing.Literal["):
            return None  # a subtype that is neither a simple class nor a Literal: the parser's own message
        given = [line for line in body if line.startswith("Given value:")]
        value = given[0][len("Given value:") :].removeprefix(" ") if given else None
    else:
        return None
    choices: list[str] = []
    kinds: list[str] = []
    for name, literal in subtypes:
        if name:
            if name not in _SIMPLE_TYPES:
                return None
            kinds.append(name)
        else:
            choices += [c.strip() for c in literal.split(",") if c.strip() and c.strip() not in choices]
    if value is None:
        return None
    return expects(_key_chain(lines, start), kinds, choices, value)


def _key_chain(lines: list[str], start: int) -> str:
    """The dotted key of the parser block at ``lines[start]`` from the blocks that enclose it
    (``model`` > ``posterior_sampler`` > ``form`` is ``model.init_args.posterior_sampler.init_args.form``,
    from a recipe file or the command line, long or short form; an item of a list of parts has no
    index: ``trainer.callbacks.init_args.every_n_epochs``)."""
    chain, indent = [], len(lines[start]) + 1
    for line in reversed(lines[: start + 1]):
        depth = len(line) - len(line.lstrip())
        found = _PARSER_KEY.search(line)
        if found and depth < indent:
            chain.append(found.group(1))
            indent = depth
    chain.reverse()
    return ".init_args.".join(chain)


def expects(key: str, kinds: list[str], choices: list[str], value: str) -> str:
    """``key expects one of <choices> or <kinds>, got 'value'`` with the nearest choice: the message
    for a value that fits none of an option's simple alternatives. ``kinds``: type names (``int``,
    ``float``, ``bool``, ``str``, ``NoneType``); ``choices``: a Literal's values as written in code
    (``'code'``, ``64``). ``lebm.cli.known_options`` words its early check with it too."""
    alternatives = [_SIMPLE_TYPES.get(kind, f"a {kind}") for kind in kinds]
    if choices:
        alternatives.insert(0, "one of " + ", ".join(choices))
    words = [c.strip("'\"") for c in choices]
    hint = did_you_mean(value, words) if words else ""
    listed = alternatives[0] if len(alternatives) == 1 else ", ".join(alternatives[:-1]) + " or " + alternatives[-1]
    return f"{key} expects {listed}, got {value!r}{hint}"


def not_a_trainer_option(option: str) -> str:
    """The message for a Trainer option that does not exist (the same before and after Lightning is
    imported: ``lebm.cli.known_options`` words it so too)."""
    hint = did_you_mean(option, class_parameters("lightning.pytorch.Trainer"))
    return f"{option!r} is not an option of the Trainer{hint} (at trainer.{option})"


def trainer_option_hint(option: str) -> str:
    """`` (did you mean --trainer.x?)`` for the Trainer option nearest ``option``, or ``""``."""
    hint = did_you_mean(option, class_parameters("lightning.pytorch.Trainer"))
    return hint.replace("'", "--trainer.", 1).replace("'", "", 1) if hint else ""


def _is_non_finite(value: str) -> bool:
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return False


def _first_lines(message: str, lines: int = 6, width: int = 200) -> str:
    """The start of an unrecognised message, without the echo of the whole given value."""
    kept = [line[:width] for line in message.splitlines() if not line.strip().startswith(("Given value", "Subtypes"))]
    return "\n".join(kept[:lines])
