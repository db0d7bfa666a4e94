"""A user's subclass of a method, stored and rebuilt with its own arguments.

A method stores its hyperparameters from its own ``__init__`` (``save_component_hyperparameters
(locals())``); a subclass's ``__init__`` that calls it through ``super().__init__`` is further up
the call stack. :func:`subclass_arguments` reads the explicit arguments of those ``__init__`` frames
of the same object, so that they are stored beside the method's own (as Lightning's
``save_hyperparameters`` collects the ``__init__`` frames above it). :func:`init_without_class_path`
keeps the checkpoint's ``_class_path`` entry from an ``__init__`` that takes ``**kwargs`` while
Lightning rebuilds the model from the stored hyperparameters (Lightning hands every stored entry to
such an ``__init__``, which would pass it on to the method's, which takes no ``_class_path``).
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: The hyperparameter naming the method's class: read by LightningCLI and ``lebm.load``, never an argument.
CLASS_PATH_KEY = "_class_path"

_PATCHING = threading.RLock()


def subclass_arguments(method: Any, frame: types.FrameType | None) -> dict[str, Any]:
    """The explicit arguments (neither ``*args`` nor ``**kwargs``) of the ``__init__`` frames of
    ``method`` above ``frame`` (the frame of the method's own ``__init__``), innermost first. A name
    two of them take keeps the innermost one's value: the value given to the ``__init__`` that uses
    it (a method reads its settings from ``hparams``). The walk goes on through frames whose first
    argument is ``method`` (a decorator around an ``__init__``) and stops at the first frame of
    anything else: the code that built ``method``. Empty where Python gives no frames."""
    found: dict[str, Any] = {}
    caller = None if frame is None else frame.f_back
    try:
        while caller is not None:
            names, _, _, values = inspect.getargvalues(caller)
            if not names or values.get(names[0]) is not method:
                break
            if caller.f_code.co_name == "__init__":
                for name in names[1:]:
                    if name in values and name not in found:
                        found[name] = values[name]
            caller = caller.f_back
    finally:
        del caller, frame  # frames hold their locals: no reference cycle through this function
    return found


@contextmanager
def init_without_class_path(cls: type) -> Iterator[None]:
    """While the block runs, an ``__init__`` of ``cls`` that takes ``**kwargs`` is called without a
    ``_class_path`` keyword (the rest as given); an ``__init__`` without ``**kwargs`` is left as it is
    (Lightning gives it only the arguments it names). The class is patched under a lock held until it
    is restored after the block: concurrent loads wait for each other, and a nested load finds it
    patched already."""
    if not inspect.getfullargspec(cls.__init__).varkw:  # type: ignore[misc]
        yield
        return
    with _PATCHING:
        if getattr(cls.__init__, "__drops_class_path__", False):  # type: ignore[misc]
            yield
            return
        own = cls.__dict__.get("__init__")
        original = cls.__init__  # type: ignore[misc]

        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807 (the class's __init__)
            kwargs.pop(CLASS_PATH_KEY, None)
            original(self, *args, **kwargs)

        __init__.__drops_class_path__ = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[misc]
        try:
            yield
        finally:
            if own is None:
                del cls.__init__  # type: ignore[misc]
            else:
                cls.__init__ = own  # type: ignore[misc]
