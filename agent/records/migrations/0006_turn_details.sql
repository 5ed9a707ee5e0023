-- The whole turn, for evaluation sets and fine-tuning data: what the model saw and said, step by step.
ALTER TABLE turns
    ADD COLUMN model         text,
    ADD COLUMN settings      jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN sub_questions jsonb,
    ADD COLUMN draft         text,
    ADD COLUMN fact_check    jsonb,
    ADD COLUMN passages      jsonb,
    ADD COLUMN events        jsonb,
    ADD COLUMN model_calls   jsonb;
CREATE INDEX turns_started ON turns (started_at);
