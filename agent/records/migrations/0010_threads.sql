-- Who owns a thread, kept apart from the turn log: access to a thread must not depend on which of
-- its turns retention kept. The row is written with the thread's first turn and outlives its turns
-- (it holds no text), so a pruned thread's id never passes to another user.
CREATE TABLE threads (
    thread_id  text PRIMARY KEY,
    user_id    int REFERENCES users (id) ON DELETE SET NULL,  -- NULL: the local operator (as for turns)
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX threads_user ON threads (user_id);

-- Existing threads: the one user all their turns share; a thread whose turns disagree (the operator
-- added to a user's thread) goes to the operator, so no user gains a thread they could not continue.
INSERT INTO threads (thread_id, user_id, created_at)
SELECT thread_id,
       CASE WHEN count(DISTINCT coalesce(user_id, -1)) = 1 THEN min(user_id) END,
       min(started_at)
FROM turns
GROUP BY thread_id;
