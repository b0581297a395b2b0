-- Exports narrowed like the logs listing: one performer and any of several kinds (empty: all).
ALTER TABLE export_jobs
    ADD COLUMN performer text,
    ADD COLUMN kinds text[] NOT NULL DEFAULT '{}';
