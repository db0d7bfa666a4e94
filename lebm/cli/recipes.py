"""Recipes composed from fragments: the ``include`` key of a recipe file.

A recipe names the fragments it builds on, relative to its own folder::

    # recipes/latent_ebm/svhn.yaml
    include: [../base.yaml, ../data/svhn.yaml, ../evaluation/fid.yaml, _method.yaml]
    trainer:
      default_root_dir: runs/latent_ebm/svhn

``lebm fit -c recipes/latent_ebm/svhn.yaml`` loads ``base.yaml``, ``data/svhn.yaml``,
``evaluation/fid.yaml`` and ``_method.yaml`` (each expanded the same way first), then the recipe
itself: later files override earlier ones key by key, as several ``-c`` options do in
LightningCLI (a list such as ``trainer.callbacks`` is replaced, unless the later file writes
``callbacks+:`` to append). Interpolations such as ``${model.init_args.prior.init_args.latent_dim}``
are resolved after everything, command-line overrides included, is merged, so overriding a value
on the command line reaches every place that interpolates it.
"""

from __future__ import annotations

import copy
import inspect
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

INCLUDE_KEY = "include"
CONFIG_FLAGS = ("-c", "--config")


class RecipeError(ValueError):
    """A recipe file that cannot be read or composed."""


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader refusing a key written twice in one mapping (YAML keeps the last value in
    silence, so the first is lost without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges may repeat
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} is written twice, at lines {seen[key]} and {line}",
                    key_node.start_mark,
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


#: Recipes already read and checked, by file and text: one command reads a shared base (``base.yaml``)
#: once per recipe that includes it, and YAML parsing is the slow part. Keyed by the text, so an
#: edited file is read again.
_READ: dict[tuple[str, str], dict] = {}
_READ_KEPT = 256


def read_recipe(path: Path) -> dict:
    """The top-level mapping of a recipe file (empty for an empty file); a key written twice in one
    mapping is refused with both lines. Each call returns its own copy."""
    try:
        text = path.read_text()
    except OSError as error:
        raise RecipeError(f"cannot read the recipe {path}: {error.strerror or error}") from None
    key = (str(path), text)
    if key not in _READ:
        if len(_READ) >= _READ_KEPT:  # a long-lived process (a notebook editing recipes) keeps a bounded few
            _READ.clear()
        _READ[key] = _parse_recipe(path, text)
    return copy.deepcopy(_READ[key])


def _parse_recipe(path: Path, text: str) -> dict:
    """:func:`read_recipe`'s parsing and checks of ``text``, the contents of ``path``."""
    try:
        data = yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader)
    except yaml.constructor.ConstructorError as error:
        if "is written twice" not in str(error.problem):
            raise RecipeError(describe_yaml_error(path, text, error)) from None
        raise RecipeError(f"{path}: {error.problem}; keep one (YAML would keep the last in silence)") from None
    except yaml.YAMLError as error:
        raise RecipeError(describe_yaml_error(path, text, error)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"{path} must hold a mapping of keys (trainer:, model:, data:, ...), not {type(data).__name__}"
        )
    check_shape(path, yaml.compose(text, Loader=yaml.SafeLoader))
    return data


#: The sections of a recipe, each a mapping: a null one would wipe what the recipes before it set.
SECTIONS = ("trainer", "model", "data")
#: Keys that hold a mapping of settings wherever they are.
MAPPING_KEYS = ("init_args",)
NULL_TAG = "tag:yaml.org,2002:null"


def check_shape(path: Path, root: yaml.Node | None) -> None:
    """Refuse, naming the file, key and line, what the parser would take in silence or bury in a
    traceback: a ``trainer:``/``model:``/``data:`` section left empty (null: its lines commented out,
    which wipes the included section), and an ``init_args`` (anywhere) that is empty or holds a text
    where a mapping of settings belongs (a recipe cut short after the key)."""
    if not isinstance(root, yaml.MappingNode):
        return
    for key_node, value_node in root.value:
        if key_node.value in SECTIONS:
            _check_mapping(path, key_node, value_node, key_node.value, section=True)
    _check_nested(path, root, "")


def _check_nested(path: Path, node: yaml.Node, prefix: str) -> None:
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_nested(path, item, f"{prefix}[{index}]")
        return
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
        if key_node.value in MAPPING_KEYS:
            _check_mapping(path, key_node, value_node, dotted, section=False)
        _check_nested(path, value_node, dotted)


def _check_mapping(path: Path, key_node: yaml.Node, value_node: yaml.Node, dotted: str, section: bool) -> None:
    """A ``RecipeError`` unless ``value_node`` is a mapping (see :func:`check_shape`)."""
    line = key_node.start_mark.line + 1
    if isinstance(value_node, yaml.ScalarNode) and value_node.tag == NULL_TAG:
        if section:
            raise RecipeError(
                f"{path}, line {line}: `{dotted}:` is empty (null: nothing is indented under it, or its lines are "
                f"commented out), which would wipe the {dotted} settings of the recipes it includes; delete the "
                f"`{dotted}:` line, or give it settings"
            )
        raise RecipeError(
            f"{path}, line {line}: `{dotted}:` is empty (null) where a mapping of settings belongs: the recipe may be "
            "cut short there; give its settings (key: value lines indented under it), or delete the key"
        )
    if isinstance(value_node, yaml.ScalarNode) and not section:  # a section may name a class: `data: SampleRequests`
        raise RecipeError(
            f"{path}, line {line}: `{dotted}` holds the text {value_node.value!r} where a mapping of settings belongs "
            "(key: value lines indented under it)"
        )


def describe_yaml_error(path: Path, text: str, error: yaml.YAMLError) -> str:
    """``path:line: what is wrong`` for a YAML syntax error, saying so when a tab is the cause."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f"{path} is not valid YAML: {problem}"
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    where = f"{path}:{mark.line + 1}"
    if "\t" in line[: mark.column + 1] or "'\\t'" in problem:
        return f"{where}: a tab character; YAML indents with spaces only (replace the tab by spaces)"
    opened = _unclosed_bracket(error)
    if opened and "<stream end>" in problem:  # the file ended inside the bracket: name where it opened
        at, bracket = opened
        opening = lines[at[0] - 1].strip() if at[0] - 1 < len(lines) else ""
        return (
            f"{path}:{at[0]}:{at[1]}: this {bracket} is never closed (YAML reached the end of the file looking for "
            f"its end): {opening}"
        )
    hint = f" (is the {opened[1]} opened at line {opened[0][0]} closed?)" if opened else ""
    return f"{where}:{mark.column + 1}: {problem} (not valid YAML){': ' + line.strip() if line.strip() else ''}{hint}"


def _unclosed_bracket(error: yaml.YAMLError) -> tuple[tuple[int, int], str] | None:
    """``((line, column), "'{'")`` of the flow mapping or sequence a YAML error was raised inside
    (PyYAML's ``context_mark``: where the bracket opened; both counted from 1), else None."""
    context = getattr(error, "context", None) or ""
    mark = getattr(error, "context_mark", None)
    if mark is None or "flow" not in context:
        return None
    return (mark.line + 1, mark.column + 1), "'{'" if "mapping" in context else "'['"


def included_files(path: Path, _chain: tuple[Path, ...] = ()) -> list[Path]:
    """Every file to load before ``path``, in order: its ``include`` entries, each preceded by
    its own includes (depth first; a fragment included twice is loaded once, at its first place)."""
    path = path.resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise RecipeError(f"recipe includes form a cycle: {cycle}")
    entries = read_recipe(path).get(INCLUDE_KEY) or []
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
        raise RecipeError(f"`{INCLUDE_KEY}` in {path} must be a list of file paths relative to that file")
    ordered: list[Path] = []
    methods: list[tuple[str, str]] = []  # (entry, the method it composes to) of each entry naming one
    for entry in entries:
        fragment = (path.parent / entry).resolve()
        if not fragment.is_file():
            raise RecipeError(f"{path} includes {entry!r}, but {fragment} does not exist")
        layers = [*included_files(fragment, (*_chain, path)), fragment]
        _check_included_method(path, entry, layers, methods)
        for item in layers:
            if item not in ordered:
                ordered.append(item)
    return ordered


def _method_of(settings: dict) -> str | None:
    """The method's class path a recipe's settings name (``model.class_path``), or None."""
    model = settings.get("model")
    method = model.get("class_path") if isinstance(model, dict) else None
    return method if isinstance(method, str) else None


def _same_method(first: str, second: str) -> bool:
    """Whether two class paths name one method (``lebm.models.LatentEBM`` is ``lebm.models.latent_ebm.LatentEBM``)."""
    return first.rsplit(".", 1)[-1] == second.rsplit(".", 1)[-1]


def _extends(method: str, earlier: str) -> bool:
    """Whether the class ``method`` names is a subclass of the one ``earlier`` names (a user's
    ``my_methods.WarmUpEBM`` of ``lebm.models.LatentEBM``): a recipe may then change the method to it,
    keeping the earlier recipe's arguments (:func:`keep_method_arguments`). True as well when
    ``method`` cannot be imported, so that the parser says why, naming the module."""
    from lebm.config import import_object

    try:
        cls = import_object(method)
    except Exception:
        return True
    try:
        base = import_object(earlier)
    except Exception:
        return False
    return isinstance(cls, type) and isinstance(base, type) and issubclass(cls, base)


def _check_included_method(path: Path, entry: str, layers: list[Path], methods: list[tuple[str, str]]) -> None:
    """Refuse an ``include`` entry of ``path`` whose method (the last ``model.class_path`` of its
    ``layers``, its own includes first) differs from an earlier entry's (``methods``, to which it is
    added): as with two ``-c`` recipes, the later method would take the earlier one's settings, or
    drop them, without a word."""
    method = next((found for layer in reversed(layers) if (found := _method_of(read_recipe(layer)))), None)
    _add_method(
        entry,
        method,
        methods,
        lambda earlier, earlier_method: (
            f"{path} includes {earlier!r}, a recipe of {earlier_method}, and {entry!r}, one of {method}: one run "
            "trains one method; include one of them, or change the method on purpose with model: class_path: in "
            f"{path.name} itself"
        ),
    )


def _add_method(
    source: Any, method: str | None, methods: list[tuple[Any, str]], refusal: Callable[[Any, str], str]
) -> None:
    """Add ``(source, method)`` to ``methods`` (a recipe's method, None: it names none), or raise
    :class:`RecipeError` with ``refusal(earlier source, its method)`` when an earlier one differs."""
    if method is None:
        return
    for earlier, earlier_method in methods:
        if not _same_method(earlier_method, method) and not _extends(method, earlier_method):
            raise RecipeError(refusal(earlier, earlier_method))
    methods.append((source, method))


def _without_include(path: Path) -> str:
    """``path`` itself when it has no ``include`` key, else its other settings as YAML text."""
    data = read_recipe(path)
    if INCLUDE_KEY not in data:
        return str(path)
    data.pop(INCLUDE_KEY)
    return yaml.safe_dump(data, sort_keys=False) if data else "{}"


def expand_includes(args: Sequence[str]) -> list[str]:
    """Command-line arguments with every ``-c recipe.yaml`` that has an ``include`` list replaced
    by ``--config`` for each file it includes (recursively), then the recipe's own settings
    without the ``include`` key (as YAML text, so that ``--print_config`` and the saved
    ``config.yaml`` stand on their own). Other arguments are left as they are."""
    expanded: list[str] = []
    index = 0
    args = list(args)
    methods: list[tuple[Path, str]] = []  # (recipe, its method's class_path) of each -c file
    composed: dict = {}  # every layer so far, to name callbacks a later ``callbacks:`` replaces
    while index < len(args):
        arg = args[index]
        value: str | None = None
        if arg in CONFIG_FLAGS and index + 1 < len(args):
            value, step = args[index + 1], 2
        elif arg.startswith("--config="):
            value, step = arg.split("=", 1)[1], 1
        if value is not None and Path(value).is_file():
            _check_method(Path(value), methods)
            fragments = included_files(Path(value))
            for fragment in fragments:  # lebm's own bases may replace on purpose (base_text.yaml's callbacks)
                composed = _say_replaced_callbacks(composed, fragment, say=False)
            composed = _say_replaced_callbacks(composed, Path(value).resolve())  # the file the user gives
            for fragment in fragments:
                expanded += ["--config", _without_include(fragment)]
            expanded += ["--config", _without_include(Path(value)) if fragments else value]
            index += step
            continue
        expanded.append(arg)
        index += 1
    return keep_method_arguments(expanded)


def _say_replaced_callbacks(composed: dict, layer: Path, say: bool = True) -> dict:
    """``composed`` with ``layer`` merged in; when ``layer`` (``say``: a file the command gives, not a
    fragment it includes) writes ``trainer.callbacks:`` (not ``callbacks+:``) over callbacks that
    earlier files gave, one line on stderr names what it replaces (lebm's checkpoint, picture and
    curve callbacks among them, often by mistake)."""
    settings = read_recipe(layer)
    settings.pop(INCLUDE_KEY, None)
    trainer = settings.get("trainer")
    earlier = (composed.get("trainer") or {}).get("callbacks")
    if say and isinstance(trainer, dict) and "callbacks" in trainer and isinstance(earlier, list) and earlier:
        names = [c.get("class_path", "?").rsplit(".", 1)[-1] if isinstance(c, dict) else str(c) for c in earlier]
        sys.stderr.write(
            f"lebm: {layer}: trainer.callbacks replaces the {len(names)} callback(s) the files before it give "
            f"({', '.join(names)}); write callbacks+: to add to them instead\n"
        )
    return merge_layer(composed, settings)


def _check_method(path: Path, methods: list[tuple[Path, str]]) -> None:
    """Refuse an empty recipe file, and a recipe whose method (``model.class_path``, includes
    composed) differs from that of an earlier ``-c`` recipe (``methods``, to which it is added):
    merged, the second method would take the first one's settings, or drop them, without a word."""
    if not read_recipe(path):
        raise RecipeError(
            f"the recipe {path} is empty (it holds no settings): write its trainer:, model: and data: sections into "
            "it, or start from a copy of one of lebm's (lebm recipes copy quickstart my_recipes)"
        )
    method = _method_of(compose_recipe(path))
    if method is None and not methods and path.name.startswith("_"):
        siblings = sorted(p.stem for p in path.parent.glob("*.yaml") if not p.name.startswith(("_", "base")))
        naming = [name for name in siblings if path.stem in (path.parent / f"{name}.yaml").read_text()]
        example = f"{path.parent.name}/{(naming or siblings)[0]}" if siblings else "RECIPE"
        raise RecipeError(
            f"{path} is a fragment (its name starts with _) that changes a recipe given before it, and none is: "
            f"give the recipe first, -c {example} -c {path} (its folder's recipes: {', '.join(siblings) or 'none'})"
        )
    _add_method(
        path,
        method,
        methods,
        lambda earlier, earlier_method: (
            f"{earlier} is a recipe of {earlier_method} and {path} one of {method}: one run trains one method; "
            "give one of them, or change the method on purpose with --model.class_path"
        ),
    )


def merge_layer(base: dict, layer: dict) -> dict:
    """``layer`` laid over ``base`` as the parser lays one ``-c`` file over the ones before it:
    mappings merge key by key; a ``key+:`` list is appended to ``key``'s list; a mapping that names
    another ``class_path`` than before replaces the earlier one (its ``init_args`` with it); any
    other value replaces. Returns a new mapping; the inputs are left as they are."""
    merged = dict(base)
    for key, value in layer.items():
        if isinstance(key, str) and key.endswith("+"):
            name = key[:-1]
            items = value if isinstance(value, list) else [value]
            earlier = merged.get(name)
            merged[name] = [*(earlier if isinstance(earlier, list) else []), *items]
            continue
        earlier = merged.get(key)
        if (
            isinstance(earlier, dict)
            and isinstance(value, dict)
            and value.get("class_path", earlier.get("class_path")) == earlier.get("class_path")
        ):
            merged[key] = merge_layer(earlier, value)
        else:
            merged[key] = value
    return merged


def compose_recipe(path: Path) -> dict:
    """The recipe at ``path`` as one mapping: its included fragments (in :func:`included_files`
    order), then its own settings, merged by :func:`merge_layer`. Interpolations (``${...}``) are
    kept, so the mapping runs as a recipe of its own (``lebm recipes show``)."""
    composed: dict = {}
    for layer in [*included_files(path), path.resolve()]:
        settings = read_recipe(layer)
        settings.pop(INCLUDE_KEY, None)
        composed = merge_layer(composed, settings)
    return composed


MODEL_CLASS_PATH_OPTIONS = ("--model.class_path", "--model")


def _model_class_path_option(args: list[str], index: int) -> tuple[int, int] | None:
    """``(index of the value, arguments taken)`` when ``args[index]`` gives the method's class on the
    command line (``--model.class_path X``, ``--model=X``, ``--model X`` with ``X`` a dotted path),
    else None."""
    arg = args[index]
    name, equals, _ = arg.partition("=")
    if name not in MODEL_CLASS_PATH_OPTIONS:
        return None
    at, taken = (index, 1) if equals else (index + 1, 2)
    if at >= len(args):
        return None
    value = args[at].partition("=")[2] if equals else args[at]
    if name == "--model" and (not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", value) or Path(value).is_file()):
        return None  # a config of the model (YAML, a file), not a class path
    return at, taken


def _config_layer(value: str) -> dict | None:
    """The settings of a ``--config`` value of the expanded arguments (a file, or YAML text), or None."""
    try:
        if Path(value).is_file():
            return read_recipe(Path(value))
        data = yaml.safe_load(value)
    except (RecipeError, yaml.YAMLError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def accepted_arguments(cls: type) -> dict[str, list[inspect.Parameter]] | None:
    """The init arguments the class ``cls`` takes by name: its ``__init__``'s, and, while an
    ``__init__`` takes ``**kwargs`` (passed on to ``super().__init__``), those of the next class up
    that defines one; a class without an ``__init__`` takes its parent's. Each name with its parameter
    in every ``__init__`` up the classes that names it (the subclass's first). None: any name."""
    names: dict[str, list[inspect.Parameter]] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            return names
        try:
            parameters = list(inspect.signature(init).parameters.values())[1:]  # without self
        except (TypeError, ValueError):
            return None
        for parameter in parameters:
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                names.setdefault(parameter.name, []).append(parameter)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return None


def _untyped_components(accepted: dict[str, list[inspect.Parameter]], given: dict[str, object]) -> list[str]:
    """The names of ``given`` (``model.init_args`` of the layers: name -> a value) that hold a
    component (``class_path``, ``init_args``) and whose parameter in the subclass's ``__init__`` has
    no type, where the parent's has one: the parser would read it as plain data, never building the
    component, and merge the layers' values as mappings. Each as ``name: type`` of the parent."""
    untyped = []
    for name, value in given.items():
        parameters = accepted.get(name) or []
        if not isinstance(value, dict) or not {"class_path", "init_args"} & set(value) or not parameters:
            continue
        typed = [p.annotation for p in parameters if p.annotation not in (inspect.Parameter.empty, "Any")]
        if parameters[0].annotation is inspect.Parameter.empty and typed:
            shown = typed[0] if isinstance(typed[0], str) else inspect.formatannotation(typed[0])
            untyped.append(f"{name}: {shown}")
    return untyped


def keep_method_arguments(args: list[str]) -> list[str]:
    """The expanded arguments with a change of the method to a subclass of it made at its root.

    When a later ``-c`` layer (a recipe's own ``model: class_path:``, a fragment) or
    ``--model.class_path`` names a subclass of the method the earlier layers name (a user's
    ``my_methods.WarmUpEBM`` over ``lebm.models.LatentEBM``), every layer that names the earlier
    method names the subclass instead, so that the parser builds the subclass from the recipe's
    ``model.init_args``, all of them, interpolations included (the parser itself, seeing the class
    change, drops the arguments whose values it cannot check yet: the decoder, whose generator reads
    the prior's latent size). An argument of the recipe that the subclass does not take is refused
    here, in one line naming it. A change to a method that is not a subclass (another method) is left
    to the parser: the arguments of the same name carry over, the others are dropped."""
    # (index of the value, the class path it names, a -c layer's settings, the option before an = in one argument)
    layers: list[tuple[int, str, dict | None, str]] = []
    index = 0
    while index < len(args):
        option = _model_class_path_option(args, index)
        if option is not None:
            at, taken = option
            prefix, _, value = args[at].rpartition("=") if at == index else ("", "", args[at])
            layers.append((at, value, None, prefix))
            index += taken
            continue
        if args[index] in CONFIG_FLAGS and index + 1 < len(args):
            settings = _config_layer(args[index + 1])
            method = _method_of(settings) if settings is not None else None
            layers.append((index + 1, method or "", settings, ""))
            index += 2
            continue
        index += 1
    named = [class_path for _, class_path, _, _ in layers if class_path]
    if len(set(named)) < 2:
        return args
    from lebm.config import import_object

    try:
        final = import_object(named[-1])
        earlier = {class_path: import_object(class_path) for class_path in named[:-1]}
    except Exception:  # the parser names what does not import
        return args
    if not all(isinstance(cls, type) and issubclass(final, cls) for cls in [final, *earlier.values()]):
        return args  # another method: the parser's rule
    given: dict[str, object] = {}  # model.init_args of every layer, by name (a component's last value)
    for _, _, settings, _ in layers:
        model = settings.get("model") if settings else None
        init_args = model.get("init_args") if isinstance(model, dict) else None
        if isinstance(init_args, dict):
            given.update({name: value for name, value in init_args.items() if isinstance(name, str)})
    accepted = accepted_arguments(final)
    base = next(path for path in named if path != named[-1])
    name = final.__name__
    refused = [argument for argument in given if accepted is not None and argument not in accepted]
    if refused:
        parent = base.rsplit(".", 1)[-1]
        raise RecipeError(
            f"{named[-1]} does not take {', '.join(refused)}, which the recipe gives as model.init_args: add "
            f"{'them' if len(refused) > 1 else 'it'} to {name}.__init__ (a **kwargs passed on to super().__init__ "
            f"takes all of {parent}'s), or give {name} a recipe of its own that includes none of {parent}'s"
        )
    untyped = _untyped_components(accepted, given) if accepted is not None else []
    if untyped:
        raise RecipeError(
            f"{named[-1]}.__init__ names {', '.join(u.split(':')[0] for u in untyped)} without a type, so the "
            f"recipe's component{'s' if len(untyped) > 1 else ''} there would not be built: annotate "
            f"{'them' if len(untyped) > 1 else 'it'} as {base.rsplit('.', 1)[-1]} does ({', '.join(untyped)}), or "
            "leave them to a **kwargs passed on to super().__init__"
        )
    from lebm.cli.run_folder import run_record_folder

    changed = list(args)
    for at, class_path, settings, prefix in layers:
        if not class_path or class_path == named[-1]:
            continue
        if settings is None:  # an earlier --model.class_path
            changed[at] = f"{prefix}={named[-1]}" if prefix else named[-1]
            continue
        if Path(args[at]).is_file() and run_record_folder(args[at]) is not None:
            continue  # a run's record stays a file (its folder is the run's); its values are resolved ones
        settings = copy.deepcopy(settings)
        settings.pop(INCLUDE_KEY, None)
        settings["model"]["class_path"] = named[-1]
        changed[at] = yaml.safe_dump(settings, sort_keys=False)
    return changed
