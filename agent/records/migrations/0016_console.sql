-- The operator's console (agent/chat/console/): roles, the review queue's decisions and named eval sets.
-- A user is an ordinary user or an operator; the local no-login mode (no users) is the operator.
ALTER TABLE users ADD COLUMN role text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'operator'));

-- What a reviewer decided about a queued turn: accepted into a set, or dismissed with a reason.
-- One decision per turn; a turn with a decision leaves the queue.
CREATE TABLE review_decisions (
    turn_id     text PRIMARY KEY REFERENCES turns (turn_id) ON DELETE CASCADE,
    decision    text NOT NULL CHECK (decision IN ('accepted', 'dismissed')),
    reason      text CHECK (length(reason) <= 4000),
    reviewer    text,  -- the user name, NULL for the local operator
    decided_at  timestamptz NOT NULL DEFAULT now()
);

-- A named eval set: its version goes up by one whenever an item is added, edited or removed,
-- and every version's items can be read again (items keep the versions they were valid in).
CREATE TABLE eval_sets (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    version     int NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- An item as it was from version valid_from until (excluding) valid_to; NULL valid_to: current.
-- Items are never updated in place (an edit closes the row and opens a new one), so a set at any
-- version is: valid_from <= v AND (valid_to IS NULL OR valid_to > v).
CREATE TABLE eval_set_items (
    id                 bigserial PRIMARY KEY,
    set_id             int NOT NULL REFERENCES eval_sets (id) ON DELETE CASCADE,
    item_id            text NOT NULL CHECK (length(item_id) BETWEEN 1 AND 200),
    question           text NOT NULL CHECK (length(question) BETWEEN 1 AND 20000),
    reference_answer   text NOT NULL CHECK (length(reference_answer) BETWEEN 1 AND 20000),
    reference_contexts jsonb NOT NULL DEFAULT '[]',
    reference_doc_ids  jsonb NOT NULL DEFAULT '[]',
    turn_id            text,  -- the turn it was reviewed from (kept when the turn is pruned)
    valid_from         int NOT NULL,
    valid_to           int,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX eval_set_items_current ON eval_set_items (set_id, item_id) WHERE valid_to IS NULL;
CREATE INDEX eval_set_items_set ON eval_set_items (set_id, valid_from);
