-- Databases the SQL tools may query (read-only), registered with `ladder db add NAME URL`.
CREATE TABLE data_sources (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    url        text NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now()
);
