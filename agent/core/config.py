"""One settings object for Ladder: environment variables (prefix ``LADDER_``) and a ``.env`` file.

``DATABASE_URL``, ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` are read without the prefix,
because that is where every other tool puts them.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from knowledge.chunking import ChunkingConfig
from knowledge.db import DatabaseConfig
from knowledge.embeddings import EmbeddingConfig
from knowledge.search import SearchConfig


def default_data_dir() -> Path:
    """Where Ladder keeps its embedded database and caches.

    As root the embedded PostgreSQL runs as a system user that must be able to reach its data
    folder, so root's data lives under /var/lib/ladder rather than inside /root (which we would
    otherwise have to open to every user).
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/ladder")
    return Path(platformdirs.user_data_dir("ladder", appauthor=False))


class Settings(BaseSettings):
    """Every knob Ladder has. See the README's settings table."""

    model_config = SettingsConfigDict(
        env_prefix="LADDER_", env_file=".env", env_file_encoding="utf-8", extra="ignore", allow_inf_nan=False
    )

    # Storage
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "LADDER_DATABASE_URL")
    )
    db_pool_min: int = Field(default=1, ge=1, le=100)
    db_pool_max: int = Field(default=8, ge=1, le=200)
    db_statement_timeout_ms: int = Field(default=60_000, ge=100, le=2_147_483_647)  # PostgreSQL's limit
    maintenance_work_mem: str = Field(default="512MB", pattern=r"^[1-9][0-9]*\s*(kB|MB|GB)?$")

    # Structured data (read-only SQL tools)
    data_sources: dict[str, str] = Field(default_factory=dict)
    sql_timeout_ms: int = Field(default=10_000, ge=100, le=600_000)
    sql_row_cap: int = Field(default=200, ge=1, le=100_000)

    # Models
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "LADDER_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "LADDER_OPENAI_BASE_URL")
    )
    chat_model: str | None = None
    judge_model: str | None = None
    local_model: str = "qwen2.5-coder-1.5b-instruct"
    local_model_path: Path | None = None
    chat_adapter: str | None = None  # a LoRA adapter from `ladder finetune local`, served on the embedded model
    llm_threads: int = Field(default=0, ge=0, le=256)
    llm_context_tokens: int = Field(default=4096, ge=512, le=131072)
    llm_timeout_s: float = Field(default=120.0, gt=0, le=86_400)
    llm_max_retries: int = Field(default=3, ge=0, le=10)
    llm_queue_timeout_s: float = Field(default=900.0, gt=0, le=86_400)  # a turn waiting for the embedded model
    llm_json_mode: Literal["auto", "json_schema", "json_object"] = "auto"
    prompt_cost_per_1m: float = Field(default=0.0, ge=0)
    completion_cost_per_1m: float = Field(default=0.0, ge=0)

    # The agent: one switch per technique (the rungs of the ladder), and hard bounds.
    use_fewshot: bool = True
    use_retrieval: bool = True
    use_hyde: bool = False
    use_rerank: bool = False
    rerank_method: Literal["llm", "mmr", "cross_encoder"] = "llm"
    cross_encoder_path: Path | None = None
    mmr_lambda: float = Field(default=0.7, ge=0, le=1)
    use_decompose: bool = True
    use_fact_check: bool = True
    use_condense: bool = True  # rewrite a follow-up that leans on the thread as a standalone question
    research_mode: Literal["retrieve", "react_json", "react_native"] = "retrieve"
    max_sub_questions: int = Field(default=4, ge=1, le=10)
    max_tool_calls: int = Field(default=3, ge=0, le=10)
    max_model_calls: int = Field(default=24, ge=1, le=200)
    max_revisions: int = Field(default=1, ge=0, le=3)
    passages_per_question: int = Field(default=4, ge=1, le=20)
    answer_max_tokens: int = Field(default=400, ge=16, le=8192)
    draft_context_tokens: int | None = Field(default=None, ge=100)
    max_question_tokens: int = Field(default=1000, ge=16)
    # Secrets in a question (keys, tokens, passwords) are masked before it is stored or sent to a model;
    # off keeps questions verbatim for deployments that must.
    redact_questions: bool = True
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_batch_size: int = Field(default=64, ge=1, le=4096)
    embedding_threads: int = Field(default=0, ge=0, le=256)
    embedding_bf16: Literal["auto", "on", "off"] = "auto"
    embedding_runtime: Literal["auto", "onnx", "torch"] = "auto"

    # The chat UI (ladder chat)
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(default=7860, ge=1, le=65535)
    ui_concurrency: int = Field(default=8, ge=1, le=256)
    ui_max_upload_mb: float = Field(default=50.0, gt=0, le=1_000_000)

    # Ingestion
    collection: str = "default"
    chunk_tokens: int = Field(default=256, ge=16, le=8192)
    chunk_overlap: int = Field(default=32, ge=0)
    max_file_mb: float = Field(default=50.0, gt=0, le=1_000_000)
    tokenizer_encoding: str = "cl100k_base"

    # Search
    search_k: int = Field(default=10, ge=1, le=1000)
    search_mode: Literal["dense", "keyword", "hybrid"] = "hybrid"
    rrf_k: int = Field(default=10, ge=1)
    hybrid_dense_weight: float = Field(default=1.0, ge=0)
    hybrid_keyword_weight: float = Field(default=1.0, ge=0)
    hybrid_candidates: int = Field(default=50, ge=1, le=10_000)
    hnsw_ef_search: int = Field(default=128, ge=1, le=1000)
    keyword_scoring: Literal["bm25", "ts_rank_cd"] = "bm25"
    keyword_budget: int = Field(default=2_000, ge=0, le=100_000_000)  # chunks scored per keyword search; 0: exact
    title_weight: float = Field(default=1.0, ge=0, le=1)
    heading_weight: float = Field(default=0.5, ge=0, le=1)
    recency_half_life_days: float | None = Field(default=None, gt=0)
    recency_field: str = "date"
    search_per_document: int = Field(default=2, ge=0, le=1000)  # 0: no cap on one document's share of the top

    @field_validator("maintenance_work_mem")
    @classmethod
    def _work_mem_range(cls, value: str) -> str:
        match = re.fullmatch(r"([0-9]+)\s*(kB|MB|GB)?\s*", value)
        kilobytes = int(match.group(1)) * {"kB": 1, "MB": 1024, "GB": 1024**2, None: 1}[match.group(2)] if match else 0
        if not 1024 <= kilobytes < 2**31:  # what PostgreSQL accepts
            raise ValueError("maintenance_work_mem must be between 1MB and 2047GB")
        return value

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 100:
            raise ValueError("collection name must be 1-100 characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens ({self.chunk_tokens})"
            )
        if self.rerank_method == "cross_encoder" and self.cross_encoder_path is None:
            raise ValueError("rerank_method cross_encoder needs LADDER_CROSS_ENCODER_PATH (a local model folder)")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("db_pool_min must not exceed db_pool_max")
        return self

    # Views for the layers below: knowledge/ never imports agent/.
    def database_config(self) -> DatabaseConfig:
        return DatabaseConfig(
            url=self.database_url.get_secret_value() if self.database_url else None,
            data_dir=self.data_dir,
            pool_min=self.db_pool_min,
            pool_max=self.db_pool_max,
            statement_timeout_ms=self.db_statement_timeout_ms,
            maintenance_work_mem=self.maintenance_work_mem,
        )

    def embedding_config(self) -> EmbeddingConfig:
        return EmbeddingConfig(
            model=self.embedding_model,
            batch_size=self.embedding_batch_size,
            threads=self.embedding_threads,
            bf16=self.embedding_bf16,
            runtime=self.embedding_runtime,
            api_key=self.openai_api_key.get_secret_value() if self.openai_api_key else None,
            base_url=self.openai_base_url,
        )

    def chunking_config(self, chunk_tokens: int | None = None, overlap: int | None = None) -> ChunkingConfig:
        return ChunkingConfig(
            chunk_tokens=chunk_tokens or self.chunk_tokens,
            overlap=self.chunk_overlap if overlap is None else overlap,
            encoding=self.tokenizer_encoding,
        )

    def search_config(self) -> SearchConfig:
        return SearchConfig(
            rrf_k=self.rrf_k,
            dense_weight=self.hybrid_dense_weight,
            keyword_weight=self.hybrid_keyword_weight,
            candidates=self.hybrid_candidates,
            ef_search=self.hnsw_ef_search,
            keyword_scoring=self.keyword_scoring,
            keyword_budget=self.keyword_budget,
            title_weight=self.title_weight,
            heading_weight=self.heading_weight,
            recency_half_life_days=self.recency_half_life_days,
            recency_field=self.recency_field,
            per_document=self.search_per_document,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    try:
        return Settings()
    except (OSError, UnicodeDecodeError) as exc:  # a .env file that cannot be read, or is not UTF-8
        raise SettingsError(f"cannot read the .env file: {exc}") from exc
