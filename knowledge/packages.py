"""Zip packages (DOCX, PPTX, XLSX, EPUB, ODT) opened safely before a library reads them.

These formats are zip archives of XML parts that python-docx, mammoth, python-pptx, openpyxl and odfpy
inflate in memory. Python's zipfile never inflates a part past the size its central directory declares
(a part that holds more fails its CRC), so the declared sizes are a true bound: a package whose parts
declare more than ``ParseLimits.package_bytes`` together, whose entries overlap (the "overlapping" zip
bomb) or that has too many entries is refused before any library sees it. A password-protected Office
file is not a zip at all but an OLE container holding the encrypted package: it is named as such.
"""

from __future__ import annotations

import io
import zipfile
from itertools import pairwise

from knowledge.bounds import ParseLimits, SkipFile, brief

OFFICE_SUFFIXES = {".docx", ".pptx", ".epub", ".odt"}  # read by knowledge/formats.py
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Compound File Binary: legacy .doc/.xls or an encrypted package
_ENCRYPTION_INFO = "EncryptionInfo".encode("utf-16-le")  # the stream an encrypted OOXML package carries
MAX_PARTS = 10_000
_MARKUP_SUFFIXES = (".xml", ".xhtml", ".html", ".htm", ".rels")


def open_package(data: bytes, kind: str, limits: ParseLimits, *, markup_limit: bool = False) -> zipfile.ZipFile:
    """The package as an open ZipFile, or SkipFile saying why it is not read; with ``markup_limit``, its
    XML and XHTML parts must also add up to at most ``limits.package_markup_bytes``."""
    if data.startswith(_OLE_MAGIC):
        if _ENCRYPTION_INFO in data:
            raise SkipFile(f"password-protected {kind}: open it and save it without a password to ingest it")
        raise SkipFile(f"not a {kind}: an older binary Office file (.doc, .xls, .ppt) under a new name")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # BadZipFile, or struct/ValueError from a mangled directory
        raise SkipFile(f"not a valid {kind} (truncated or corrupt: {brief(exc)})") from exc
    infos = archive.infolist()
    if len(infos) > MAX_PARTS:
        raise SkipFile(f"{kind} has {len(infos):,} parts, over the {MAX_PARTS:,}-part limit")
    spans = sorted((info.header_offset, info.compress_size) for info in infos)
    if any(start + size > following for (start, size), (following, _) in pairwise(spans)):
        raise SkipFile(f"zip bomb: the {kind}'s parts overlap (several share the same compressed data)")
    declared = sum(info.file_size for info in infos)
    if declared > limits.package_bytes:
        raise SkipFile(
            f"{kind} expands to {declared / 1e6:.1f} MB, over the {limits.package_bytes / 1e6:.0f} MB limit"
            " for a package's parts"
        )
    markup = sum(info.file_size for info in infos if info.filename.lower().endswith(_MARKUP_SUFFIXES))
    if markup_limit and markup > limits.package_markup_bytes:
        raise SkipFile(
            f"{kind} holds {markup / 1e6:.1f} MB of markup, over the {limits.package_markup_bytes / 1e6:.0f} MB"
            " limit for a document's text parts"
        )
    if any(info.flag_bits & 0x1 for info in infos):
        raise SkipFile(f"password-protected {kind} (its parts are encrypted)")
    return archive


def odf_encrypted(archive: zipfile.ZipFile) -> bool:
    """Whether an OpenDocument package is password-protected (its manifest lists encryption data)."""
    try:
        manifest = archive.read("META-INF/manifest.xml")
    except KeyError:
        return False
    return b"encryption-data" in manifest
