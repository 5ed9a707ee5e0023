"""HTML as people publish it: inline text in its sentence, the page's menus left out, headings as paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from knowledge.loaders import html_sections, load_file

# A page as DocBook exports a manual (PostgreSQL's, for one): no landmarks, navigation in tables.
DOCBOOK = b"""<html><head><title>11.8. Partial Indexes</title></head><body>
<div class="navheader"><table width="100%" summary="Navigation header"><tr><th colspan="3">11.8. Partial Indexes</th>
</tr><tr><td><a accesskey="p" href="indexes-expressional.html">Prev</a> </td><td><a accesskey="u" href="indexes.html">Up
</a></td><th>Chapter 11. Indexes</th><td> <a accesskey="n" href="indexes-opclass.html">Next</a></td></tr></table><hr>
</div><div class="sect1"><div class="titlepage"><h2 class="title">11.8. Partial Indexes</h2></div>
<p>A <em class="firstterm">partial index</em> is an index built over a subset of a table; the subset is defined by a
conditional expression (called the <em class="firstterm">predicate</em> of the partial index). The index contains
entries only for those table rows that satisfy the predicate.</p>
<p>This is supported in all versions of
<span class="productname">PostgreSQL</span>.
Another reason is to avoid indexing common values, since a query searching for a common value will not use the
index anyway.</p>
<pre class="programlisting">CREATE INDEX orders_unbilled_index ON orders (order_nr)
    WHERE billed is not true;</pre>
<p>Partial indexes also allow you to enforce uniqueness among a subset of rows, which keeps the index small.</p></div>
<div class="navfooter"><hr><table summary="Navigation footer"><tr><td><a accesskey="p" href="a.html">Prev</a> </td>
<td><a accesskey="u" href="indexes.html">Up</a></td><td> <a accesskey="n" href="b.html">Next</a></td></tr><tr>
<td>11.7. Indexes on Expressions </td><td><a accesskey="h" href="index.html">Home</a></td>
<td> 11.9. Operator Classes and Operator Families</td></tr></table></div></body></html>"""

# A page as Sphinx writes one: the content marked role="main", menus around it, a "¶" after each heading.
SPHINX = b"""<html><head><title>functools - Python documentation</title></head><body>
<div class="related" role="navigation"><ul><li><a href="index.html">index</a></li><li><a href="x.html">next</a></li>
</ul></div><div class="document"><div class="body" role="main">
<section id="functools"><h1><code class="xref"><span class="pre">functools</span></code> - Higher-order functions<a
class="headerlink" href="#functools" title="Permalink to this headline">\xc2\xb6</a></h1>
<p>The <code class="literal"><span class="pre">functools</span></code> module is for higher-order functions.</p>
<section id="partial"><h2>partial Objects<a class="headerlink" href="#partial">\xc2\xb6</a></h2>
<p>See <a href="#functools.partial">partial</a> for the details.</p></section></section></div></div>
<div class="sphinxsidebar" role="navigation"><h3>Table of Contents</h3><ul><li>Quick search</li></ul></div>
<div class="footer">&copy; Copyright 2001-2023, Python Software Foundation.</div></body></html>"""


def joined(page: bytes) -> str:
    return "\n\n".join(text for _, text in ((s.heading, s.text) for s in html_sections(page)[1]))


def test_inline_elements_stay_in_their_sentence() -> None:
    text = joined(DOCBOOK)
    assert "This is supported in all versions of PostgreSQL. Another reason" in text
    assert "A partial index is an index built over a subset of a table;" in text


def test_a_docbook_manual_page_loses_its_prev_up_next_navigation() -> None:
    title, sections = html_sections(DOCBOOK)
    assert title == "11.8. Partial Indexes"
    assert [s.heading for s in sections] == ["11.8. Partial Indexes"]
    text = sections[0].text
    for menu in ("Prev", "Next", "Home", "Chapter 11", "Operator Classes"):
        assert menu not in text
    assert text.endswith("which keeps the index small.")
    # a <pre> keeps its own line breaks and indentation, and is a paragraph of its own
    assert "\n\nCREATE INDEX orders_unbilled_index ON orders (order_nr)\n    WHERE billed is not true;\n\n" in text


def test_a_page_with_a_main_landmark_keeps_only_it_and_headings_lose_their_permalinks() -> None:
    title, sections = html_sections(SPHINX)
    assert title == "functools - Python documentation"
    assert [(s.heading, s.text) for s in sections] == [
        ("functools - Higher-order functions", "The functools module is for higher-order functions."),
        ("functools - Higher-order functions > partial Objects", "See partial for the details."),
    ]


def test_landmarks_of_the_pages_furniture_are_left_out_but_an_articles_own_header_is_kept() -> None:
    page = (
        b"<body><header><a href='/'>Acme</a> Home Pricing</header><nav>Docs Blog</nav>"
        b"<article><header><h1>Refunds</h1><p>By the billing team</p></header>"
        b"<p>Refunds take <b>14</b> days.</p><aside>Related: shipping</aside></article>"
        b"<div role='contentinfo'>Contact us</div><footer>(c) Acme</footer></body>"
    )
    _, sections = html_sections(page)
    assert [(s.heading, s.text) for s in sections] == [("Refunds", "By the billing team\n\nRefunds take 14 days.")]


def test_a_table_keeps_one_row_a_line_and_its_cells_in_order() -> None:  # as Markdown rows
    page = (
        b"<main><h2>Plans</h2><table><tr><th>Plan</th><th>Price</th></tr>"
        b"<tr><td>Free</td><td>0 <i>EUR</i></td></tr><tr><td>Team</td><td>10 EUR</td></tr></table></main>"
    )
    _, sections = html_sections(page)
    assert sections[0].text == "| Plan | Price |\n| Free | 0 EUR |\n| Team | 10 EUR |"


def test_when_trafilatura_fails_or_finds_nothing_every_block_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import trafilatura

    def broken(*_: object, **__: object) -> None:
        raise RecursionError

    for replacement in (broken, lambda *_, **__: None):
        monkeypatch.setattr(trafilatura, "extract", replacement)
        text = joined(DOCBOOK)
        assert "Prev" in text and "which keeps the index small." in text


def test_an_html_file_is_ingested_through_the_same_rules(tmp_path: Path) -> None:
    path = tmp_path / "partial.html"
    path.write_bytes(DOCBOOK)
    doc = load_file(path, 1_000_000)
    assert doc.title == "11.8. Partial Indexes"
    assert "Prev" not in doc.sections[0].text and doc.sections[0].heading == "11.8. Partial Indexes"


def test_a_long_html_table_is_chunked_between_rows_with_its_header_repeated(tmp_path: Path) -> None:
    from knowledge.chunking import ChunkingConfig, chunk_document

    rows = "".join(f"<tr><td>item {i}</td><td><p>costs {i} euros</p><p>in stock</p></td></tr>" for i in range(200))
    path = tmp_path / "prices.html"
    path.write_text(f"<main><h1>Prices</h1><table><tr><th>Item</th><th>Price</th></tr>{rows}</table></main>")
    chunks = chunk_document(load_file(path, 1_000_000), ChunkingConfig(chunk_tokens=64, overlap=0))
    assert len(chunks) > 3
    for chunk in chunks:
        lines = chunk.text.split("\n")
        assert lines[0] == "| Item | Price |"  # each chunk starts with the table's header
        assert all(re.fullmatch(r"\| item \d+ \| costs \d+ euros in stock \|", line) for line in lines[1:])
