"""Ingest never loses the good documents: a document the database refuses, a control character or a
parser bomb costs that document only, with its reason in the run's report and in ``ingest_runs``,
and every other document of the same run is stored."""

from __future__ import annotations

import itertools
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from knowledge.base import KnowledgeBase
from knowledge.bounds import ParseLimits, SkipFile, WorkClock, clean_text, clean_value
from knowledge.ingest import IngestReport
from knowledge.loaders import (
    LoadedDocument,
    RecordProblem,
    check_html_nodes,
    html_sections,
    load_jsonl,
    markdown_sections,
    pdf_sections,
)
from tests.helpers import PDF_FONT, build_pdf, flate_stream, form_bomb_pdf, make_pdf, shared_stream_pdf

NAN_RECORD = '{"id": "nan", "text": "Storks migrate at night.", "metadata": {"weight": NaN}}'
NAN_MEMBER_RECORD = NAN_RECORD.replace('"nan"', '"nan-member"')
NAN_REASON = "could not be stored: InvalidTextRepresentation: invalid input syntax for type json"
FILLER = "Plain words about the harbour pilots. " * 250  # past the 8 KiB in which a NUL means "binary"


def ticks() -> Callable[[], float]:
    """A clock that advances one second each time it is read: a parser's "seconds" become the number
    of times it looked at the clock, so a time limit is hit by the same step on every machine."""
    return itertools.count().__next__  # type: ignore[return-value]


def stored(kb: KnowledgeBase, collection: str) -> dict[str, str]:
    """doc_id -> the document's chunk texts, joined."""
    with kb.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.doc_id, string_agg(c.text, ' ' ORDER BY c.ordinal) FROM documents d"
            " JOIN collections k ON k.id = d.collection_id JOIN chunks c ON c.document_id = d.id"
            " WHERE k.name = %s GROUP BY d.doc_id",
            (collection,),
        ).fetchall()
    return dict(rows)


def recorded_run(kb: KnowledgeBase, report: IngestReport) -> tuple[str, int, dict[str, str]]:
    """(status, documents_added, {path: reason}) as ``ingest_runs`` has them."""
    with kb.db.connection() as conn:
        status, added, skipped = conn.execute(
            "SELECT status, documents_added, skipped FROM ingest_runs WHERE id = %s", (report.run_id,)
        ).fetchone()
    return status, added, {s["path"]: s["reason"] for s in skipped}


def with_limits(kb: KnowledgeBase, **limits: object) -> KnowledgeBase:
    return KnowledgeBase(kb.db, kb.embedder, chunking=kb.chunking, parse_limits=ParseLimits(**limits))  # type: ignore[arg-type]


def good_files(folder: Path) -> set[str]:
    """Small files of every kind that any limit in these tests lets through; their doc_ids."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.md").write_text("# Pilots\n\nThe harbour pilots board at dawn.")
    (folder / "good.txt").write_text("Tugboats wait by the breakwater.")
    (folder / "good.html").write_text("<title>Locks</title><h1>Locks</h1><p>The lock opens every hour.</p>")
    (folder / "good.pdf").write_bytes(make_pdf("Buoys mark the channel.", title="Buoys"))
    (folder / "good.jsonl").write_text(
        json.dumps({"id": "good-1", "text": "Ferries run twice an hour."})
        + "\n"
        + json.dumps({"id": "good-2", "text": "Cranes unload the freighters."})
    )
    names = ("good.md", "good.txt", "good.html", "good.pdf")
    return {str((folder / n).absolute()) for n in names} | {"good-1", "good-2"}


# -- one rule for control characters ---------------------------------------------------------------


def test_control_characters_rule() -> None:
    assert clean_text("a\x00b\x01c\x1fd\x7fe") == "abcde"
    assert clean_text("tab\tline\ncr\r\n") == "tab\tline\ncr\r\n"  # kept
    assert clean_text("column\x0bpage\x0cnext") == "column\npage\nnext"  # vertical tab, form feed: line breaks
    assert clean_text("C1 \x85 and format \u200b characters stay") == "C1 \x85 and format \u200b characters stay"
    assert (
        clean_text("lone \ud83d surrogate, whole \U0001f600 emoji") == "lone \ufffd surrogate, whole \U0001f600 emoji"
    )
    assert clean_value({"k\x00ey": ["v\x00", {"n": 1, "deep": "x\x07"}]}) == {"key": ["v", {"n": 1, "deep": "x"}]}


def test_a_document_the_database_refuses_costs_only_itself(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    """A NaN in a record's metadata passes every loader check but not PostgreSQL's jsonb: that record
    is skipped with the database's reason, and every other document of the run is stored, NUL
    characters (in a JSONL record, in a Markdown file after its first 8 KiB, in a zip member) cleaned."""
    folder = tmp_path / "drop"
    kept = good_files(folder)
    records = folder / "records.jsonl"
    nul = {
        "id": "nul",
        "title": "Ti\u0000tle",
        "text": "Gulls\u0000 nest\u0007 on the pier.",
        "metadata": {"k\u0000": "v\u0000"},
    }
    records.write_text(
        json.dumps({"id": "r1", "text": "Seals rest on the rocks."}) + "\n" + NAN_RECORD + "\n" + json.dumps(nul)
    )
    (folder / "late-nul.md").write_text("# Late\n\n" + FILLER + "\x00the words after the NUL.")
    with zipfile.ZipFile(folder / "bundle.zip", "w") as archive:
        archive.writestr(
            "inner.jsonl", NAN_MEMBER_RECORD + "\n" + json.dumps({"id": "z1", "text": "Herons fish at low tide."})
        )
        archive.writestr("member.md", "# Member\n\n" + FILLER + "\x00member words after the NUL.")
    report = kb.ingest([folder], collection, progress=False)

    expected = {f"{records}:2": NAN_REASON, f"{folder / 'bundle.zip'}!inner.jsonl:1": NAN_REASON}
    assert {s.path: s.reason for s in report.skipped} == expected
    assert recorded_run(kb, report) == ("done", report.documents_added, expected)
    docs = stored(kb, collection)
    member = f"{(folder / 'bundle.zip').absolute()}!member.md"
    assert set(docs) == kept | {"r1", "nul", "z1", str((folder / "late-nul.md").absolute()), member}
    assert report.documents_added == len(docs) == 11
    assert docs["nul"] == "Gulls nest on the pier."
    assert docs[str((folder / "late-nul.md").absolute())].endswith("the words after the NUL.")
    assert docs[member].endswith("member words after the NUL.")
    assert not any(clean_text(text) != text for text in docs.values())
    with kb.db.connection() as conn:
        title, metadata = conn.execute(
            "SELECT title, metadata FROM documents WHERE doc_id = 'nul' AND collection_id ="
            " (SELECT id FROM collections WHERE name = %s)",
            (collection,),
        ).fetchone()
    assert title == "Title" and metadata["k"] == "v"

    again = kb.ingest([folder], collection, progress=False)  # the refused ones are tried again, not "unchanged"
    assert again.documents_unchanged == 11 and {s.path for s in again.skipped} == set(expected)

    lines = records.read_text().splitlines()  # a stored record changed into one the database refuses
    records.write_text("\n".join([NAN_RECORD.replace('"nan"', '"r1"'), *lines[1:]]))
    changed = kb.ingest([folder], collection, progress=False)
    assert (changed.documents_updated, changed.documents_added) == (0, 0)
    assert {s.path: s.reason for s in changed.skipped}[f"{records}:1"] == NAN_REASON
    assert stored(kb, collection)["r1"] == "Seals rest on the rocks."  # its older version stays


def test_the_chat_upload_keeps_the_good_documents(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    from agent.chat.app import ChatHandlers

    incoming = tmp_path / "gradio"
    incoming.mkdir()
    (incoming / "records.jsonl").write_text(NAN_RECORD + "\n" + json.dumps({"id": "u1", "text": "Otters\u0000 play."}))
    (incoming / "late.md").write_text("# Late\n\n" + FILLER + "\x00after the NUL.")
    data_dir = tmp_path / "data"
    settings = SimpleNamespace(data_dir=data_dir, collection="default", ui_max_upload_mb=2.0)
    handlers = ChatHandlers(SimpleNamespace(agent=SimpleNamespace(kb=kb), settings=settings, login=False))  # type: ignore[arg-type]
    uploads = [str(incoming / "records.jsonl"), str(incoming / "late.md")]
    text = handlers.ingest(uploads, collection, progress=lambda *a, **k: None)
    assert text.startswith(f"Ingested into **{collection}**: 2 added"), text
    assert f"- skipped `records.jsonl:1`: {NAN_REASON}" in text
    docs = stored(kb, collection)
    assert docs["u1"] == "Otters play." and len(docs) == 2


def test_jsonl_lines_end_at_newline_only_and_ids_are_not_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    lines = [
        '{"id": "raw", "text": "a raw\x00 NUL\x07 in the first 8 KiB"}',  # invalid JSON, read leniently
        json.dumps({"id": "sep", "text": "one\u2028record\u0085with\x0cseparators"}, ensure_ascii=False),
        json.dumps({"id": "a\u0000b", "text": "an id that cleaning would change"}),
        '{"id": "lone", "text": "half an emoji \\ud83d here"}',  # no UTF-8 form: it used to cost the file
        json.dumps({"id": "ok", "text": "\u0000\u0001"}),
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    items = list(load_jsonl(path, 1_000_000))
    assert [d.sections[0].text for d in items if isinstance(d, LoadedDocument)] == [
        "a raw NUL in the first 8 KiB",
        "one\u2028record\x85with\nseparators",
        "half an emoji \ufffd here",
    ]
    assert [(p.where, p.reason) for p in items if isinstance(p, RecordProblem)] == [
        (f"{path}:3", "'id' has control characters or an unpaired surrogate"),
        (f"{path}:5", "no text found"),
    ]
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_text("\n".join(lines[1:]), encoding="utf-16-le")
    with pytest.raises(SkipFile, match="binary content"):
        list(load_jsonl(utf16, 1_000_000))


def test_markdown_sections_stay_aligned_past_unicode_line_separators() -> None:
    title, sections = markdown_sections("# A\n\nfirst\u2028still first\x0cnext line\n\n# B\n\nsecond")
    assert title == "A"
    assert [(s.heading, s.text) for s in sections] == [("A", "first\u2028still first\nnext line"), ("B", "second")]


# -- parser bombs, each in a run with good files ---------------------------------------------------


def many_pages_pdf(pages: int) -> bytes:
    """``pages`` pages in a few bytes each: the page tree lists one page object ``pages`` times."""
    page = b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"
    return build_pdf(
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join([b"3 0 R"] * pages) + b"] /Count %d >>" % pages,
        page,
        flate_stream(b"BT /F1 12 Tf 72 720 Td (page) Tj ET"),
        PDF_FONT,
    )


def big_content_pdf(pages: int, operators: int) -> bytes:
    """``pages`` pages, each with a content stream of its own (nothing shared)."""
    kids = b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages]
    objects.append(PDF_FONT)
    for i in range(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /Contents %d 0 R /Resources << /Font << /F1 3 0 R >> >> >>" % (5 + 2 * i)
        )
        objects.append(flate_stream(b"BT /F1 12 Tf 72 720 Td (page %d) Tj ET\n" % i * operators))
    return build_pdf(*objects)


def jsonl(*records: object) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


BOMBS: dict[str, tuple[str, Callable[[], bytes], dict[str, object], str]] = {
    # name: (file name, its bytes, limits of the run, the start of the skip reason)
    "html comments": (
        "comments.html",
        lambda: b"<html><body>" + b"<!---->" * 1_000_000,  # 7 MB: was 8 s and +490 MB
        {},
        "HTML has over 300,000 tags, comments and other markup, over the 300,000-node limit for HTML",
    ),
    "html seconds": (
        "wide.html",
        lambda: b"<html><body>" + b"<p>x</p>" * 100_000,
        {"seconds": 50, "clock": ticks()},  # a clock read per 4096 nodes; the good PDF reads it ~30 times
        "parsing took over 50 s, the per-file time limit (stopped at node ",
    ),
    "markdown lines": (
        "headings.md",
        lambda: b"# h\n" * 300_000,  # 1.2 MB: was 5 s and +400 MB of tokens
        {},
        "Markdown has 300,001 lines, over the 200,000-line limit for Markdown",
    ),
    "markdown seconds": (
        "long.md",
        lambda: b"# h\n" * 100_000,
        {"seconds": 50, "clock": ticks()},  # a clock read per 4096 tokens
        "parsing took over 50 s, the per-file time limit (stopped at token ",
    ),
    "pdf pages": ("pages.pdf", lambda: many_pages_pdf(6_000), {}, "PDF has 6,000 pages, over the 5,000-page limit"),
    "pdf pages sharing one content stream": (
        "shared.pdf",
        lambda: shared_stream_pdf(300),  # 2.6 KB: was 24 s
        {},
        "PDF draws the same content again and again (a page content stream of 76 KB, first drawn on page 1,",
    ),
    "pdf form drawn over and over": (
        "forms.pdf",
        lambda: form_bomb_pdf(200, b"BT /F1 12 Tf (a) Tj ET\n" * 2000),  # 1 KB: was 12 s
        {},
        "PDF draws the same content again and again (a form XObject of 46 KB, first drawn on page 1,",
    ),
    "pdf content bytes": (
        "dense.pdf",
        lambda: big_content_pdf(3, 20_000),
        {"pdf_content_bytes": 1_000_000},
        "PDF content too large to extract: over the 1 MB limit on page content and forms (stopped at page 2)",
    ),
    "pdf seconds": (
        "slow.pdf",
        lambda: form_bomb_pdf(3000, b"BT /F1 12 Tf (a) Tj ET\n"),
        {"seconds": 500, "clock": ticks()},
        "parsing took over 500 s, the per-file time limit (stopped at page 1)",
    ),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_each_bomb_is_skipped_with_its_bound_and_the_good_files_are_stored(
    kb: KnowledgeBase, collection: str, tmp_path: Path, bomb: str
) -> None:
    name, build, limits, reason = BOMBS[bomb]
    folder = tmp_path / "drop"
    kept = good_files(folder)
    (folder / name).write_bytes(build())
    report = with_limits(kb, **limits).ingest([folder], collection, progress=False)
    skipped = {s.path: s.reason for s in report.skipped}
    assert list(skipped) == [str(folder / name)]
    assert skipped[str(folder / name)].startswith(reason), skipped
    assert recorded_run(kb, report)[2] == skipped
    assert set(stored(kb, collection)) == kept


@pytest.mark.parametrize("markup", [b"<!---->", b"<?pi x?>", b"<!DOCTYPE html>", b"<![CDATA[x]]>", b"<b>"])
def test_every_kind_of_html_node_counts_and_the_page_is_refused_before_parsing(
    markup: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bs4

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the page was parsed")

    monkeypatch.setattr(bs4, "BeautifulSoup", never)
    with pytest.raises(SkipFile, match="HTML has over 1,000 tags, comments and other markup, over the 1,000-node"):
        html_sections(b"<html><body>" + markup * 1001, ParseLimits(html_nodes=1000))
    check_html_nodes(b"<p>x</p>" + b"</p>" * 5000, 1000)  # end tags make no node: not refused


def test_pdf_pages_sharing_a_stream_are_refused_before_any_text_is_extracted(monkeypatch: pytest.MonkeyPatch) -> None:
    from pypdf import PageObject

    def never(*args: object, **kwargs: object) -> str:
        raise AssertionError("text was extracted")

    monkeypatch.setattr(PageObject, "extract_text", never)
    with pytest.raises(SkipFile, match="a page content stream of 76 KB, first drawn on page 1, again on page 15"):
        pdf_sections(shared_stream_pdf(300))


def test_a_small_shared_stream_and_a_big_file_s_repeated_form_are_read() -> None:
    _, sections = pdf_sections(shared_stream_pdf(300, operators=1))  # 300 pages over one 38-byte stream
    assert len(sections) == 300 and sections[299].text == "shared"
    # 50 draws of a 23 KB form re-draw 1.1 MB: refused in a 1 KB file, read in a 200 KB one (10x its size)
    form = b"BT /F1 12 Tf (a) Tj ET\n" * 1000
    with pytest.raises(SkipFile, match="a form XObject of 23 KB, first drawn on page 1, again on page 1"):
        pdf_sections(form_bomb_pdf(50, form))
    _, drawn = pdf_sections(form_bomb_pdf(50, form, padding=200_000))
    assert drawn[0].text.count("a") >= 50 * 1000


@pytest.mark.parametrize(
    ("line", "limits", "reason"),
    [
        (
            json.dumps({"id": "v", "text": "x", "metadata": {"v": [0] * 2000}}),
            {"jsonl_values": 1000},
            "over 1,000 JSON values in one line, over the JSONL value limit",
        ),
        (
            json.dumps({"id": "m", "text": "x", "metadata": {"note": "y" * 2000}}),
            {"metadata_bytes": 1000},
            "'metadata' is 2,012 bytes as JSON, over the 1,000-byte metadata limit",
        ),
    ],
)
def test_a_jsonl_record_past_a_bound_costs_only_that_record(
    kb: KnowledgeBase, collection: str, tmp_path: Path, line: str, limits: dict[str, int], reason: str
) -> None:
    folder = tmp_path / "drop"
    kept = good_files(folder)
    path = folder / "mixed.jsonl"
    path.write_bytes(
        jsonl({"id": "before", "text": "Before the bomb."})
        + b"\n"
        + line.encode()
        + b"\n"
        + jsonl({"id": "after", "text": "After it."})
    )
    report = with_limits(kb, **limits).ingest([folder], collection, progress=False)
    assert [s.path for s in report.skipped] == [f"{path}:2"] and report.skipped[0].reason.startswith(reason)
    assert set(stored(kb, collection)) == kept | {"before", "after"}


def test_a_jsonl_file_out_of_time_keeps_the_records_read_and_is_not_pruned(
    kb: KnowledgeBase, collection: str, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    kept = good_files(folder)
    path = folder / "many.jsonl"
    path.write_bytes(jsonl(*({"id": f"rec-{i:03d}", "text": f"Record {i} about tides."} for i in range(100))))
    kb.ingest([folder], collection, progress=False)  # all 100 records, with the default limits
    report = with_limits(kb, seconds=50, clock=ticks()).ingest([folder], collection, prune=True, progress=False)
    ((where, reason),) = ((s.path, s.reason) for s in report.skipped)
    assert where == str(path) and reason.startswith("parsing took over 50 s, the per-file time limit (stopped at line ")
    assert report.documents_unchanged > 0 and report.documents_pruned == 0  # the lines not read are not "gone"
    assert set(stored(kb, collection)) == kept | {f"rec-{i:03d}" for i in range(100)}


def test_an_archive_out_of_time_keeps_the_members_read_and_a_bomb_member_costs_only_itself(
    kb: KnowledgeBase, collection: str, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    kept = good_files(folder)
    archive = folder / "bundle.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        # stored, not deflated: 1000:1 would be refused as a zip bomb before the HTML bound is reached
        out.writestr("bomb.html", b"<html><body>" + b"<!---->" * 1_000_000, compress_type=zipfile.ZIP_STORED)
        out.writestr("fine.md", "# Fine\n\nThe member beside the bomb.")
    report = kb.ingest([folder], collection, progress=False)
    assert {s.path: s.reason for s in report.skipped} == {
        f"{archive}!bomb.html": BOMBS["html comments"][3] + "; too many to parse safely"
    }
    member = f"{archive.absolute()}!fine.md"
    assert set(stored(kb, collection)) == kept | {member}

    with zipfile.ZipFile(archive, "w") as out:
        for i in range(100):
            out.writestr(f"m{i:03d}.md", f"# Member {i}\n\nText of member {i}.")
    report = with_limits(kb, clock=ticks()).ingest([folder], collection, progress=False)  # 300 s per archive
    ((where, reason),) = ((s.path, s.reason) for s in report.skipped)
    assert where == str(archive) and reason.startswith("parsing took over 300 s, the time limit for one archive")
    read = {doc_id for doc_id in stored(kb, collection) if "!m" in doc_id}
    assert 10 < len(read) < 100 and set(stored(kb, collection)) >= kept | {member}  # not pruned: not asked to


def test_a_loader_clock_does_not_charge_the_consumer() -> None:
    now = [0.0]
    clock = WorkClock(ParseLimits(seconds=5, clock=lambda: now[0]))

    def produce():
        for item in range(3):
            now[0] += 1.0  # each item costs the producer a second
            yield item

    consumed = []
    for item in clock.charged(produce()):
        now[0] += 100.0  # the consumer (embedding, storing) takes far longer
        consumed.append(item)
    assert consumed == [0, 1, 2] and clock.spent() == 3.0 and not clock.over()


def test_write_documents_leaves_out_only_what_the_database_refuses(kb: KnowledgeBase, collection: str) -> None:
    """Below the loaders (which clean NUL away): a NUL in a chunk fails in the COPY, a NaN in the jsonb
    of a document row; each is left out with its reason, its older version kept, the rest stored."""
    import numpy as np

    from knowledge.chunking import Chunk
    from knowledge.store import DocumentWrite, ensure_collection, write_documents

    def doc(doc_id: str, text: str, metadata: dict[str, object] | None = None) -> DocumentWrite:
        return DocumentWrite(
            doc_id=doc_id,
            source=f"/docs/{doc_id}",
            title=doc_id,
            metadata=metadata or {},
            content_hash="h",
            chunking="c",
            chunks=[Chunk(ordinal=0, text=text, heading="", n_tokens=3)],
            embeddings=np.ones((1, kb.embedder.dimension), dtype=np.float32),
        )

    with kb.db.connection() as conn:
        target = ensure_collection(conn, collection, kb.embedder.model_name, kb.embedder.dimension)
        assert write_documents(conn, target, [doc("nul", "the first version")]).refused == {}
        batch = [doc("a", "first good"), doc("nul", "a\x00b"), doc("nan", "x", {"v": float("nan")}), doc("b", "good")]
        result = write_documents(conn, target, [*batch, doc("lone", "a\ud800b")])
        assert result.chunks == 2
        assert result.refused == {
            "nul": 'could not be stored: CharacterNotInRepertoire: invalid byte sequence for encoding "UTF8": 0x00',
            "nan": NAN_REASON,
            "lone": "could not be stored: UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud800' in"
            " position 1: surrogates not allowed",
        }
    assert stored(kb, collection) == {"a": "first good", "b": "good", "nul": "the first version"}
