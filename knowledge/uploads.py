"""Files uploaded through the chat: staged under ``<data dir>/uploads/<collection>/``, then ingested.

An upload arrives as a temporary file (Gradio keeps it in its cache, which it may clean) and a
name the client chose. Staging copies it, bounded, to a folder of its own under a cleaned name,
so its document keeps a stable source path and a hostile name (``../../etc/passwd.md``, an
absolute path, a NUL) can never place a file outside that folder. The same name with the same
content is the same file (re-uploading changes nothing); a different file under a name already
taken gets a ``-2``, ``-3`` … suffix, so nothing uploaded before is overwritten.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from knowledge.base import KnowledgeBase
from knowledge.ingest import IngestReport, Skipped
from knowledge.loaders import SUPPORTED_SUFFIXES

UPLOADS_FOLDER = "uploads"
MAX_NAME_BYTES = 120  # well under every filesystem's 255, leaving room for a collision suffix
_COPY_CHUNK = 1 << 20
_UNSAFE_CHARS = re.compile(r'[<>:"/\\|?*]')  # separators, and what Windows or a shell would choke on
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}

Upload = str | os.PathLike[str] | tuple[str | os.PathLike[str], str | None]
"""A temporary file's path, or (path, the name the client gave it)."""


@dataclass
class StagedUploads:
    """What staging kept (``files``: staged path -> the name the client gave) and what it refused."""

    folder: Path
    files: dict[Path, str] = field(default_factory=dict)
    created: set[Path] = field(default_factory=set)  # new in this call (so removable if ingest skips them)
    refused: list[Skipped] = field(default_factory=list)


def safe_filename(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """A plain file name from a client's: no folders, ``..``, control characters or leading dots;
    at most ``max_bytes`` of UTF-8, the suffix kept. "" when nothing usable is left."""
    name = unicodedata.normalize("NFC", name)
    # Both separators, whatever the server's OS: a Windows client may send C:\Users\ann\x.md
    name = PureWindowsPath(PurePosixPath(name.replace("\x00", "")).name).name
    # Control and format characters (NUL, newlines, the right-to-left override that disguises a suffix)
    name = "".join(c for c in name if not unicodedata.category(c).startswith("C"))
    name = _UNSAFE_CHARS.sub("_", name)
    name = " ".join(name.split()).strip(" .")  # leading dots would hide the file; trailing ones Windows drops
    stem, suffix = os.path.splitext(name)
    if not stem or len(suffix.encode()) > 16:  # "" or a ".hidden"-like rest: no real suffix to keep
        stem, suffix = name, ""
    if stem.split(".")[0].upper() in _WINDOWS_DEVICES:
        stem = f"_{stem}"
    budget = max_bytes - len(suffix.encode())
    stem = stem.encode()[:budget].decode("utf-8", "ignore").rstrip(" .")
    return f"{stem}{suffix.lower()}" if stem else ""


def collection_folder(data_dir: Path, collection: str) -> Path:
    """``<data_dir>/uploads/<collection>``; a name that is not a clean folder name gets a hash, so
    "a/b" and "a_b" stay apart and "../x" stays inside."""
    clean = safe_filename(collection.replace("/", "_").replace("\\", "_"), 64)
    if not clean or clean != collection:
        digest = hashlib.sha256(collection.encode()).hexdigest()[:8]
        clean = f"{clean or 'collection'}-{digest}"
    return data_dir / UPLOADS_FOLDER / clean


def stage_uploads(uploads: Iterable[Upload], folder: Path, max_bytes: int) -> StagedUploads:
    """Copy each upload into ``folder`` under a clean name; refuse, with a reason, what cannot go."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = folder.resolve()
    staged = StagedUploads(folder)
    for upload in uploads:
        path, given = upload if isinstance(upload, tuple) else (upload, None)
        shown = given if given is not None else Path(path).name
        name = safe_filename(shown)
        suffix = Path(name).suffix
        if not name:
            staged.refused.append(Skipped(shown, "no usable file name"))
        elif suffix not in SUPPORTED_SUFFIXES:
            staged.refused.append(Skipped(shown, f"unsupported file type {suffix or '(none)'}"))
        else:
            try:
                target, created = _stage_one(Path(path), folder, name, max_bytes)
            except _Refused as refusal:
                staged.refused.append(Skipped(shown, refusal.reason))
                continue
            staged.files.setdefault(target, shown)
            if created:
                staged.created.add(target)
    return staged


def ingest_uploads(
    kb: KnowledgeBase, uploads: Iterable[Upload], collection: str, data_dir: Path, max_bytes: int
) -> tuple[IngestReport | None, StagedUploads]:
    """Stage the uploads for ``collection`` and ingest what was staged (None: nothing was).

    A file staged now that ingest then skips whole (a malformed PDF, a zip bomb) is removed
    again: it is in no document, and would only fill the folder.
    """
    staged = stage_uploads(uploads, collection_folder(data_dir, collection), max_bytes)
    if not staged.files:
        return None, staged
    report = kb.ingest(list(staged.files), collection, progress=False)
    skipped_whole = {s.path for s in report.skipped}
    for path in staged.created:
        if str(path) in skipped_whole:
            path.unlink(missing_ok=True)
    return report, staged


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _stage_one(source: Path, folder: Path, name: str, max_bytes: int) -> tuple[Path, bool]:
    """Copy ``source`` into ``folder`` as ``name`` (or a free variant); (where it is, whether it is new)."""
    limit_mb = max_bytes / 1e6
    try:  # O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise _Refused(f"cannot read the upload: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Refused("not a regular file")
        if info.st_size > max_bytes:
            raise _Refused(f"too large: {info.st_size / 1e6:.1f} MB over the {limit_mb:.1f} MB upload limit")
        # Copy to a hidden temporary name in the folder (ingest never reads dot files), counting the
        # bytes rather than trusting the size above, then give it its name in one step.
        out_fd, temp_name = tempfile.mkstemp(prefix=".upload-", dir=folder)
        temp = Path(temp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(out_fd, "wb") as out:
                while chunk := handle.read(_COPY_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise _Refused(f"too large: over the {limit_mb:.1f} MB upload limit")
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise _Refused("empty file")
            return _settle(temp, folder, name, digest.hexdigest())
        except OSError as exc:
            raise _Refused(f"could not save the upload: {exc.strerror or exc}") from exc
        finally:
            temp.unlink(missing_ok=True)


def _settle(temp: Path, folder: Path, name: str, digest: str) -> tuple[Path, bool]:
    """Give the copied file its final name: an identical file already there is reused, a different
    one keeps its name and this file takes the next free ``stem-N.suffix``."""
    stem, suffix = os.path.splitext(name)
    candidates = [name, *(f"{stem}-{n}{suffix}" for n in range(2, 100)), f"{stem}-{digest[:12]}{suffix}"]
    for candidate in candidates:
        target = folder / candidate
        if target.parent != folder:  # cannot happen with a clean name; never write elsewhere if it did
            raise _Refused("unsafe file name")
        if target.is_file() and _sha256(target) == digest:
            return target, False
        try:  # O_EXCL: two uploads racing for one name never overwrite each other
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except FileExistsError:
            continue
        os.replace(temp, target)
        return target, True
    raise _Refused(f"too many different files named {name} in this collection")


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
