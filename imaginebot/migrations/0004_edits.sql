-- 0004: the editing tools. A new job kind, 'edit' (Zoom Out, Pan, Make Square, Vary (Region) of an upscale:
-- which one, and how, in the JSON column edit); seamless tiling (--tile); image prompts (source: the
-- picture /imagine was given, relative to the data directory).
-- SQLite can't change a CHECK constraint, so the jobs table is built anew (sqlite.org/lang_altertable.html,
-- "making other kinds of table schema changes"). Its rows reference each other (parent_id), so the new
-- table references itself; the RENAME makes that "REFERENCES jobs" (migrations run with foreign keys on,
-- inside one transaction, where they can't be switched off).

CREATE TABLE jobs_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- rides in button custom_ids: ib:u:<id>:<tile>
    user_id         INTEGER NOT NULL,
    guild_id        INTEGER NOT NULL,
    channel_id      INTEGER NOT NULL,
    message_id      INTEGER,                            -- set once the reply exists; tokens expire, ids don't
    kind            TEXT    NOT NULL CHECK (kind IN ('imagine', 'variation', 'upscale', 'reroll', 'edit')),
    parent_id       INTEGER REFERENCES jobs_new (id),
    tile_index      INTEGER,                            -- which tile of the parent (V/U), 0-based
    prompt_text     TEXT    NOT NULL,                   -- canonical /imagine text, flags included
    prompt          TEXT    NOT NULL,
    negative_prompt TEXT    NOT NULL DEFAULT '',
    steps           INTEGER NOT NULL,
    cfg             REAL    NOT NULL,
    sampler         TEXT    NOT NULL,
    width           INTEGER NOT NULL,
    height          INTEGER NOT NULL,
    seeds           TEXT    NOT NULL,                   -- JSON list, one seed per tile
    status          TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted')),
    error           TEXT    NOT NULL DEFAULT '',
    note            TEXT    NOT NULL DEFAULT '',
    images          TEXT    NOT NULL DEFAULT '[]',      -- JSON list of paths relative to the data directory
    grid            TEXT,                               -- path of grid.png relative to the data directory
    charged         INTEGER NOT NULL DEFAULT 0,         -- images taken from the quota and not given back
    charged_day     TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    elapsed_s       REAL,
    delivery        TEXT CHECK (delivery IN ('pending', 'delivered', 'gone', 'expired')),
    delivered_at    TEXT,
    strength        REAL,                               -- img2img strength; NULL: the engine's choice
    edit            TEXT,                               -- JSON: {"kind": "zoom", "factor": 2.0}, … (kind 'edit')
    tile            INTEGER NOT NULL DEFAULT 0,         -- 1: --tile, a seamless pattern
    source          TEXT                                -- an image prompt's picture, relative to the data dir
);
INSERT INTO jobs_new (id, user_id, guild_id, channel_id, message_id, kind, parent_id, tile_index, prompt_text,
                      prompt, negative_prompt, steps, cfg, sampler, width, height, seeds, status, error, note,
                      images, grid, charged, charged_day, created_at, started_at, finished_at, elapsed_s,
                      delivery, delivered_at, strength)
SELECT id, user_id, guild_id, channel_id, message_id, kind, parent_id, tile_index, prompt_text, prompt,
       negative_prompt, steps, cfg, sampler, width, height, seeds, status, error, note, images, grid, charged,
       charged_day, created_at, started_at, finished_at, elapsed_s, delivery, delivered_at, strength
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_status ON jobs (status);
CREATE INDEX jobs_user ON jobs (guild_id, user_id, created_at);
CREATE INDEX jobs_parent ON jobs (parent_id);
CREATE INDEX jobs_undelivered ON jobs (id) WHERE delivery = 'pending';

-- Remix mode (/settings): V, 🔄, Vary, Zoom and Pan first open the prompt for editing.
ALTER TABLE user_settings ADD COLUMN remix INTEGER NOT NULL DEFAULT 0;
