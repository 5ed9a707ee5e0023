-- The knowledge base: collections, documents, chunks, and ingest runs.
CREATE EXTENSION IF NOT EXISTS vector;

-- A collection fixes its embedding model and dimension: a query or ingest with another model
-- is refused instead of comparing vectors from different spaces.
CREATE TABLE collections (
    id              serial PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
    embedding_model text NOT NULL,
    dimension       int  NOT NULL CHECK (dimension BETWEEN 1 AND 16000),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE documents (
    id            bigserial PRIMARY KEY,
    collection_id int  NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    doc_id        text NOT NULL,
    source        text NOT NULL,
    title         text NOT NULL DEFAULT '',
    metadata      jsonb NOT NULL DEFAULT '{}',
    content_hash  text NOT NULL,
    chunking      text NOT NULL,
    n_chunks      int  NOT NULL,
    ingested_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (collection_id, doc_id)
);
CREATE INDEX documents_source ON documents (collection_id, source);

-- The tsvector is declared here, not added later: adding a generated column rewrites the table
-- and rebuilds every HNSW index. Title (A) and section heading (B) are weighted apart from the
-- body (D) so that the query can weigh them at search time.
-- embedding has no fixed dimension: each collection gets a partial HNSW index on
-- embedding::vector(n) WHERE collection_id = its id (pgvector's recipe for mixed dimensions).
CREATE TABLE chunks (
    id            bigserial PRIMARY KEY,
    document_id   bigint NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    collection_id int    NOT NULL,
    ordinal       int    NOT NULL,
    title         text   NOT NULL DEFAULT '',
    heading       text   NOT NULL DEFAULT '',
    text          text   NOT NULL,
    n_tokens      int    NOT NULL,
    metadata      jsonb  NOT NULL DEFAULT '{}',
    embedding     vector NOT NULL,
    tsv           tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, title), 'A')
        || setweight(to_tsvector('english'::regconfig, heading), 'B')
        || setweight(to_tsvector('english'::regconfig, text), 'D')
    ) STORED,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_collection ON chunks (collection_id);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
CREATE INDEX chunks_metadata ON chunks USING gin (metadata jsonb_path_ops);

-- Ingest progress lives here, not in one process's memory.
CREATE TABLE ingest_runs (
    id            bigserial PRIMARY KEY,
    collection_id int NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    paths         text[] NOT NULL,
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    files_seen    int NOT NULL DEFAULT 0,
    documents_added int NOT NULL DEFAULT 0,
    documents_updated int NOT NULL DEFAULT 0,
    documents_unchanged int NOT NULL DEFAULT 0,
    documents_pruned int NOT NULL DEFAULT 0,
    chunks_written int NOT NULL DEFAULT 0,
    skipped       jsonb NOT NULL DEFAULT '[]',
    error         text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
