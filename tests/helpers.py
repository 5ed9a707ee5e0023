"""Small builders for test inputs."""

from __future__ import annotations

from typing import Any

from agent.core.events import TurnEvent
from agent.core.events import event_from_dict as core_event_from_dict


def make_pdf(*pages: str, title: str | None = None) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page."""
    objects: list[bytes] = []
    page_ids = [3 + 2 * i for i in range(len(pages))]
    font_id = 3 + 2 * len(pages)
    info_id = font_id + 1
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids).encode()
    objects.append(b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(pages))
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
            b" /Resources << /Font << /F1 %d 0 R >> >> >>" % (page_ids[i] + 1, font_id)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects.append(b"<< /Title (" + (title or "").encode("latin-1") + b") >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    trailer = b"<< /Size %d /Root 1 0 R" % (len(objects) + 1)
    if title:
        trailer += b" /Info %d 0 R" % info_id
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return out


def build_pdf(*objects: bytes) -> bytes:
    """A PDF from object bodies (1 is the catalog) with a correct cross-reference table."""
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


PDF_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def flate_stream(content: bytes, extra: bytes = b"") -> bytes:
    """A stream object's body: ``content`` compressed with FlateDecode."""
    import zlib

    packed = zlib.compress(content, 9)
    return b"<< %s /Length %d /Filter /FlateDecode >>\nstream\n" % (extra, len(packed)) + packed + b"\nendstream"


def shared_stream_pdf(pages: int, operators: int = 2000) -> bytes:
    """``pages`` pages that all draw one content stream of ``operators`` text operators: a few KB of
    file (the page tree lists the same page object ``pages`` times) and ``pages`` times the work."""
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>"
    )
    return build_pdf(
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + b" ".join([b"3 0 R"] * pages) + b"] /Count %d >>" % pages,
        page,
        flate_stream(b"BT /F1 12 Tf 72 720 Td (shared) Tj ET\n" * operators),
        PDF_FONT,
    )


def form_bomb_pdf(draws: int, form: bytes, padding: int = 0) -> bytes:
    """One page that draws the form XObject ``form`` (its content operators) ``draws`` times;
    ``padding`` bytes of an unused stream make the file as large as a real one."""
    import os

    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >> >>"
    )
    return build_pdf(
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        page,
        flate_stream(b"BT /F1 12 Tf 72 720 Td (Cover) Tj ET\n" + b"/X1 Do\n" * draws),
        PDF_FONT,
        flate_stream(form, b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >>"),
        b"<< /Length %d >>\nstream\n" % padding + os.urandom(padding) + b"\nendstream",
    )


def event_from_dict(data: dict[str, Any]) -> TurnEvent:
    """A typed turn event from its ``to_dict()`` form; an unknown kind is an error in a test."""
    event = core_event_from_dict(data)
    if event is None:
        raise ValueError(f"not a turn event: {data!r}")
    return event
