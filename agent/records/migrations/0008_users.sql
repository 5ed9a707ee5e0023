-- Users of the chat and the API: passwords as Argon2id hashes, API tokens as SHA-256 digests
-- (a token is 32 random bytes, so a fast digest is as safe as a slow hash and checks in microseconds).
CREATE TABLE users (
    id            serial PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$'),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id           serial PRIMARY KEY,
    user_id      int  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_sha256 text NOT NULL UNIQUE,
    label        text NOT NULL DEFAULT '' CHECK (length(label) <= 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

-- Who asked: NULL for the local operator (no login: the CLI, or a chat without users). Ids, not
-- names: a removed user's turns must not pass to a later user who takes the same name.
ALTER TABLE turns ADD COLUMN user_id int REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX turns_user ON turns (user_id, started_at);

-- A collection made by a logged-in user is theirs and private until they share it; one made by
-- the operator (owner NULL) is shared and only the operator writes to it.
ALTER TABLE collections
    ADD COLUMN owner_id int REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN visibility text NOT NULL DEFAULT 'shared' CHECK (visibility IN ('private', 'shared'));
