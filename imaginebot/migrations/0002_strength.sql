-- img2img strength of a job (Vary (Subtle) / Vary (Strong)); 1.0 leaves the choice to the engine.
ALTER TABLE jobs ADD COLUMN strength REAL NOT NULL DEFAULT 1.0;
