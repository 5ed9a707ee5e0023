-- What a collection is about, in a sentence: the agent's domain prompt for questions about it.
ALTER TABLE collections ADD COLUMN description text NOT NULL DEFAULT '';
