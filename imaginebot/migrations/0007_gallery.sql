-- 0007: the class gallery. Students' names, taking an image down, and search by the words of a prompt.

-- Jobs keep user ids only; the gallery shows names. A member's display name on a server is remembered each
-- time they use the bot there (a job, a button, /gallery), so a new name shows from their next use on.
CREATE TABLE members (
    guild_id INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    name     TEXT    NOT NULL,
    seen_at  TEXT    NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

-- A moderator took the job's images down at hidden_at (NULL: shown); undo is possible for a day, after which
-- its files are deleted from disk (purged_at) and the takedown is final.
ALTER TABLE jobs ADD COLUMN hidden_at TEXT;
ALTER TABLE jobs ADD COLUMN hidden_by INTEGER;
ALTER TABLE jobs ADD COLUMN purged_at TEXT;

-- The gallery's pages: a server's shown images newest first, and one student's (keyset paging on id).
CREATE INDEX jobs_gallery ON jobs (guild_id, id) WHERE status = 'done' AND hidden_at IS NULL;
CREATE INDEX jobs_gallery_user ON jobs (guild_id, user_id, id) WHERE status = 'done' AND hidden_at IS NULL;
CREATE INDEX jobs_hidden ON jobs (guild_id, hidden_at) WHERE hidden_at IS NOT NULL;

-- Search by the words of a prompt: an FTS5 index over jobs.prompt (an external-content table: the text is
-- not stored twice), with Porter stemming so that "circles" finds "circle". The triggers keep it in step
-- with the jobs table; the rows already there are indexed by 'rebuild'. A migration that builds the jobs
-- table anew (as 0004 did) drops these triggers with the old table: it must create them again.
CREATE VIRTUAL TABLE jobs_fts USING fts5 (
    prompt, content = 'jobs', content_rowid = 'id', tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO jobs_fts (jobs_fts) VALUES ('rebuild');
CREATE TRIGGER jobs_fts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO jobs_fts (rowid, prompt) VALUES (new.id, new.prompt);
END;
CREATE TRIGGER jobs_fts_delete AFTER DELETE ON jobs BEGIN
    INSERT INTO jobs_fts (jobs_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);
END;
CREATE TRIGGER jobs_fts_update AFTER UPDATE OF prompt ON jobs BEGIN
    INSERT INTO jobs_fts (jobs_fts, rowid, prompt) VALUES ('delete', old.id, old.prompt);
    INSERT INTO jobs_fts (rowid, prompt) VALUES (new.id, new.prompt);
END;
