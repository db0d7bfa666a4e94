"""What a run logs, known before it starts: a callback that ``monitor``s a name nothing logs is refused.

``ModelCheckpoint(monitor=...)`` and ``EarlyStopping(monitor=...)`` read ``trainer.callback_metrics``,
which holds what the method and the callbacks give ``self.log``. A name that nothing logs (a typo,
``val/loss`` for a method that logs ``val/nll``) would surface only after the first validation, as a
traceback, or, for a checkpoint without validation, as a warning and no "best" checkpoint at all.

Every method and metric callback of lebm declares the names it logs in ``logged_metric_names``
(exact names, or patterns with ``*`` for families such as a chain's first and last energies), so
:func:`check_monitors` can refuse such a run before it starts, in one line that lists the names the
run logs. Parts that declare nothing (a user's own method or callback) make the run's names unknown:
then nothing is refused here.

Duck-typed on purpose: this module reads the callbacks' ``monitor`` and ``logged_metric_names``
attributes, and imports no callback.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

#: Hooks that may call ``self.log``: a subclass that overrides one of them below the class that
#: declared ``logged_metric_names`` may log names the declaration does not know.
LOGGING_HOOKS = ("training_step", "validation_step", "test_step", "evaluation_step", "log_dict", "log")
#: Modules whose callbacks log nothing a callback can monitor unless they say so
#: (Lightning's own log through the loggers, not ``self.log``).
KNOWN_MODULES = ("lebm.", "lightning.", "pytorch_lightning.")
#: Names every fit has: ``ModelCheckpoint`` ranks by them too (``monitor="step"`` keeps the latest).
ALWAYS_LOGGED = ("epoch", "step")
#: Name prefixes of the evaluation stages that a ``fit`` does not run.
OTHER_STAGES = {"fit": ("test/", "predict/"), "validate": ("train/", "test/", "predict/")}


class MonitorNotLogged(ValueError):
    """A callback monitors a metric that the run does not log."""


def _overrides_logging_below(cls: type, declarer: type) -> bool:
    """Whether a class between ``cls`` and ``declarer`` (in ``cls``'s MRO) defines a logging hook."""
    for klass in cls.__mro__:
        if klass is declarer:
            return False
        if any(name in vars(klass) for name in LOGGING_HOOKS) or any(name.startswith("on_") for name in vars(klass)):
            return True
    return False


def declared_names(part: Any) -> tuple[str, ...] | None:
    """The names ``part`` (a method or a callback) logs with ``self.log``; None when unknown.

    A part's ``logged_metric_names`` counts when the class that declared it (or one of its
    subclasses that change no logging hook) is the part's class; a callback of lebm or Lightning
    without the attribute logs nothing; anything else is unknown.
    """
    cls = type(part)
    declarer = next((klass for klass in cls.__mro__ if "logged_metric_names" in vars(klass)), None)
    if declarer is not None and not _overrides_logging_below(cls, declarer):
        names = part.logged_metric_names
        return None if names is None else tuple(names)
    if declarer is None and cls.__module__.startswith(KNOWN_MODULES) and not hasattr(part, "training_step"):
        return ()  # a callback of lebm's or Lightning's that logs nothing monitorable
    return None


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``patterns`` (``*`` matches any run of characters)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def run_metric_names(model: Any, callbacks: Iterable[Any], stage: str = "fit") -> list[str] | None:
    """Every name (or pattern) the run logs in ``stage``, sorted; None when a part does not say."""
    names: set[str] = set(ALWAYS_LOGGED)
    for part in (model, *callbacks):
        declared = declared_names(part)
        if declared is None:
            return None
        names.update(declared)
    skipped = OTHER_STAGES.get(stage, ())
    return sorted(name for name in names if not name.startswith(skipped))


def monitors(callbacks: Iterable[Any]) -> list[tuple[Any, str]]:
    """``(callback, monitored name)`` for every callback with a ``monitor`` set."""
    return [
        (callback, callback.monitor) for callback in callbacks if isinstance(getattr(callback, "monitor", None), str)
    ]


def check_monitors(model: Any, callbacks: Iterable[Any], stage: str = "fit") -> None:
    """Raise :class:`MonitorNotLogged` (one line) when a callback monitors a name the run does not
    log in ``stage``; nothing when every monitored name is logged or when the run's names are unknown."""
    callbacks = list(callbacks)
    watched = monitors(callbacks)
    if not watched:
        return
    names = run_metric_names(model, callbacks, stage)
    if names is None:
        return
    for callback, name in watched:
        if not matches(name, names):
            raise MonitorNotLogged(
                f"{type(callback).__name__}(monitor={name!r}): {type(model).__name__} and its callbacks do not "
                f"log {name!r}; they log: {', '.join(names)}"
            )
