"""Scanned PDF pages read with Tesseract (Debian's ``tesseract-ocr``, installed by scripts/install).

A page with no text layer is usually one picture of the page: its images are taken from the PDF as
pypdf decodes them (no renderer needed) and read by the ``tesseract`` program through pytesseract.
OCR has its own clock (``ParseLimits.ocr_seconds``) and page bound (``ocr_pages``), and the time it
takes is not charged to the file's parsing clock; pages past either bound stay unread, and the
reason is returned so that the caller can say so. Where Tesseract is not installed nothing is read
and the reason says that.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from typing import Any

from knowledge.bounds import ParseLimits, WorkClock, brief

log = logging.getLogger(__name__)

MAX_IMAGES_PER_PAGE = 8
MAX_PIXELS = 50_000_000  # a 600-dpi A4 page is 35 M pixels
PAGE_SECONDS = 60.0  # one page at most, whatever is left on the OCR clock
NOT_INSTALLED = "Tesseract is not installed (Debian package tesseract-ocr), so scanned pages are not read"


@dataclass
class OcrResult:
    """What OCR read: (page number, text) pairs, and why any other page stayed unread."""

    pages: list[tuple[int, str]] = field(default_factory=list)
    unread: list[int] = field(default_factory=list)
    reason: str = ""


def tesseract_missing() -> str | None:
    """Why OCR cannot run here, or None when the tesseract program is on PATH."""
    return None if shutil.which("tesseract") else NOT_INSTALLED


def read_pages(pages: list[tuple[int, Any]], limits: ParseLimits, language: str = "eng") -> OcrResult:
    """OCR of (number, pypdf page) pairs within the page and time bounds."""
    result = OcrResult()
    missing = tesseract_missing()
    if missing:
        return OcrResult(unread=[n for n, _ in pages], reason=missing)
    clock = WorkClock(limits, limits.ocr_seconds, "the OCR time limit")
    for index, (number, page) in enumerate(pages):
        if index >= limits.ocr_pages or clock.over():
            result.unread += [n for n, _ in pages[index:]]
            bound = f"the {limits.ocr_pages}-page" if index >= limits.ocr_pages else f"the {limits.ocr_seconds:g} s"
            result.reason = f"scanned pages past {bound} OCR limit were not read"
            break
        with clock.running():
            text, problem = _page_text(page, min(PAGE_SECONDS, max(1.0, clock.limit - clock.spent())), language)
        if text:
            result.pages.append((number, text))
        else:
            result.unread.append(number)
            result.reason = result.reason or problem or "OCR found no text on the scanned pages"
    return result


def _page_text(page: Any, seconds: float, language: str) -> tuple[str, str]:
    """(text, "") or ("", why not) for one page's pictures."""
    import pytesseract

    texts: list[str] = []
    problem = ""
    try:
        images = list(page.images)[:MAX_IMAGES_PER_PAGE]
    except Exception as exc:  # a broken image stream: the page stays unread, the others are tried
        return "", f"its pictures could not be decoded: {brief(exc)}"
    for image in images:
        try:
            picture = image.image
            if picture is None or picture.width * picture.height > MAX_PIXELS:
                problem = f"a picture over {MAX_PIXELS / 1e6:.0f} M pixels was not read"
                continue
            text = pytesseract.image_to_string(picture, lang=language, timeout=seconds)
        except Exception as exc:  # a timeout, a picture PIL cannot decode, Tesseract failing
            log.warning("OCR of a page failed: %s", brief(exc))
            problem = f"OCR failed: {brief(exc)}"
            continue
        if text.strip():
            texts.append(text.strip())
    return "\n\n".join(texts), problem
