"""Token-aware chunking that keeps to headings and paragraphs.

Sections (from the loaders) never share a chunk, so a chunk sits under one heading; within a
section ``semchunk`` splits at the largest boundary that fits (blank lines, then lines, then
sentences, then words), counting tokens with tiktoken. A Markdown table is cut between rows only,
and each of its chunks starts with its header (knowledge/tables.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import semchunk

from knowledge.loaders import LoadedDocument
from knowledge.tables import table_blocks, table_pieces
from knowledge.tokens import get_encoding

# Bump when chunk boundaries change, so re-ingest re-chunks (2: tables cut between rows, header repeated;
# 3: HTML read as published, knowledge/html_text.py)
CHUNKER_VERSION = 3


@dataclass(frozen=True)
class ChunkingConfig:
    chunk_tokens: int = 256
    overlap: int = 32
    encoding: str = "cl100k_base"

    def __post_init__(self) -> None:
        if self.chunk_tokens < 16:
            raise ValueError("chunk_tokens must be at least 16")
        if not 0 <= self.overlap < self.chunk_tokens:
            raise ValueError("overlap must be at least 0 and smaller than chunk_tokens")

    def signature(self) -> str:
        """A string that changes whenever chunk boundaries would."""
        return f"v{CHUNKER_VERSION}:{self.encoding}:{self.chunk_tokens}:{self.overlap}"


@dataclass
class Chunk:
    ordinal: int
    text: str
    heading: str
    n_tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=16)
def _chunker(encoding: str, chunk_tokens: int) -> semchunk.Chunker:
    enc = get_encoding(encoding)
    return semchunk.chunkerify(lambda text: len(enc.encode(text, disallowed_special=())), chunk_tokens)


def chunk_text(text: str, config: ChunkingConfig) -> list[str]:
    """Split one section's text into pieces of at most ``chunk_tokens`` tokens."""
    if not text.strip():
        return []
    chunker = _chunker(config.encoding, config.chunk_tokens)
    pieces = chunker(text, overlap=config.overlap or None)
    return [piece.strip() for piece in pieces if piece.strip()]


def section_pieces(text: str, config: ChunkingConfig) -> list[str]:
    """A section's pieces: its tables cut by whole rows (header repeated), the text around them by chunk_text."""
    enc = get_encoding(config.encoding)

    def count(line: str) -> int:
        return len(enc.encode(line, disallowed_special=()))

    pieces: list[str] = []
    for block, is_table in table_blocks(text):
        if is_table:
            pieces += table_pieces(block, config.chunk_tokens, count)
        else:
            pieces += chunk_text(block, config)
    return pieces


def chunk_document(document: LoadedDocument, config: ChunkingConfig) -> list[Chunk]:
    """All chunks of a document, numbered in reading order."""
    enc = get_encoding(config.encoding)
    chunks: list[Chunk] = []
    for section in document.sections:
        for piece in section_pieces(section.text, config):
            chunks.append(
                Chunk(
                    ordinal=len(chunks),
                    text=piece,
                    heading=section.heading,
                    n_tokens=len(enc.encode(piece, disallowed_special=())),
                    metadata=dict(section.metadata),
                )
            )
    return chunks
