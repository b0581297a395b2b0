-- The archive's SHA-256 (of the stored bytes) and its signed manifest, kept with the export.
ALTER TABLE export_jobs
    ADD COLUMN sha256 text,
    ADD COLUMN manifest jsonb;
