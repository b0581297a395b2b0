-- How far a running export got, durably: its finished time slices and the upload holding them
-- (multipart upload id, parts and ETags, or the partial file's length), so the next attempt
-- continues instead of starting over. Written fenced by attempt; cleared when the export ends.
ALTER TABLE export_jobs ADD COLUMN checkpoint jsonb;
