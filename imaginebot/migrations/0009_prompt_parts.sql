-- 0009: the rest of the prompt language. A multi-prompt's parts (JSON [["a castle", 0.4], ["fog", -0.2]],
-- the weights normalised; '[]' for a one-part prompt, which is the prompt column alone), --chaos (0-100) and
-- --stop (the percentage of the steps that ran). --q needs no column: it is in the steps.

ALTER TABLE jobs ADD COLUMN parts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN chaos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN stop INTEGER NOT NULL DEFAULT 100;
