-- Evaluation runs of the ladder: every rung's result per example, so a crashed run resumes where it stopped.
CREATE TABLE eval_runs (
    id           bigserial PRIMARY KEY,
    dataset      text NOT NULL,
    collection   text,
    model        text NOT NULL,
    judge        text,
    rungs        jsonb NOT NULL,
    settings     jsonb NOT NULL DEFAULT '{}',
    n_examples   int NOT NULL,
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE TABLE eval_results (
    run_id      bigint NOT NULL REFERENCES eval_runs (id) ON DELETE CASCADE,
    rung        text NOT NULL,
    example_id  text NOT NULL,
    position    int NOT NULL,
    question    text NOT NULL,
    answer      text,
    retrieved   jsonb,
    metrics     jsonb NOT NULL DEFAULT '{}',
    usage       jsonb,
    seconds     double precision,
    error       text,
    turn_id     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, rung, example_id)
);
