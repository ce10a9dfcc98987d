-- 0008: relax mode, /prefer, and permutation batches waiting for the student's Yes.

-- A relax job (1) waits until no fast job does and costs no quota; it stays relax through a restart.
ALTER TABLE jobs ADD COLUMN relax INTEGER NOT NULL DEFAULT 0;
-- A student's mode in /settings: 0 fast, 1 relax.
ALTER TABLE user_settings ADD COLUMN relax INTEGER NOT NULL DEFAULT 0;

-- A server's own switches, set by moderators. relax 1: a student whose daily quota is used up may still
-- queue in relax (and anyone may choose relax). No row: everything off.
CREATE TABLE guild_settings (
    guild_id INTEGER PRIMARY KEY,
    relax    INTEGER NOT NULL DEFAULT 0
);

-- /prefer option set: a student's own --name shortcut (name stored lower-case, without the dashes).
CREATE TABLE prefer_options (
    user_id INTEGER NOT NULL,
    name    TEXT    NOT NULL,
    value   TEXT    NOT NULL,
    PRIMARY KEY (user_id, name)
);

-- /prefer suffix: added to the end of every /imagine of that student.
CREATE TABLE prefer_suffix (
    user_id INTEGER PRIMARY KEY,
    suffix  TEXT    NOT NULL
);

-- Several jobs from one /imagine (permutations, --repeat), asked before anything is queued. texts: a JSON
-- list of canonical prompts, one per job, seeds drawn; source: an image prompt's picture they share.
CREATE TABLE batches (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- rides in the Yes/No custom_ids: ib:batch:<id>:y
    user_id     INTEGER NOT NULL,
    guild_id    INTEGER NOT NULL,
    channel_id  INTEGER NOT NULL,
    texts       TEXT    NOT NULL,
    source      TEXT,
    state       TEXT    NOT NULL DEFAULT 'asked' CHECK (state IN ('asked', 'queued', 'declined')),
    created_at  TEXT    NOT NULL,
    answered_at TEXT
);
