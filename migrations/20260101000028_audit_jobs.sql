-- Audit events become jobs of the runner (src/worker/jobs, kind 'audit_event', unique key: the
-- event's id), so audit shipping has no loop, claim or retry of its own any more. Every waiting
-- event moves over as it is: its event and id as the job's args, its failed attempts, due time
-- and last error. An event still leased by a shipper of the previous version waits until that
-- lease ends: the old shipper can no longer delete it, so if its post went through, HEC gets the
-- event twice, with the same `id`, rather than never.
INSERT INTO jobs (kind, unique_key, args, state, attempt, run_at, last_error, created_at)
SELECT 'audit_event', id::text, jsonb_build_object('id', id, 'event', event), 'queued', attempts,
       greatest(next_attempt_at, leased_until), last_error, created_at
FROM audit_outbox;

DROP TABLE audit_outbox;
