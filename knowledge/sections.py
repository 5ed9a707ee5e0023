"""A document's stretches under their heading paths, and Markdown cut into them at its headings.

Every reader in knowledge/ hands back ``Section``s; DOCX, PPTX, EPUB and ODT reach them through the
Markdown their converters write (knowledge/formats.py), plain Markdown files through loaders.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from knowledge.bounds import DEFAULT_LIMITS, ParseLimits, SkipFile, WorkClock, clean_text

_CHECK_EVERY = 4096  # tokens between two looks at the clock
_NEWLINE = re.compile(r"\r\n?|\n")  # how markdown-it splits lines (str.splitlines also splits at U+2028, FF ...)


@dataclass
class Section:
    """A stretch of a document under one heading path."""

    text: str
    heading: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def markdown_sections(
    text: str, limits: ParseLimits = DEFAULT_LIMITS, clock: WorkClock | None = None
) -> tuple[str, list[Section]]:
    """Split Markdown at its headings (not at '#' lines inside code blocks); return (title, sections).

    Only the block structure is parsed: sections are cut from the raw lines, so inline parsing (links,
    emphasis) would be work for nothing, and it is where markdown-it is slowest (2 MB of "[" took 25 s).
    """
    from markdown_it import MarkdownIt

    clock = clock or WorkClock(limits)
    text = clean_text(text)
    lines = _NEWLINE.split(text)
    if len(lines) > limits.markdown_lines:
        raise SkipFile(
            f"Markdown has {len(lines):,} lines, over the {limits.markdown_lines:,}-line limit for Markdown"
            " (each line may be a block to parse); split it, or name it .txt to ingest it as plain text"
        )
    tokens = MarkdownIt("commonmark").disable("inline").parse(text)
    clock.check("the end of parsing")
    headings: list[tuple[int, int, int, str]] = []  # (start line, end line, level, text)
    for index, token in enumerate(tokens):
        if index % _CHECK_EVERY == 0:
            clock.check(f"token {index:,}")
        if token.type == "heading_open" and token.map:
            inline = tokens[index + 1]
            headings.append((token.map[0], token.map[1], int(token.tag[1]), inline.content.strip()))
    title = next((h[3] for h in headings if h[2] == 1), "")
    sections: list[Section] = []
    path: list[tuple[int, str]] = []

    def add(body_lines: list[str]) -> None:
        body = "\n".join(body_lines).strip()
        if body:
            sections.append(Section(text=body, heading=" > ".join(t for _, t in path)))

    cursor = 0
    for start, end, level, heading in headings:
        add(lines[cursor:start])
        path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, heading)]
        cursor = end
    add(lines[cursor:])
    return title, sections
