-- Question -> SQL pairs per data source: the few-shot examples retrieved by similarity (RAG for SQL).
CREATE TABLE sql_examples (
    id         bigserial PRIMARY KEY,
    source     text NOT NULL,
    question   text NOT NULL CHECK (length(question) BETWEEN 1 AND 4000),
    sql        text NOT NULL CHECK (length(sql) BETWEEN 1 AND 20000),
    model      text NOT NULL,
    embedding  vector NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, question)
);
