-- 0001: jobs, usage and quotas, per-user settings, moderation.
-- Times are ISO-8601 UTC strings ("2024-05-01T12:34:56.789+00:00"); days are "YYYY-MM-DD" (UTC).
-- guild_id 0 stands for direct messages.

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- rides in button custom_ids: ib:u:<id>:<tile>
    user_id         INTEGER NOT NULL,
    guild_id        INTEGER NOT NULL,
    channel_id      INTEGER NOT NULL,
    message_id      INTEGER,                            -- set once the reply exists; tokens expire, ids don't
    kind            TEXT    NOT NULL CHECK (kind IN ('imagine', 'variation', 'upscale', 'reroll')),
    parent_id       INTEGER REFERENCES jobs (id),
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
    elapsed_s       REAL
);
CREATE INDEX jobs_status ON jobs (status);
CREATE INDEX jobs_user ON jobs (guild_id, user_id, created_at);
CREATE INDEX jobs_parent ON jobs (parent_id);

CREATE TABLE usage (
    guild_id INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    day      TEXT    NOT NULL,
    images   INTEGER NOT NULL CHECK (images >= 0),
    PRIMARY KEY (guild_id, user_id, day)
);

-- daily_images NULL means unlimited.
CREATE TABLE guild_quotas (
    guild_id     INTEGER PRIMARY KEY,
    daily_images INTEGER CHECK (daily_images IS NULL OR daily_images >= 0)
);

CREATE TABLE user_quotas (
    guild_id     INTEGER NOT NULL,
    user_id      INTEGER NOT NULL,
    daily_images INTEGER CHECK (daily_images IS NULL OR daily_images >= 0),
    PRIMARY KEY (guild_id, user_id)
);

-- NULL in a column: no preference, the bot's default applies.
CREATE TABLE user_settings (
    user_id INTEGER PRIMARY KEY,
    steps   INTEGER,
    cfg     REAL,
    aspect  TEXT,
    sampler TEXT,
    images  INTEGER
);

CREATE TABLE blocked_users (
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    blocked_by INTEGER NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    blocked_at TEXT    NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE banned_words (
    guild_id INTEGER NOT NULL,
    word     TEXT    NOT NULL,  -- stored lower-case
    added_by INTEGER NOT NULL,
    added_at TEXT    NOT NULL,
    PRIMARY KEY (guild_id, word)
);

CREATE TABLE moderation_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id  INTEGER NOT NULL,
    actor_id  INTEGER NOT NULL,
    action    TEXT    NOT NULL,
    target_id INTEGER,
    detail    TEXT    NOT NULL DEFAULT '',
    at        TEXT    NOT NULL
);
CREATE INDEX moderation_log_guild ON moderation_log (guild_id, id);
