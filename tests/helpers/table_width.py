"""How wide the documentation site draws a Markdown table, estimated from the page's text.

A table the theme (MkDocs Material) cannot fit scrolls sideways inside its box, and a reader sees
its first columns only. It fits when its narrowest layout (every cell wrapped at each space, as
the browser's min-content width) is no wider than the page's content column. The estimate: per
column the widest unbreakable word of its cells at the table's font (header cells bold, code
breakable anywhere, as the theme's ``word-break``), plus the cells' padding, at least the theme's
minimum column width; summed. Measured against headless Chromium on the site's 151 tables of 2026-11-27 it is
within 5 pixels on average and at most 27 pixels narrower than the real table (bold words), so a
check keeps :data:`MARGIN_PX` in hand. The content column at a 1280-pixel screen is measured
likewise, for each set of hidden sidebars."""

from __future__ import annotations

import re
from pathlib import Path

#: Width in pixels of one character of a table cell at a 1280-pixel screen (the theme's 0.64rem
#: table font over a 20-pixel rem), and of a bold one (header cells, ``**...**``).
CHAR_PX, BOLD_CHAR_PX = 6.0, 6.6
#: A cell's left and right padding together, and the theme's minimum column width (5rem).
PADDING_PX, MIN_COLUMN_PX = 32.0, 100.0
#: What the estimate may fall short of the drawn table by, at most (measured: 27 pixels).
MARGIN_PX = 30.0
#: The width a table has at a 1280-pixel screen, by the sidebars the page shows: both, one (the
#: navigation, the table of contents hidden or integrated into it; the two are equally wide), or none.
CONTENT_PX = {"both sidebars": 688.0, "navigation only": 938.0, "no sidebar": 1188.0}

_FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1", re.S | re.M)
_ROW = re.compile(r"^\s*\|.*\|\s*$")
_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_CODE_TAG = re.compile(r"<code>(.*?)</code>")
_TAG = re.compile(r"<(?!wbr>|br>)[^>]+>")
_SPACES = re.compile(r"<wbr>|<br>|[ \-/]")


def split_cells(line: str) -> list[str]:
    """The cells of a table row, ``\\|`` and a ``|`` inside backticks kept in their cell."""
    text = line.strip()
    text = text[1:-1] if text.startswith("|") and text.endswith("|") else text
    cells, current, in_code, index = [], "", False, 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] == "|":
            current, index = current + "|", index + 2
            continue
        in_code = not in_code if char == "`" else in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
        index += 1
    return [*cells, current.strip()]


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table of a Markdown page outside code blocks, in order: rows of cells, the
    header first, the separator row left out."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in _FENCE.sub("", text).splitlines():
        if _SEPARATOR.match(line) and current:
            continue
        if _ROW.match(line):
            current.append(split_cells(line))
        elif current:
            tables.append(current)
            current = []
    return [*tables, current] if current else tables


def unbreakable_words(cell: str, header: bool) -> list[tuple[str, bool]]:
    """``(word, bold)`` for each run of a cell the browser cannot break (a code span breaks
    anywhere, so it adds a character at most)."""
    cell = _CODE_TAG.sub(lambda match: f"`{match.group(1)}`", _LINK.sub(r"\1", cell))
    words = []
    for part in re.split(r"(`[^`]*`)", _TAG.sub("", cell)):
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            words.append(("x", header))
            continue
        bold = False
        for piece in re.split(r"(\*\*)", part):
            if piece == "**":
                bold = not bold
                continue
            words += [(word, bold or header) for word in _SPACES.split(piece) if word]
    return words


def column_widths(table: list[list[str]]) -> list[float]:
    """Each column's narrowest drawn width in pixels (see the module docstring)."""
    widths = [0.0] * max(len(row) for row in table)
    for row_index, row in enumerate(table):
        for column, cell in enumerate(row[: len(widths)]):
            for word, bold in unbreakable_words(cell, header=row_index == 0):
                widths[column] = max(widths[column], len(word) * (BOLD_CHAR_PX if bold else CHAR_PX))
    return [max(MIN_COLUMN_PX, width + PADDING_PX) for width in widths]


def narrowest_width(table: list[list[str]]) -> float:
    """The table's narrowest drawn width in pixels (its columns' and the border)."""
    return sum(column_widths(table)) + 2.0


def hidden_sidebars(page: Path) -> set[str]:
    """What a page's front matter hides (``hide: [navigation, toc]``)."""
    text = page.read_text()
    if not text.startswith("---\n"):
        return set()
    front = text.split("---\n", 2)[1]
    return set(re.findall(r"^\s+- (\w+)\s*$", front.split("hide:", 1)[1], re.M)) if "hide:" in front else set()


def content_width(page: Path, toc_integrated: bool) -> float:
    """The width a table of ``page`` has at a 1280-pixel screen (:data:`CONTENT_PX`)."""
    hidden = hidden_sidebars(page)
    toc_shown = "toc" not in hidden and not toc_integrated
    sidebars = int("navigation" not in hidden) + int(toc_shown)
    if sidebars == 0:
        return CONTENT_PX["no sidebar"]
    return CONTENT_PX["navigation only"] if sidebars == 1 else CONTENT_PX["both sidebars"]
