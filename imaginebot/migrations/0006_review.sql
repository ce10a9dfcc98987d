-- 0006: image moderation (IMAGINEBOT_SAFETY_CHECKER). Which of a job's images the safety checker flagged
-- (JSON list of 0-based tile indices), and where a moderator's review of them stands: NULL when nothing
-- was flagged, then 'waiting', 'released' or 'removed', by whom and when.

ALTER TABLE jobs ADD COLUMN flagged TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN review TEXT CHECK (review IN ('waiting', 'released', 'removed'));
ALTER TABLE jobs ADD COLUMN reviewed_by INTEGER;
ALTER TABLE jobs ADD COLUMN reviewed_at TEXT;
CREATE INDEX jobs_waiting_for_review ON jobs (guild_id, id) WHERE review = 'waiting';
