-- Failed logins per client address and per user name, shared by every chat server process. A key
-- that failed too often may not try again before next_at (a delay that doubles, capped); an attempt
-- refused that way is answered without checking the password. Rows quiet for a window are pruned.
CREATE TABLE login_attempts (
    kind     text NOT NULL CHECK (kind IN ('address', 'name')),
    key      text NOT NULL CHECK (length(key) BETWEEN 1 AND 100),
    failures int  NOT NULL DEFAULT 0 CHECK (failures >= 0),
    next_at  timestamptz NOT NULL DEFAULT now(),
    last_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
CREATE INDEX login_attempts_last ON login_attempts (last_at);

-- Bumped by every password change: a browser session made under an older generation has ended
-- (every server process compares it, agent/chat/login.py). A removed user's sessions end with the row.
ALTER TABLE users ADD COLUMN session_generation int NOT NULL DEFAULT 0;
