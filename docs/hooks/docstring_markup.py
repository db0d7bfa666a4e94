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

One Markdown habit needs help too: the summary tables of the reference (a package's classes, a
class's methods) show the first *line* of a docstring, and a summary sentence wrapped over two
lines would be cut mid-sentence. The first paragraph is rewrapped: its first sentence on the first
line, the rest of the paragraph on the second (Markdown renders the paragraph the same), so a
summary table shows the first sentence whole.

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


# A line that ends the summary paragraph although it is not blank: a Google-style section title
# ("Args:"), a list item, a table row, a code fence, a doctest or an indented (literal) block.
PARAGRAPH_BREAK = re.compile(r"^(?:\s|[-*+] |\d+[.)] |\||```|~~~|>>>|[A-Z]\w*(?: \w+)?:\s*$)")
# The end of a sentence: ".", "!" or "?" (not after an abbreviation), a space, then a capital or code.
SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bcf)(?<!\bal)(?<!\bvs)[.!?](?= +[A-Z`])")
OPENING, CLOSING = "([{", ")]}"


def first_sentence_end(paragraph: str) -> int | None:
    """Where the first sentence of ``paragraph`` ends (after its full stop), or None for one sentence.

    A full stop inside brackets or inline code (``x.y. Z``) does not end a sentence.
    """
    for match in SENTENCE_END.finditer(paragraph):
        before = paragraph[: match.start()]
        depth = sum(before.count(c) for c in OPENING) - sum(before.count(c) for c in CLOSING)
        if depth <= 0 and before.count("`") % 2 == 0:
            return match.end()
    return None


def summary_on_one_line(text: str) -> str:
    """``text`` with its first paragraph's first sentence on the first line and the rest of that
    paragraph on the second (the other lines unchanged)."""
    lines = text.split("\n")
    end = 1
    while end < len(lines) and lines[end].strip() and not PARAGRAPH_BREAK.match(lines[end]):
        end += 1
    if not lines[0].strip() or PARAGRAPH_BREAK.match(lines[0]):
        return text
    paragraph = " ".join(line.strip() for line in lines[:end])
    split = first_sentence_end(paragraph)
    head = [paragraph] if split is None else [paragraph[:split], paragraph[split:].strip()]
    return "\n".join([*head, *lines[end:]])


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
        """Every object griffe builds (module, class, function, attribute): its docstring as Markdown,
        the summary paragraph on one line."""
        if obj.docstring is not None:
            obj.docstring.value = summary_on_one_line(sphinx_to_markdown(obj.docstring.value))

    def on_attribute_instance(self, *, attr: griffe.Attribute, agent: Any, **kwargs: Any) -> None:
        """An attribute without a docstring takes the ``#:`` comment above its assignment."""
        if attr.docstring is not None or attr.lineno is None or not isinstance(agent, griffe.Visitor):
            return
        found = comment_docstring(agent.code.splitlines(), attr.lineno)
        if found is None:
            return
        text, first = found
        attr.docstring = griffe.Docstring(
            summary_on_one_line(sphinx_to_markdown(text)),
            lineno=first,
            endlineno=attr.lineno - 1,
            parent=attr,
            parser=agent.docstring_parser,
            parser_options=agent.docstring_options,
        )
