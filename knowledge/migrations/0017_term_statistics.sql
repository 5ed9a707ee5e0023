-- BM25's statistics per collection, kept as chunks are written instead of counted at query time:
-- each lexeme's document frequency (how many chunks hold it), and under the lexeme '' (which no
-- tsvector holds) the collection's chunk count in df and its token total in tokens.
--
-- Writers only append deltas, so concurrent ingests into one collection never wait on each other
-- or deadlock over shared counters; knowledge/term_stats.py folds the deltas into term_stats (one
-- compactor per collection at a time), and a reader sums both. Triggers keep them exact whatever
-- writes the chunks: an ingest, a delete, a cascade from a document, a hand-written statement.
CREATE TABLE term_stats (
    collection_id int    NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    lexeme        text   NOT NULL,
    df            bigint NOT NULL,
    tokens        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (collection_id, lexeme)
);

CREATE TABLE term_stat_deltas (
    collection_id int    NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    lexeme        text   NOT NULL,
    df            bigint NOT NULL,
    tokens        bigint NOT NULL DEFAULT 0
);
CREATE INDEX term_stat_deltas_lexeme ON term_stat_deltas (collection_id, lexeme);

-- A statement that writes chunks adds one delta per (collection, lexeme) it touched. Dropping a
-- whole collection sets ladder.term_stats = 'off' for its transaction: its statistics go with it.
CREATE FUNCTION chunks_term_deltas() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('ladder.term_stats', true) = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO term_stat_deltas (collection_id, lexeme, df, tokens)
        SELECT collection_id, '', -count(*), -sum(n_tokens) FROM old_chunks GROUP BY collection_id
        UNION ALL
        SELECT o.collection_id, t.lexeme, -count(*), 0 FROM old_chunks o, unnest(o.tsv) t GROUP BY 1, 2;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO term_stat_deltas (collection_id, lexeme, df, tokens)
        SELECT collection_id, '', count(*), sum(n_tokens) FROM new_chunks GROUP BY collection_id
        UNION ALL
        SELECT n.collection_id, t.lexeme, count(*), 0 FROM new_chunks n, unnest(n.tsv) t GROUP BY 1, 2;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_term_deltas_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks FOR EACH STATEMENT EXECUTE FUNCTION chunks_term_deltas();
CREATE TRIGGER chunks_term_deltas_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_chunks FOR EACH STATEMENT EXECUTE FUNCTION chunks_term_deltas();
CREATE TRIGGER chunks_term_deltas_update AFTER UPDATE ON chunks
    REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION chunks_term_deltas();

-- The chunks already stored, counted once.
INSERT INTO term_stats (collection_id, lexeme, df, tokens)
SELECT collection_id, '', count(*), sum(n_tokens) FROM chunks GROUP BY collection_id
UNION ALL
SELECT c.collection_id, t.lexeme, count(*), 0 FROM chunks c, unnest(c.tsv) t GROUP BY 1, 2;
