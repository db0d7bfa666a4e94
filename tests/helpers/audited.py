"""Tests only: record a test's own method class as lebm records its audited methods.

Recorded iterations replay lebm's own audited classes only, and only while every function their
iteration runs is lebm's, torch's or Lightning's (:mod:`lebm.recording.audit`). A test of the
recorder's refusals (a host read, a tensor made from a number, a scheduler stepped inside the
iteration) needs an iteration of its own that does the wrong thing; :func:`audited` lets that
class through both allow-lists, for the test session only. No user route reaches this: it changes
lebm's internals from the test process.
"""

from __future__ import annotations

from typing import TypeVar

from lebm.recording import audit

T = TypeVar("T", bound=type)

#: The test modules whose code a recording may run (those that define an :func:`audited` class).
_TEST_MODULES: set[str] = set()
_lebms_verdict = audit.trusted_code


def _trusted_code(module: str | None, file: str) -> bool:
    return module in _TEST_MODULES or _lebms_verdict(module, file)


audit.trusted_code = _trusted_code  # the watch reads it through the module (audit.CodeWatch)


def audited(kind: T) -> T:
    """Record ``kind``'s iterations as if lebm had audited it, its module's code trusted (a class
    decorator, for tests of the recorder)."""
    audit.AUDITED.add(kind)
    _TEST_MODULES.add(kind.__module__)
    return kind
