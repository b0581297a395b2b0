-- An export may notify by e-mail and by callback; each channel is delivered (or given up) once,
-- so a retry of one never repeats the other.
ALTER TABLE export_jobs
    ADD COLUMN email_done boolean NOT NULL DEFAULT false,
    ADD COLUMN callback_done boolean NOT NULL DEFAULT false;
