-- An export that stops running (it finished, failed, or waits to be tried again) wakes a claimer
-- when its namespace has another export queued and due, which `worker.per_namespace_limit` held
-- back until then (see `queue::storage::finish`). This index answers that question by the
-- namespace, whatever the queue's length.
CREATE INDEX export_jobs_queued_ns_idx ON export_jobs (namespace, run_at) WHERE state = 'queued';
