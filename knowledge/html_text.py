"""HTML as people publish it: the page's main content, cut into sections at its headings.

Three rules, each because of what exported manuals and web pages look like:

- **Inline text stays in its sentence.** Text is joined across inline elements (``<a>``, ``<code>``,
  ``<b>`` ...) as a browser shows it; only block elements (paragraphs, list items, table rows, ``<pre>``)
  start a new line, and ``<pre>`` keeps its own line breaks.
- **The main content, without the page's furniture.** Where the page marks its main content (HTML's
  ``<main>`` or ARIA ``role="main"``, as Sphinx, MkDocs and most generators do), only that is read.
  Elsewhere navigation, banners, footers and sidebars go by their landmarks (``<nav>``, a top-level
  ``<header>``/``<footer>``, ``<aside>``, the ARIA roles), and on a page without any landmark the
  blocks that trafilatura (a maintained main-content extractor) judges boilerplate are dropped.
- **Permalink anchors are not text**: the "¶" or "#" link a generator puts after each heading.

Trafilatura judges, it does not cut: its own output flattens code blocks and merges short headings
into paragraphs, so Ladder keeps its own walk (bounded, linear, checked against the clock) for the
structure and uses trafilatura's text only to decide which of the walk's blocks to keep.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from knowledge.bounds import DEFAULT_LIMITS, ParseLimits, SkipFile, WorkClock, clean_text

log = logging.getLogger(__name__)

_HEADING_TAG = re.compile(r"^h[1-6]$")
# BeautifulSoup keeps a Python object per node (about 450 B each, ~7 s per million on one core here):
# a start tag, a comment, a doctype, a CDATA section or a processing instruction each makes one, and
# the text between two of them one more. So a page is refused, before it is parsed, when it has more
# "<" followed by a letter, "!" or "?" than ParseLimits.html_nodes. End tags make no node.
_MARKUP = re.compile(rb"<[A-Za-z!?]")
_DROPPED_TAGS = {"script", "style", "noscript", "template", "svg", "button", "select", "iframe", "object"}
# Landmarks that are the page's furniture, not its content (HTML's sectioning elements and ARIA roles).
_FURNITURE_TAGS = {"nav", "aside"}
_TOP_LEVEL_FURNITURE = {"header", "footer"}  # inside an <article> or <section> they belong to it
_FURNITURE_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search"}
_SECTIONING = {"article", "section", "main"}
_PERMALINK_TEXT = {"", "¶", "#", "§", "🔗", "link"}
# Blocks that start a paragraph (a blank line before and after) and those that start a line.
_PARAGRAPH_BLOCKS = {
    "p", "div", "pre", "table", "ul", "ol", "dl", "blockquote", "section", "article", "main", "figure",
    "figcaption", "form", "fieldset", "details", "summary", "address", "hr", "center",
}  # fmt: skip
_LINE_BLOCKS = {"li", "dt", "dd", "br", "caption", "legend", "option"}
_CELL_TAGS = {"td", "th"}
_CHECK_EVERY = 4096  # nodes between two looks at the clock
_SPACE = re.compile(r"\s+")
_WORDS = re.compile(r"\w+")
TRAFILATURA_MAX_NODES = 20_000  # trafilatura is not checked against the clock: ~1 s at this size here
_KEEP_SHARE = 0.5  # a block is content when half of its word triples are in trafilatura's text
# Marks in the walk (cleaned text has no NUL): paragraph, line, cell, <pre>, table row start and end
_PARA, _LINE, _CELL, _PRE, _ROW, _ROW_END = "\x00P", "\x00L", "\x00C", "\x00R", "\x00T", "\x00E"


@dataclass
class Block:
    """One paragraph, line or heading of the page, in reading order."""

    text: str
    level: int = 0  # 1-6 for a heading, 0 for text
    breaks: str = "\n\n"  # what separates it from the block before it
    kept: bool = True


def check_html_nodes(data: bytes, limit: int) -> None:
    """SkipFile when the page has more markup that makes a node (start tags, comments, doctypes,
    CDATA, processing instructions) than ``limit``; a count of "<" answers most pages at C speed."""
    if data.count(b"<") <= limit:
        return
    for count, _ in enumerate(_MARKUP.finditer(data), start=1):
        if count > limit:
            raise SkipFile(
                f"HTML has over {limit:,} tags, comments and other markup, over the {limit:,}-node limit"
                " for HTML; too many to parse safely"
            )


def html_sections(
    data: bytes, limits: ParseLimits = DEFAULT_LIMITS, clock: WorkClock | None = None
) -> tuple[str, list[tuple[str, str]]]:
    """(title, [(heading path, text)]) of a page's main content, split at h1-h6.

    One pass over the parsed tree, without changing it: BeautifulSoup's ``replace_with`` and
    ``decompose`` look a tag up among its siblings, which made a page of many headings quadratic.
    """
    from bs4 import BeautifulSoup

    clock = clock or WorkClock(limits)
    check_html_nodes(data, limits.html_nodes)
    try:
        soup = BeautifulSoup(data, "lxml")
    except Exception:  # lxml missing or refused the input: the stdlib parser is slower but lenient
        soup = BeautifulSoup(data, "html.parser")
    clock.check("the end of parsing")
    title_tag = soup.find("title")
    if title_tag is not None and title_tag.find_parent(list(_DROPPED_TAGS)) is not None:
        title_tag = None  # an icon's <svg><title>, not the page's
    title = inline_text(title_tag) if title_tag else ""
    main = _main_landmark(soup)
    blocks = _blocks(main or soup.body or soup, skip=title_tag, clock=clock)
    if main is None:
        _judge_with_trafilatura(data, blocks)
    if not title:
        title = next((b.text for b in blocks if b.level == 1), "")
    return title, _sections(blocks)


def inline_text(tag: Any) -> str:
    """A tag's visible text on one line, inline elements joined as a browser shows them."""
    return " ".join("".join(s for s in _walk(tag, headings=False) if not s.startswith("\x00")).split())


def _main_landmark(soup: Any) -> Any:
    """The element the page marks as its main content, or None."""
    found = soup.find("main")
    if found is None:
        found = soup.find(attrs={"role": "main"})
    return found


def _is_furniture(tag: Any, in_section: bool) -> bool:
    if tag.name in _FURNITURE_TAGS or (tag.name in _TOP_LEVEL_FURNITURE and not in_section):
        return True
    return tag.get("role") in _FURNITURE_ROLES or tag.has_attr("hidden")


def _is_permalink(tag: Any) -> bool:
    """The "¶" link a generator puts after a heading or a definition: it points into the page itself."""
    if tag.name != "a" or not str(tag.get("href") or "").startswith("#"):
        return False
    return tag.get_text().strip().lower() in _PERMALINK_TEXT


def _walk(root: Any, *, skip: Any = None, clock: WorkClock | None = None, headings: bool = True) -> Iterator[str]:
    """Visible strings under ``root`` in document order, with boundary marks where blocks start and end
    and each outermost h1-h6 as one mark ``\\x00H<level><text>``. An explicit stack, so nesting depth
    costs no recursion; whitespace collapsed outside ``<pre>``. Inside a table row only the cells are
    blocks: a row stays one line, whatever its cells hold."""
    from bs4 import CData, NavigableString, Tag

    stack: list[tuple[Iterator[Any], str, bool, bool, bool]] = [(iter(root.contents), "", False, False, False)]
    pre = sections = rows = steps = 0
    while stack:
        child = next(stack[-1][0], None)
        steps += 1
        if clock is not None and steps % _CHECK_EVERY == 0:
            clock.check(f"node {steps:,}")
        if child is None:
            _, end_mark, is_pre, is_section, is_row = stack.pop()
            pre, sections, rows = pre - is_pre, sections - is_section, rows - is_row
            if end_mark:
                yield end_mark
        elif isinstance(child, Tag):
            name = child.name
            if name in _DROPPED_TAGS or child is skip or _is_furniture(child, sections > 0) or _is_permalink(child):
                continue
            if headings and _HEADING_TAG.match(name):  # a heading inside a heading is its text (no recursion)
                yield f"\x00H{name[1]}{inline_text(child)}"
                continue
            is_row, is_pre, is_section = name == "tr", name == "pre" and not rows, name in _SECTIONING
            mark = _PARA if name in _PARAGRAPH_BLOCKS else _LINE if name in _LINE_BLOCKS else ""
            if rows and mark:
                mark = ""  # a paragraph or a <br> inside a cell: the row stays one line
                yield " "
            if is_row:
                mark = _ROW_END
                yield _ROW
            elif mark or name in _CELL_TAGS:
                yield _PRE if is_pre else mark or _CELL
            pre, sections, rows = pre + is_pre, sections + is_section, rows + is_row
            stack.append((iter(child.contents), mark, is_pre, is_section, is_row))
        elif type(child) in (NavigableString, CData):  # not comments, doctypes, script or style text
            text = clean_text(str(child))
            yield text if pre else _SPACE.sub(" ", text)


def _blocks(root: Any, *, skip: Any, clock: WorkClock) -> list[Block]:
    """The page's paragraphs, lines and headings; a table row as a Markdown row ``| a | b |``, so that chunking
    never cuts one and repeats a long table's first row (knowledge/tables.py)."""
    blocks: list[Block] = []
    parts: list[str] = []  # the block being read; has_text: whether any of it is more than spaces
    # paragraph: a paragraph boundary came since the last block; pre, row: the block is a <pre>, a table row
    has_text, paragraph, pre, row = False, True, False, False

    def flush() -> None:
        lines = [line.rstrip() if pre else line.strip() for line in "".join(parts).split("\n")]
        text = "\n".join(lines).strip("\n") if pre else "\n".join(line for line in lines if line)
        if row and text.strip():
            text = "| " + " ".join(text.split()) + " |"
        if text.strip():
            blocks.append(Block(text=text, breaks="\n\n" if paragraph else "\n"))
        parts.clear()

    for piece in _walk(root, skip=skip, clock=clock):
        if piece.startswith("\x00H"):
            flush()
            blocks.append(Block(text=piece[3:].strip(), level=int(piece[2])))
            has_text, paragraph, pre = False, True, False
        elif piece == _CELL:
            if has_text:
                parts.append(" | ")
        elif piece in (_ROW, _ROW_END):
            flush()
            has_text, paragraph, row = False, paragraph and not has_text, piece == _ROW
        elif piece.startswith("\x00"):
            if has_text or piece == _PRE or pre:  # a <pre> is a block of its own, its line breaks kept
                flush()
                has_text, paragraph = False, False
            paragraph, pre = paragraph or piece in (_PARA, _PRE), piece == _PRE
        else:
            parts.append(piece)
            has_text = has_text or not piece.isspace()
    flush()
    return blocks


def _sections(blocks: list[Block]) -> list[tuple[str, str]]:
    """(heading path, text) for each stretch of kept blocks under one heading path."""
    out: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []

    def add() -> None:
        text = "".join(body).strip()
        if text:
            out.append((" > ".join(t for _, t in path if t), text))
        body.clear()

    for block in blocks:
        if block.level:
            add()
            path = [(lvl, t) for lvl, t in path if lvl < block.level] + [(block.level, block.text)]
        elif block.kept:
            body.append(block.breaks + block.text)
    add()
    return out


def _shingles(text: str) -> list[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    if len(words) < 3:
        return [tuple(words)] if words else []
    return [tuple(words[i : i + 3]) for i in range(len(words) - 2)]


def _judge_with_trafilatura(data: bytes, blocks: list[Block]) -> None:
    """Mark the blocks trafilatura leaves out of the main content as not kept (on a page that marks
    none of its parts; small enough that trafilatura, which the clock cannot stop, stays quick).

    Each stretch of trafilatura's text vouches for one block only, headings first (they are always kept):
    a menu repeating a heading's words is not content because the heading is. Trafilatura finding
    nothing, or failing, keeps every block: losing text is worse than keeping a menu.
    """
    if data.count(b"<") > TRAFILATURA_MAX_NODES or len(blocks) < 2:
        return
    try:
        import trafilatura

        logging.getLogger("trafilatura").setLevel(logging.ERROR)  # it warns for each fallback it tries
        content = trafilatura.extract(data, favor_recall=True, include_tables=True, include_comments=False)
    except Exception:  # RecursionError on deep nesting, or a parser's failure: keep the page whole
        log.debug("trafilatura could not judge the page", exc_info=True)
        return
    if not content:
        return
    wanted = Counter(_shingles(content))
    wanted.subtract(shingle for block in blocks if block.level for shingle in _shingles(block.text))
    for block in blocks:
        own = _shingles(block.text)
        if own and not block.level:
            block.kept = sum(1 for shingle in own if wanted[shingle] > 0) >= _KEEP_SHARE * len(own)
            if block.kept:
                wanted.subtract(own)
