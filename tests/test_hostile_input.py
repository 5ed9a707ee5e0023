"""Hostile input: zip bombs and unsafe archive paths, HTML built to be slow, broken PDFs, hostile
upload names and sizes. Each is refused or skipped with a reason, fast, and loses nothing else."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from knowledge.base import KnowledgeBase
from knowledge.bounds import ParseLimits
from knowledge.loaders import (
    ArchiveLimits,
    LoadedDocument,
    RecordProblem,
    SkipFile,
    html_sections,
    load_file,
    load_jsonl,
    load_zip,
    pdf_sections,
)
from knowledge.uploads import MAX_NAME_BYTES, collection_folder, ingest_uploads, safe_filename, stage_uploads
from tests.helpers import build_pdf, make_pdf

LIMIT = 1_000_000
GIB = 1 << 30


# -- builders --------------------------------------------------------------------------------------


def deflate_zeros(size: int, block: int = 1 << 20) -> bytes:
    """A raw deflate stream of ``size`` zero bytes, built without compressing them: after a full
    flush the compressor starts afresh, so every block of zeros compresses to the same bytes."""
    assert size % block == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return one * (size // block) + compressor.flush()


def crc_of_zeros(size: int, block: int = 1 << 20) -> int:
    crc, zeros = 0, bytes(block)
    for _ in range(size // block):
        crc = zlib.crc32(zeros, crc)
    return crc


@dataclass
class Entry:
    """One zip entry written byte by byte, so its header may say what the data does not."""

    name: str
    payload: bytes  # as stored (deflated when method is 8)
    file_size: int  # what the headers claim it expands to
    crc: int = 0
    method: int = zipfile.ZIP_DEFLATED
    same_data_as: int | None = None  # a second directory entry over another entry's bytes


def raw_zip(entries: list[Entry]) -> bytes:
    out, offsets = b"", []
    for entry in entries:
        if entry.same_data_as is not None:
            offsets.append(offsets[entry.same_data_as])
            continue
        offsets.append(len(out))
        name = entry.name.encode()
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, entry.method, 0, 0, entry.crc, len(entry.payload), entry.file_size,
            len(name), 0,
        )  # fmt: skip
        out += name + entry.payload
    directory = b""
    for entry, offset in zip(entries, offsets, strict=True):
        source = entries[entry.same_data_as] if entry.same_data_as is not None else entry
        name = entry.name.encode()
        directory += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 0x0314, 20, 0, source.method, 0, 0, source.crc,
            len(source.payload), source.file_size, len(name), 0, 0, 0, 0, 0o100644 << 16, offset,
        )  # fmt: skip
        directory += name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(directory), len(out), 0)
    return out + directory + end


def make_zip(path: Path, members: dict[str, bytes | str], **writestr: object) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data, **writestr)  # type: ignore[arg-type]
    return path


def bomb_entry(name: str = "bomb.txt", size: int = GIB, *, claimed: int | None = None) -> Entry:
    """``size`` zeros in about size/1000 bytes; ``claimed`` makes the headers lie about the size."""
    return Entry(name, deflate_zeros(size), claimed if claimed is not None else size, crc=crc_of_zeros(size))


def stored(name: str, text: str) -> Entry:
    data = text.encode()
    return Entry(name, data, len(data), crc=zlib.crc32(data), method=zipfile.ZIP_STORED)


def split(items: list) -> tuple[list[LoadedDocument], list[RecordProblem]]:
    docs = [i for i in items if isinstance(i, LoadedDocument)]
    return docs, [i for i in items if isinstance(i, RecordProblem)]


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


# -- zip archives ----------------------------------------------------------------------------------


def test_zip_members_become_documents_with_archive_paths(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "handbook.zip",
        {
            "handbook/guide.md": "# Guide\n\nRefunds take five days.",
            "handbook/notes.txt": "Plain notes.",
            "handbook/page.html": "<html><head><title>Page</title></head><body><p>Hello page</p></body></html>",
            "handbook/report.pdf": make_pdf("Quarterly numbers", title="Report"),
            "handbook/records.jsonl": json.dumps({"id": "r1", "text": "A record"}) + "\n{bad",
            "handbook/sub/": "",
        },
    )
    docs, problems = split(list(load_zip(archive, LIMIT)))
    source = str(archive.absolute())
    by_id = {d.doc_id: d for d in docs}
    assert set(by_id) == {
        f"{source}!handbook/guide.md",
        f"{source}!handbook/notes.txt",
        f"{source}!handbook/page.html",
        f"{source}!handbook/report.pdf",
        "r1",
    }
    assert all(d.source == source for d in docs)
    guide = by_id[f"{source}!handbook/guide.md"]
    assert guide.title == "Guide" and guide.metadata["member"] == "handbook/guide.md"
    assert by_id[f"{source}!handbook/notes.txt"].title == "notes"  # the member's name when it has no title
    assert by_id[f"{source}!handbook/report.pdf"].sections[0].metadata["page"] == 1
    assert [(p.where, p.reason) for p in problems] == [
        (f"{archive}!handbook/records.jsonl:2", "invalid JSON: " + "Expecting property name enclosed in double quotes")
    ]


def test_unsafe_nested_and_odd_members_are_reported_and_the_rest_read(tmp_path: Path) -> None:
    archive = tmp_path / "odd.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("good.md", "# Good\n\nkept")
        out.writestr("../evil.md", "escape")
        out.writestr("inner/../../evil2.md", "escape")
        out.writestr("/etc/abs.md", "absolute")
        out.writestr("C:/win.md", "drive")
        out.writestr("..\\..\\back.md", "backslashes")
        out.writestr("tab\tname.md", "control character")
        out.writestr("inner.zip", b"PK\x05\x06" + bytes(18))
        out.writestr("logs.tar.gz", b"\x1f\x8b")
        out.writestr("photo.png", b"\x89PNG")
        out.writestr("__MACOSX/._good.md", b"\x00\x05\x16\x07")  # macOS metadata: passed over quietly
        out.writestr(".git/HEAD.md", "hidden")
        link = zipfile.ZipInfo("link.md")
        link.external_attr = 0o120777 << 16  # a symbolic link to /etc/passwd
        out.writestr(link, "/etc/passwd")
        with pytest.warns(UserWarning, match="Duplicate name"):
            out.writestr("good.md", "# Second copy")
    docs, problems = split(list(load_zip(archive, LIMIT)))
    assert [d.doc_id.rsplit("!", 1)[1] for d in docs] == ["good.md"]
    assert docs[0].title == "Good"
    reasons = {p.where.split("!", 1)[1]: p.reason for p in problems}
    assert reasons == {
        "../evil.md": "unsafe path in archive (..)",
        "inner/../../evil2.md": "unsafe path in archive (..)",
        "/etc/abs.md": "unsafe path in archive (absolute)",
        "C:/win.md": "unsafe path in archive (absolute)",
        "..\\..\\back.md": "unsafe path in archive (..)",
        "tab?name.md": "unsafe name in archive (control characters)",
        "inner.zip": "archive inside an archive, not expanded",
        "logs.tar.gz": "archive inside an archive, not expanded",
        "photo.png": "unsupported file type .png",
        "link.md": "symbolic link in archive, not followed",
        "good.md": "duplicate entry in archive (the first one is used)",
    }


def test_a_zip_bomb_member_is_refused_from_its_header_at_once(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(raw_zip([bomb_entry(), stored("readme.md", "# Read me\n\nStill here.")]))
    assert archive.stat().st_size < 1_200_000  # 1 MB on disk, 1 GiB inflated
    items, seconds = timed(lambda: list(load_zip(archive, 50_000_000)))
    docs, problems = split(items)
    assert [d.title for d in docs] == ["Read me"]
    assert len(problems) == 1 and problems[0].where == f"{archive}!bomb.txt"
    assert problems[0].reason.startswith("zip bomb: expands to 1073.7 MB")
    assert seconds < 1.0  # inflating the gigabyte takes seconds (and a gigabyte of memory)


def test_a_member_whose_header_lies_is_stopped_at_the_claimed_size(tmp_path: Path) -> None:
    archive = tmp_path / "liar.zip"
    archive.write_bytes(raw_zip([bomb_entry("small.txt", claimed=1000), stored("ok.txt", "fine")]))
    items, seconds = timed(lambda: list(load_zip(archive, 50_000_000)))
    docs, problems = split(items)
    assert [d.sections[0].text for d in docs] == ["fine"]
    assert len(problems) == 1 and problems[0].reason.startswith("corrupt archive member")
    assert seconds < 1.0


def test_members_that_share_compressed_data_are_an_overlap_bomb(tmp_path: Path) -> None:
    first = bomb_entry("a.txt", size=40 << 20)
    entries = [first] + [Entry(f"copy{n}.txt", b"", 0, same_data_as=0) for n in range(50)]
    archive = tmp_path / "overlap.zip"
    archive.write_bytes(raw_zip(entries))
    with pytest.raises(SkipFile, match="zip bomb: entries overlap"):
        list(load_zip(archive, 50_000_000))


def test_archive_limits_on_entry_count_total_size_and_member_size(tmp_path: Path) -> None:
    many = make_zip(tmp_path / "many.zip", {f"n{i}.txt": "x" * 900 for i in range(5)})
    with pytest.raises(SkipFile, match="archive has 5 entries, over the 4 limit"):
        list(load_zip(many, LIMIT, ArchiveLimits(max_members=4)))
    # Honest members, each under the file limit, that together expand past the archive's total
    text = make_zip(tmp_path / "text.zip", {f"t{i}.txt": os.urandom(200_000).hex() for i in range(4)})
    with pytest.raises(SkipFile, match=r"archive too large: its files expand to 1\.6 MB, over the 1\.5 MB limit"):
        list(load_zip(text, LIMIT, ArchiveLimits(max_total_bytes=1_500_000)))
    # Many members each too small to be judged by its ratio, together far past it: a bomb
    zeros = make_zip(tmp_path / "zeros.zip", {f"z{i}.txt": "0" * 900_000 for i in range(5)})
    with pytest.raises(SkipFile, match=r"zip bomb: expands beyond 3\.0 MB"):
        list(load_zip(zeros, LIMIT, ArchiveLimits(max_total_bytes=3_000_000)))
    # One member over the per-file limit is refused; the others stay
    one = make_zip(tmp_path / "one.zip", {"a.txt": "a", "b.txt": os.urandom(600_000).hex()})
    docs, problems = split(list(load_zip(one, LIMIT)))
    assert [d.sections[0].text for d in docs] == ["a"]
    assert [p.reason for p in problems] == ["too large: 1.2 MB over the 1.0 MB limit"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PK\x03\x04 this is not really a zip", "not a valid zip archive"),
        (b"just text with a .zip name", "not a valid zip archive"),
    ],
)
def test_broken_archives_are_skipped(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(data)
    with pytest.raises(SkipFile, match=reason):
        list(load_zip(path, LIMIT))


def test_a_truncated_member_is_reported_and_the_rest_read(tmp_path: Path) -> None:
    good = stored("good.txt", "good text")
    bad = Entry("cut.txt", zlib.compress(b"some text " * 100)[2:-30], 1000, crc=1)
    path = tmp_path / "cut.zip"
    path.write_bytes(raw_zip([bad, good]))
    docs, problems = split(list(load_zip(path, LIMIT)))
    assert [d.sections[0].text for d in docs] == ["good text"]
    assert problems[0].reason.startswith("corrupt archive member")


# -- HTML built to be slow --------------------------------------------------------------------------


def test_html_nested_100000_deep_parses_correctly() -> None:
    n = 100_000
    page = "<html><body><h1>Top</h1>" + "<div>" * n + "<h2>Deep</h2>deep text" + "</div>" * n + "<p>after</p>"
    (title, sections), seconds = timed(html_sections, page.encode())
    assert title == "Top"
    assert [(s.heading, s.text) for s in sections] == [("Top > Deep", "deep text\n\nafter")]
    assert seconds < 20


def test_many_headings_and_nested_headings_take_linear_time() -> None:
    # BeautifulSoup's replace_with looks each heading up among its siblings: 20 000 headings took a minute
    flat = "<html><body>" + "<h2>Head</h2><p>body</p>" * 20_000
    (_, sections), seconds = timed(html_sections, flat.encode())
    assert len(sections) == 20_000 and sections[0].heading == "Head"
    assert seconds < 10
    nested = "<html><body>" + "<h2>" * 10_000 + "inner" + "</h2>" * 10_000 + "<p>after</p>"
    (_, sections), seconds = timed(html_sections, nested.encode())
    assert [s.text for s in sections] == ["after"] and sections[0].heading.endswith("inner")
    assert seconds < 10


def test_html_with_too_many_tags_is_skipped_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "tags.html"
    path.write_bytes(b"<html><body>" + b"<b>" * ParseLimits().html_nodes)
    with pytest.raises(SkipFile, match="HTML has over 300,000 tags, comments and other markup, over the 300,000-node"):
        timed(load_file, path, 50_000_000)


def test_html_icons_and_comments_stay_out_of_the_text() -> None:
    page = b"<h1>Title <svg><title>link icon</title></svg></h1><p>a<!-- secret -->b</p><script>x=1</script>"
    title, sections = html_sections(page)
    assert title == "Title"
    assert sections[0].text == "ab"  # a comment inside a word does not split it, as a browser shows it


# -- PDFs --------------------------------------------------------------------------------------------


PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"
FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def encrypted(user_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf("Secret text"))))
    # RC4 works without the optional cryptography package (AES needs it)
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("truncated", "malformed PDF"),
        ("garbage after the header", "malformed PDF"),
        ("a page tree that loops", "malformed PDF: PdfReadError: Detected cyclic page references"),
        ("a stream that inflates past pypdf's limit", "PDF stream over the size limit (possible decompression bomb)"),
        ("a stream declaring a terabyte", "PDF stream over the size limit"),
        ("a password", "encrypted PDF (needs a password)"),
    ],
)
def test_broken_pdfs_are_skipped_with_a_reason(case: str, reason: str) -> None:
    bomb = deflate_zeros(80 << 20)  # pypdf stops inflating at 75 MB
    data = {
        "truncated": make_pdf("One", "Two")[:300],
        "garbage after the header": b"%PDF-1.7\n" + bytes(range(256)) * 40,
        "a page tree that loops": build_pdf(
            b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"
        ),
        "a stream that inflates past pypdf's limit": build_pdf(
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            PAGE,
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % (len(bomb) + 2) + b"\x78\x9c" + bomb + b"\nendstream",
            FONT,
        ),
        "a stream declaring a terabyte": build_pdf(
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            PAGE,
            b"<< /Length 999999999999 >>\nstream\nBT ET\nendstream",
            FONT,
        ),
        "a password": encrypted("s3cret"),
    }[case]
    with pytest.raises(SkipFile) as info:
        pdf_sections(data)
    assert info.value.reason.startswith(reason)


def test_pdfs_that_open_in_any_viewer_are_read() -> None:
    # A wrong cross-reference table is rebuilt; an empty user password only restricts permissions
    good = make_pdf("Page one text", title="Doc")
    broken_xref = good.replace(b"startxref\n", b"startxref\n9")
    assert [s.text for s in pdf_sections(broken_xref)[1]] == ["Page one text"]
    assert [s.text for s in pdf_sections(encrypted(""))[1]] == ["Secret text"]


# -- JSONL -------------------------------------------------------------------------------------------


def test_a_hostile_jsonl_line_costs_only_that_line(tmp_path: Path) -> None:
    lines = ["[" * 100_000, '{"id": "n", "text": "x", "metadata": {"n": ' + "9" * 5000 + "}}"]
    lines.append(json.dumps({"id": "ok", "text": "still here"}))
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines))
    docs, problems = split(list(load_jsonl(path, LIMIT)))
    assert [d.doc_id for d in docs] == ["ok"]
    assert [p.where for p in problems] == [f"{path}:1", f"{path}:2"]
    assert problems[0].reason == "invalid JSON: nested too deeply"
    assert problems[1].reason.startswith("invalid JSON: Exceeds the limit")


# -- upload names and sizes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "clean"),
    [
        ("../../etc/passwd.md", "passwd.md"),
        ("/abs/x.md", "x.md"),
        ("..\\..\\win.md", "win.md"),
        ("C:\\Users\\ann\\notes.md", "notes.md"),
        ("a\x00b.md", "ab.md"),
        (".hidden.md", "hidden.md"),
        ("..", ""),
        ("evil\u202egpj.md", "evilgpj.md"),  # the right-to-left override that disguises a suffix
        ("line\nbreak\r.md", "linebreak.md"),
        ('a<b>|c?*".md', "a_b__c___.md"),
        ("CON.txt", "_CON.txt"),
        ("Report.PDF", "Report.pdf"),
        ("  many   spaces .md ", "many spaces.md"),
    ],
)
def test_upload_names_are_cleaned(given: str, clean: str) -> None:
    assert safe_filename(given) == clean


def test_long_upload_names_are_cut_keeping_the_suffix() -> None:
    for given in ("x" * 500 + ".md", "é" * 300 + ".pdf"):
        clean = safe_filename(given)
        assert len(clean.encode()) <= MAX_NAME_BYTES
        assert clean.endswith(Path(given).suffix) and clean.encode().decode() == clean


def test_hostile_upload_names_never_leave_the_uploads_folder(tmp_path: Path) -> None:
    incoming = tmp_path / "gradio"
    incoming.mkdir()
    hostile = ["../../etc/passwd.md", "/abs/x.md", "..\\..\\win.md", "a\x00b.md", "x" * 400 + ".md", ".hidden.md"]
    uploads = []
    for number, name in enumerate(hostile):
        path = incoming / f"upload{number}"
        path.write_text(f"# Doc {number}\n\nText {number}.")
        uploads.append((path, name))
    folder = collection_folder(tmp_path / "data", "../../outside")
    assert folder.parent == tmp_path / "data" / "uploads"
    staged = stage_uploads(uploads, folder, LIMIT)
    assert not staged.refused
    assert len(staged.files) == len(hostile)
    for path in staged.files:
        assert path.parent == folder.resolve() and path.is_file() and not path.name.startswith(".")
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in staged.files)  # no temp files left
    assert not (tmp_path / "etc").exists() and not (tmp_path / "outside").exists()


def test_uploads_over_the_limit_empty_or_of_unknown_type_are_refused(tmp_path: Path) -> None:
    big, empty, exe, fifo = tmp_path / "big.md", tmp_path / "empty.md", tmp_path / "tool.exe", tmp_path / "pipe.md"
    big.write_bytes(b"x" * 2001)
    empty.write_bytes(b"")
    exe.write_bytes(b"MZ")
    os.mkfifo(fifo)
    staged: list = []
    # Opening a FIFO for reading waits for a writer: staging must not (run it where a hang shows)
    worker = threading.Thread(
        target=lambda: staged.append(stage_uploads([big, empty, exe, fifo], tmp_path / "up", 2000)), daemon=True
    )
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "staging blocked on a FIFO"
    reasons = {s.path: s.reason for s in staged[0].refused}
    assert reasons == {
        "big.md": "too large: 0.0 MB over the 0.0 MB upload limit",
        "empty.md": "empty file",
        "tool.exe": "unsupported file type .exe",
        "pipe.md": "not a regular file",
    }
    assert list((tmp_path / "up").iterdir()) == []


def test_same_name_same_content_is_one_file_and_different_content_is_never_overwritten(tmp_path: Path) -> None:
    one, two = tmp_path / "a" / "notes.md", tmp_path / "b" / "notes.md"
    one.parent.mkdir()
    two.parent.mkdir()
    one.write_text("# First\n\none")
    two.write_text("# Second\n\ntwo")
    folder = tmp_path / "uploads"
    first = stage_uploads([one, two], folder, LIMIT)
    assert sorted(p.name for p in first.files) == ["notes-2.md", "notes.md"]
    assert (folder / "notes.md").read_text() == "# First\n\none"
    again = stage_uploads([two, one], folder, LIMIT)  # the same two files: nothing new
    assert not again.created and {p.name for p in again.files} == {"notes.md", "notes-2.md"}
    assert sorted(p.name for p in folder.iterdir()) == ["notes-2.md", "notes.md"]


# -- end to end, into the database -------------------------------------------------------------------


def test_a_zip_bomb_is_skipped_and_everything_beside_it_is_ingested(
    kb: KnowledgeBase, collection: str, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "bomb.zip").write_bytes(raw_zip([bomb_entry("zeros.txt")]))
    make_zip(folder / "handbook.zip", {"guide.md": "# Guide\n\nThe zanzibar refund takes five days.", "old.md": "Old"})
    (folder / "faq.md").write_text("# FAQ\n\nAsk the quokka desk.")
    (folder / "broken.pdf").write_bytes(make_pdf("x")[:200])
    (folder / "deep.html").write_text("<h1>Deep</h1>" + "<div>" * 50_000 + "nested words")
    report, seconds = timed(kb.ingest, [folder], collection, progress=False)
    handbook = str((folder / "handbook.zip").absolute())
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons[f"{folder / 'bomb.zip'}!zeros.txt"].startswith("zip bomb: expands to 1073.7 MB")
    assert reasons[str(folder / "broken.pdf")].startswith("malformed PDF")
    assert report.documents_added == 4  # faq.md, deep.html and the two handbook members
    hits = kb.search("zanzibar refund", collection, k=1)
    assert hits[0].doc_id == f"{handbook}!guide.md"
    assert kb.search("nested words", collection, k=1, mode="keyword")[0].doc_id.endswith("deep.html")
    assert seconds < 30

    # A member taken out of the archive goes with --prune, like a record taken out of a JSONL file
    make_zip(folder / "handbook.zip", {"guide.md": "# Guide\n\nThe zanzibar refund takes five days."})
    again = kb.ingest([folder], collection, prune=True, progress=False)
    assert again.documents_pruned == 1 and again.documents_unchanged == 3 and again.documents_added == 0


def test_chat_uploads_are_staged_ingested_and_reported(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    from agent.chat.handlers import ChatHandlers

    incoming = tmp_path / "gradio"
    incoming.mkdir()
    good, bad, big = incoming / "passwd.md", incoming / "scan.pdf", incoming / "huge.txt"
    good.write_text("# Hostile name\n\nThe wombat policy applies.")
    bad.write_bytes(b"%PDF-1.7\n" + bytes(range(256)))
    big.write_bytes(b"y" * 3_000_000)
    data_dir = tmp_path / "data"
    report, staged = ingest_uploads(kb, [(good, "../../etc/passwd.md"), bad, big], collection, data_dir, 2_000_000)
    assert report is not None and report.documents_added == 1
    folder = collection_folder(data_dir, collection).resolve()
    assert [p.name for p in folder.iterdir()] == ["passwd.md"]  # the skipped PDF is not kept
    assert kb.search("wombat policy", collection, k=1)[0].doc_id == str(folder / "passwd.md")
    assert [(s.path, s.reason) for s in staged.refused] == [
        ("huge.txt", "too large: 3.0 MB over the 2.0 MB upload limit")
    ]

    # The chat's handler reports the same, without letting a name write Markdown
    settings = SimpleNamespace(data_dir=data_dir, collection="default", ui_max_upload_mb=2.0)
    agent = SimpleNamespace(kb=kb, settings=settings)
    handlers = ChatHandlers(SimpleNamespace(agent=agent, settings=settings, login=False))  # type: ignore[arg-type]
    markdown = incoming / "![x](http:evil.png).md"
    markdown.write_text("# Image\n\nA name that is Markdown.")
    text = handlers.ingest([str(good), str(bad), str(markdown)], collection, progress=lambda *a, **k: None)
    assert "1 added" in text and "1 unchanged" in text
    assert "- saved `![x](http:evil.png).md` as `![x](http_evil.png).md`" in text  # code spans: shown, not run
    assert "- skipped `scan.pdf`: malformed PDF" in text
    renamed = handlers.ingest([str(incoming / "missing.md")], collection, progress=lambda *a, **k: None)
    assert renamed.startswith("Nothing ingested") and "- refused `missing.md`: cannot read the upload" in renamed
