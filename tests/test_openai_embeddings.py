"""Embeddings from an OpenAI-compatible endpoint, through the real openai client and a scripted server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evals.doubles.scripted_model import DIMENSION, ScriptedOpenAI, bag_of_words_vector
from knowledge.base import KnowledgeBase
from knowledge.chunking import ChunkingConfig
from knowledge.embeddings import EmbeddingConfig, EmbeddingError, OpenAIEmbedder, load_embedder
from knowledge.store import CollectionError


def test_vectors_come_back_in_order_normalised_and_batched() -> None:
    with ScriptedOpenAI() as server:
        embedder = OpenAIEmbedder(
            EmbeddingConfig(model="my-embedder", base_url=server.base_url, api_key="sk-scripted", batch_size=2)
        )
        assert embedder.dimension == DIMENSION  # unknown model: probed once
        texts = ["alpha beta", "gamma", "alpha alpha", "delta epsilon"]
        vectors = embedder.embed(texts)
    assert vectors.shape == (4, DIMENSION) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    expected = np.array([bag_of_words_vector(t) for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected)
    batches = [r["body"]["input"] for r in server.requests[1:]]
    assert batches == [["alpha beta", "gamma"], ["alpha alpha", "delta epsilon"]]
    assert server.requests[1]["auth"] == "Bearer sk-scripted"


def test_endpoint_errors_and_missing_configuration_are_clear() -> None:
    with ScriptedOpenAI() as server, pytest.raises(EmbeddingError, match="refuse-me"):
        OpenAIEmbedder(EmbeddingConfig(model="refuse-me", base_url=server.base_url, api_key="k"))
    with pytest.raises(EmbeddingError, match="OPENAI_API_KEY"):
        load_embedder(EmbeddingConfig(model="text-embedding-3-small"))


def test_a_collection_built_with_an_endpoint_model(embedded_db, collection: str, tmp_path: Path, embedder) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps({"id": w, "text": f"{w} facts and more {w}"}) for w in ["apple", "pear"]))
    with ScriptedOpenAI() as server:
        remote = OpenAIEmbedder(EmbeddingConfig(model="my-embedder", base_url=server.base_url, api_key="k"))
        kb = KnowledgeBase(embedded_db, remote, chunking=ChunkingConfig(chunk_tokens=64, overlap=0))
        kb.ingest([path], collection, progress=False)
        assert kb.search("pear", collection, k=1, mode="dense")[0].doc_id == "pear"
        local = KnowledgeBase(embedded_db, embedder)
        with pytest.raises(CollectionError, match="my-embedder"):
            local.search("pear", collection)
