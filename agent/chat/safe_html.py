"""Untrusted text as HTML that makes the browser fetch nothing.

Everything the chat shows may come from a document, a database row, a file name or a model that
read them: a planted ``![x](http://...)``, ``<img>``, ``<iframe>`` or CSS ``url()`` would make every
reader's browser call an outside address. So the chat does not let the browser render Markdown
(the Chatbot runs with ``render_markdown=False``); the server does it here instead:

- markdown-it-py parses the Markdown with raw HTML off (any tag in the text is shown as text), and
  images and links are shown as text with their address, never as elements;
- nh3 (Rust's ammonia) then keeps only an allowlist of formatting tags, with no attribute at all:
  no ``src``, ``href``, ``style`` or ``class`` survives, whatever the parser let through.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

ALLOWED_TAGS = frozenset(
    {"p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li", "mark"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"}
)
_PRE = re.compile(r"(<pre>.*?</pre>)", re.S)


def _image_as_text(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    return html.escape(f"[image: {alt}] ({token.attrGet('src') or ''})", quote=False)


def _link_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    # an autolink's text is its address already
    env.setdefault("links", []).append("" if token.markup == "autolink" else str(token.attrGet("href") or ""))
    return ""


def _link_close(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    href = env["links"].pop() if env.get("links") else ""
    return html.escape(f" ({href})", quote=False) if href else ""


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable(["table", "strikethrough"])
    md.add_render_rule("image", _image_as_text)
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("link_close", _link_close)
    return md


_MD = _parser()


def markdown_html(text: str) -> str:
    """Markdown from anywhere as safe HTML: formatting kept; tags, images and links shown as text."""
    rendered = _MD.render(text or "", {})
    clean = nh3.clean(rendered, tags=set(ALLOWED_TAGS), attributes={}, url_schemes=set(), link_rel=None)
    # The chat shows HTML under `white-space: pre-line`: line breaks between tags would show as blank
    # lines, so they go (the parser wrote <br> where the text had them), except inside code blocks.
    return "".join(part if part.startswith("<pre>") else part.replace("\n", "") for part in _PRE.split(clean))


_MARKS = {"\ue000": "<mark>", "\ue001": "</mark>"}  # private-use characters, taken out of the text first


def marked_html(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """Markdown as ``markdown_html`` makes it, with ``text[start:end]`` of each span in ``<mark>`` (line by line,
    so a highlight never crosses a block); overlapping spans are merged."""
    pieces, cursor = [], 0
    for start, end in _merged(spans, len(text)):
        pieces.append(_unmarked(text[cursor:start]))
        pieces.append(
            "\n".join(
                f"\ue000{line}\ue001" if line.strip() else line for line in _unmarked(text[start:end]).split("\n")
            )
        )
        cursor = end
    pieces.append(_unmarked(text[cursor:]))
    rendered = markdown_html("".join(pieces))
    return re.sub("[\ue000\ue001]", lambda m: _MARKS[m.group(0)], rendered)


def _unmarked(text: str) -> str:
    return text.replace("\ue000", "").replace("\ue001", "")


def _merged(spans: Sequence[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted((max(0, s), min(size, e)) for s, e in spans if e > s):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        elif end > start:
            out.append((start, end))
    return out


def text_html(text: str) -> str:
    """Plain text (a question as typed) shown as it is: escaped, line breaks kept (`pre-line`)."""
    return html.escape(text or "", quote=False)


def html_text(shown: str) -> str:
    """The text of a ``text_html`` value again (what the browser hands back for a retry or an undo)."""
    return html.unescape(shown or "")
