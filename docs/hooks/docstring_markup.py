"""Griffe extension: our docstrings' Sphinx markup as mkdocstrings should show it.

The docstrings are Google-style with reST-ish markup. Double backticks read as code in Markdown
too, and an indented block after a blank line is a code block in both, but three Sphinx habits
need help, all handled as griffe loads the source (the files are not changed):

- a role such as ``:class:`~lebm.models.base.Method``` would show its ``:class:`` prefix: the
  prefix is dropped and the target stays as inline code (a leading ``~`` keeps only the last
  dotted part, as Sphinx shows it);
- a paragraph ending in ``::`` introduces a literal block: as Sphinx does, ``text::`` shows as
  ``text:`` and a ``::`` after a space, or on its own line, disappears;
- ``#:`` comment lines just above an assignment document that attribute (Sphinx autodoc's
  convention for constants and class attributes); griffe reads only a string literal below the
  assignment, so the comment becomes the attribute's docstring.

mkdocstrings loads this extension (``extensions:`` in mkdocs.yml), and so does the
``public_docstrings`` hook, so both see the same docstrings.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const):`(~?)([^`]+)`")
# "::" ending a line that a blank line follows (reST's literal-block marker)
LITERAL_MARKER = re.compile(r"(\S?)([ \t]*)::[ \t]*$(?=\n[ \t]*(?:\n|$))", re.MULTILINE)


def sphinx_to_markdown(text: str) -> str:
    """``:role:`target``` -> ```target```, ``:role:`~a.b.C``` -> ```C```, and reST's ``text::``
    before a literal block -> ``text:`` (``text ::`` -> ``text``)."""

    def code(match: re.Match[str]) -> str:
        tilde, target = match.groups()
        return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"

    def marker(match: re.Match[str]) -> str:
        before, space = match.groups()
        return f"{before}:" if before and not space else before

    return LITERAL_MARKER.sub(marker, ROLE.sub(code, text))


def comment_docstring(lines: list[str], lineno: int) -> tuple[str, int] | None:
    """The ``#:`` comment block just above line ``lineno`` (1-based): its text and first line."""
    start = lineno - 1  # index of the assignment's line
    while start > 0 and lines[start - 1].lstrip().startswith("#:"):
        start -= 1
    if start == lineno - 1:
        return None
    text = "\n".join(line.lstrip()[2:].removeprefix(" ") for line in lines[start : lineno - 1])
    return text, start + 1


class SphinxMarkup(griffe.Extension):
    """Sphinx markup of every docstring as Markdown; ``#:`` comments as attribute docstrings."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Every object griffe builds (module, class, function, attribute): its docstring as Markdown."""
        if obj.docstring is not None:
            obj.docstring.value = sphinx_to_markdown(obj.docstring.value)

    def on_attribute_instance(self, *, attr: griffe.Attribute, agent: Any, **kwargs: Any) -> None:
        """An attribute without a docstring takes the ``#:`` comment above its assignment."""
        if attr.docstring is not None or attr.lineno is None or not isinstance(agent, griffe.Visitor):
            return
        found = comment_docstring(agent.code.splitlines(), attr.lineno)
        if found is None:
            return
        text, first = found
        attr.docstring = griffe.Docstring(
            sphinx_to_markdown(text),
            lineno=first,
            endlineno=attr.lineno - 1,
            parent=attr,
            parser=agent.docstring_parser,
            parser_options=agent.docstring_options,
        )
