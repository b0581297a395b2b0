-- The export listing pages newest first through a namespace's exports or a requester's own.
CREATE INDEX export_jobs_namespace_created_idx ON export_jobs (namespace, created_at DESC, id DESC);
CREATE INDEX export_jobs_requester_created_idx ON export_jobs (requested_by, created_at DESC, id DESC);
