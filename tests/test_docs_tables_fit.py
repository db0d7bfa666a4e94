"""Every table of the documentation site fits a 1280-pixel screen (device: CPU, no browser): its
narrowest layout, estimated from the page's Markdown (``tests/helpers/table_width.py``, measured
against headless Chromium), is no wider than the content column the page's sidebars leave."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.table_width import MARGIN_PX, content_width, markdown_tables, narrowest_width

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted(path for path in (REPO / "docs").rglob("*.md") if "templates" not in path.parts)


def toc_integrated() -> bool:
    """Whether the site's theme puts each page's table of contents into the navigation."""
    return re.search(r"^\s+- toc\.integrate\b", (REPO / "mkdocs.yml").read_text(), re.M) is not None


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(REPO / "docs")))
def test_every_table_of_a_page_fits_a_1280_pixel_screen(page: Path) -> None:
    available = content_width(page, toc_integrated()) - MARGIN_PX
    too_wide = [
        f"the table headed {' | '.join(table[0])[:80]!r}: {narrowest_width(table):.0f} px"
        for table in markdown_tables(page.read_text())
        if narrowest_width(table) > available
    ]
    assert not too_wide, f"{page.relative_to(REPO)} has tables wider than its {available:.0f} px: {too_wide}"


def test_the_estimate_reads_words_code_and_links_as_the_browser_breaks_them() -> None:
    """A long word widens its column; a code span of the same length (the theme breaks code
    anywhere) or a long link target does not; a bold word is wider than a plain one."""
    page = "text\n\n| a | b |\n|---|---|\n| {first} | {second} |\n\nmore\n"
    word, code, link = "x" * 40, "`" + "x" * 40 + "`", "[x](" + "u" * 80 + ")"
    (plain,) = markdown_tables(page.format(first=word, second="y"))
    assert len(plain) == 2 and plain[1] == [word, "y"]
    (with_code,) = markdown_tables(page.format(first=code, second="y"))
    (with_link,) = markdown_tables(page.format(first=link, second="y"))
    (bold,) = markdown_tables(page.format(first=f"**{word}**", second="y"))
    (short,) = markdown_tables(page.format(first="x", second="y"))
    assert narrowest_width(with_code) == narrowest_width(with_link) == narrowest_width(short)
    assert narrowest_width(short) < narrowest_width(plain) < narrowest_width(bold)
