-- 0003: delivery is a state of its own, and a job's img2img strength may be left to the engine.

-- A job's life: queued -> running -> done (or failed, cancelled, interrupted) -> delivered. delivery is NULL
-- while the job runs; 'pending' once it has ended and until its message shows how; then 'delivered', 'gone'
-- (the message was deleted: nobody is waiting) or 'expired' (not delivered within the bound; given up).
ALTER TABLE jobs ADD COLUMN delivery TEXT CHECK (delivery IN ('pending', 'delivered', 'gone', 'expired'));
ALTER TABLE jobs ADD COLUMN delivered_at TEXT;
-- Jobs that ended before this migration had their messages edited then, or never will.
UPDATE jobs SET delivery = 'delivered' WHERE status NOT IN ('queued', 'running');
CREATE INDEX jobs_undelivered ON jobs (id) WHERE delivery = 'pending';

-- strength NULL: the engine's choice. It was 1.0 for that, which also meant "start from pure noise".
ALTER TABLE jobs ADD COLUMN strength_unset_null REAL;
UPDATE jobs SET strength_unset_null = NULLIF(strength, 1.0);
ALTER TABLE jobs DROP COLUMN strength;
ALTER TABLE jobs RENAME COLUMN strength_unset_null TO strength;

-- banned_words.word is case-folded from now on ("straße" -> "strasse"); rows stored lower-cased before are
-- compared through the same normaliser when prompts are checked, so nothing needs rewriting here.
