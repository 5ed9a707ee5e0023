-- A source whose role may do more than read (write, read server files, create roles) is refused
-- unless it was registered with `ladder db add --allow-privileged`; queries still run READ ONLY.
ALTER TABLE data_sources ADD COLUMN allow_privileged boolean NOT NULL DEFAULT false;
