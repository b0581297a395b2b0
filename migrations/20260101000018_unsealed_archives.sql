-- The archive an attempt is about to complete, recorded before the upload is completed and
-- cleared by the seal that names it as the export's object. An attempt that completed its upload
-- but lost its seal (the database went away, the lease ran out) leaves the key here: the next
-- attempt deletes that archive before writing its own, and housekeeping deletes it from an export
-- that ended without one.
ALTER TABLE export_jobs ADD COLUMN unsealed_object_key text;
