-- 0005: several models and LoRAs. Which model drew a job (its name in IMAGINEBOT_MODELS, '' for a job made
-- before there were names: the first model) and the LoRAs it used (JSON [["name", 0.8], …]); a user's own
-- model in /settings (NULL: the bot's first model).

ALTER TABLE jobs ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN loras TEXT NOT NULL DEFAULT '[]';
ALTER TABLE user_settings ADD COLUMN model TEXT;
