-- Every turn of every face, written before the graph runs and completed after it; feedback attaches to a turn.
CREATE TABLE turns (
    turn_id      text PRIMARY KEY,
    thread_id    text NOT NULL,
    face         text NOT NULL DEFAULT 'api',
    question     text NOT NULL,
    collection   text,
    data_source  text,
    switches     jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    answer       text,
    citations    jsonb,
    data         jsonb,
    usage        jsonb,
    error        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX turns_thread ON turns (thread_id, started_at);

CREATE TABLE feedback (
    id                bigserial PRIMARY KEY,
    turn_id           text NOT NULL REFERENCES turns (turn_id) ON DELETE CASCADE,
    rating            text NOT NULL CHECK (rating IN ('up', 'down')),
    comment           text CHECK (length(comment) <= 4000),
    corrected_answer  text CHECK (length(corrected_answer) <= 20000),
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_turn ON feedback (turn_id);
