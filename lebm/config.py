"""Record how components were built, so a checkpoint can rebuild them.

Every lebm component (samplers, priors, nets, decoders) derives from :class:`Configurable`.
At construction it records its class path and the arguments it was called with. A method's
LightningModule stores ``to_config(component)`` (a plain ``{"class_path", "init_args"}`` dict,
nested for sub-components) in its hyperparameters, and ``build(config)`` turns such a dict back
into the object. This is the same shape as LightningCLI's ``class_path``/``init_args`` YAML, so a
config written by hand, a recipe, and a checkpoint all speak one format.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

_CONFIG_ATTR = "_lebm_init_config"

#: Class paths that checkpoints of earlier lebm versions name, read as the current ones by
#: :func:`import_object` and :func:`to_config`: old module -> new module (every path below it
#: follows) and old ``module.Name`` -> new. The rows are
#: :data:`lebm.training.migrations.MOVED_CLASS_PATHS`, added when that module is imported (with
#: ``lebm.models``, so before any method is built from a checkpoint).
RENAMED_CLASS_PATHS: dict[str, str] = {}

#: Configs of the components being built by the ``lebm`` CLI (``{argument: {"class_path",
#: "init_args"}}``), so that a method can record components that cannot describe themselves.
_GIVEN_CONFIGS: contextvars.ContextVar[Callable[[], Mapping[str, Any] | None] | None] = contextvars.ContextVar(
    "lebm_given_configs", default=None
)


@functools.cache
def public_class_path(cls: type) -> str:
    """The shortest dotted path that imports ``cls``: ``lebm.models.LatentEBM`` rather than
    ``lebm.models.latent_ebm.LatentEBM``, so stored configs survive moving a class between files."""
    parts = cls.__module__.split(".")
    for end in range(1, len(parts) + 1):
        package = ".".join(parts[:end])
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        if getattr(module, cls.__qualname__, None) is cls:
            return f"{package}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


class Configurable:
    """Mixin: remember the class path and call arguments of the most-derived ``__init__``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        original_init = cls.__init__
        signature = inspect.signature(original_init)

        @functools.wraps(original_init)
        def recording_init(self: Any, *args: Any, **kw: Any) -> None:
            if not hasattr(self, _CONFIG_ATTR):  # outermost __init__ = most-derived class
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                arguments.pop(next(iter(signature.parameters)))  # self
                for name, param in signature.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(arguments.pop(name, {}))
                    elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                        arguments.pop(name, None)
                object.__setattr__(self, _CONFIG_ATTR, (type(self), arguments))
            original_init(self, *args, **kw)

        cls.__init__ = recording_init  # type: ignore[method-assign]


def to_config(obj: Any) -> Any:
    """Turn ``obj`` into plain data: components become ``{"class_path", "init_args"}`` dicts.

    Raises:
        TypeError: for an object that is neither plain data nor a :class:`Configurable`; such
            a component (a user's own ``nn.Module``, say) must be passed again when loading a
            checkpoint, e.g. ``Method.load_from_checkpoint(path, decoder=MyDecoder())``.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [to_config(item) for item in obj]
    if isinstance(obj, dict):  # a config already (a checkpoint's): its class paths as they are called now
        return {
            key: current_class_path(value) if key == "class_path" and isinstance(value, str) else to_config(value)
            for key, value in obj.items()
        }
    recorded = getattr(obj, _CONFIG_ATTR, None)
    if recorded is not None:
        kind, arguments = recorded
        return {"class_path": public_class_path(kind), "init_args": {k: to_config(v) for k, v in arguments.items()}}
    raise TypeError(
        f"cannot describe {type(obj).__name__} as a config: it is not an lebm component. "
        "Pass it again when loading, e.g. Method.load_from_checkpoint(path, <argument>=<object>)."
    )


def try_to_config(obj: Any) -> Any:
    """Like :func:`to_config` but returns ``None`` for objects that cannot be described."""
    try:
        return to_config(obj)
    except TypeError:
        return None


def unrecordable_part(obj: Any, path: str = "") -> str | None:
    """Where in ``obj`` :func:`to_config` gets stuck: e.g. ``"energy_net (MyEnergy)"``, or None
    when ``obj`` can be described."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return None
    if isinstance(obj, (list, tuple)):
        items: Any = enumerate(obj)
    elif isinstance(obj, dict):
        items = obj.items()
    else:
        recorded = getattr(obj, _CONFIG_ATTR, None)
        if recorded is None:
            return f"{path or 'it'} ({type(obj).__name__})"
        items = recorded[1].items()
    for key, value in items:
        found = unrecordable_part(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


@contextlib.contextmanager
def given_configs(configs: Mapping[str, Any] | Callable[[], Mapping[str, Any] | None] | None) -> Iterator[None]:
    """While building a method from a config, make each argument's config available to
    :func:`given_config` (the ``lebm`` CLI wraps model instantiation in this). ``configs`` may be a
    function that makes them: it is called at the first :func:`given_config` (only a component that
    cannot describe itself asks), at most once, so a build that never asks never makes them."""
    made: list[Mapping[str, Any] | None] = []

    def resolved() -> Mapping[str, Any] | None:
        if not callable(configs):
            return configs
        if not made:
            made.append(configs())
        return made[0]

    token = _GIVEN_CONFIGS.set(resolved)
    try:
        yield
    finally:
        _GIVEN_CONFIGS.reset(token)


def given_config(argument: str) -> Any:
    """The config the method argument ``argument`` is being built from, or None."""
    found = _GIVEN_CONFIGS.get()
    configs = None if found is None else found()
    return None if configs is None else configs.get(argument)


def current_class_path(path: str) -> str:
    """``path`` as lebm calls it now (:data:`RENAMED_CLASS_PATHS`): a moved ``module.Name``
    rewritten, or its longest moved module prefix replaced; any other path unchanged."""
    if path in RENAMED_CLASS_PATHS:
        return RENAMED_CLASS_PATHS[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in RENAMED_CLASS_PATHS:
            return ".".join([RENAMED_CLASS_PATHS[prefix], *parts[cut:]])
    return path


class MissingClass(ValueError):
    """A class path whose module or name does not exist here (another lebm version wrote it, or a
    module of the user's that is not installed); ``class_path`` is the path as it was given,
    ``read_as`` the path it was read as (:func:`current_class_path`: the same unless it moved)."""

    def __init__(self, message: str, class_path: str, read_as: str | None = None) -> None:
        super().__init__(message)
        self.class_path = class_path
        self.read_as = read_as or class_path

    @property
    def named(self) -> str:
        """The class as a message names it: ``lebm.x.Old (read as lebm.y.Old)`` when it was read as another path."""
        return self.class_path if self.read_as == self.class_path else f"{self.class_path} (read as {self.read_as})"


def import_object(class_path: str) -> Any:
    """Import ``package.module.Name`` and return ``Name`` (a path that a checkpoint of an earlier
    lebm version names is read as the current one: :func:`current_class_path`).

    Raises:
        MissingClass: the module or the name does not exist (a ``ValueError``).
        ValueError: the path is not dotted, or its module fails to import for another reason.
    """
    current = current_class_path(class_path)
    module_name, _, name = current.rpartition(".")
    if not module_name:
        raise ValueError(f"class_path {class_path!r} must be a dotted path like 'lebm.samplers.Langevin'")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        read_as = f" (read as {current!r})" if current != class_path else ""
        message = f"cannot import {class_path!r}{read_as}: {error}"
        missing = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
        missing_module = bool(missing) and f"{module_name}.".startswith(f"{missing}.")
        if isinstance(error, AttributeError) or missing_module:
            raise MissingClass(message, class_path, current) from error
        raise ValueError(message) from error


def build(config: Any) -> Any:
    """Inverse of :func:`to_config`: instantiate every ``{"class_path", "init_args"}`` dict."""
    if isinstance(config, dict):
        if "class_path" in config:
            cls = import_object(config["class_path"])
            init_args = {k: build(v) for k, v in (config.get("init_args") or {}).items()}
            return cls(**init_args)
        return {key: build(value) for key, value in config.items()}
    if isinstance(config, list):
        return [build(item) for item in config]
    return config
