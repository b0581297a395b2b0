-- An outage of this database is no job's fault. `attempt` still grows with every claim (it fences
-- the writes of the worker that held the job before); `attempts_forgiven` counts the attempts an
-- outage ended, which do not count against `max_attempts` (see queue::storage::claim_next).
ALTER TABLE export_jobs ADD COLUMN attempts_forgiven integer NOT NULL DEFAULT 0;

-- Audit events in flight to Splunk HEC are leased, not only row-locked: a lock vanishes with the
-- connection when Postgres goes away, a lease survives it, so an event HEC accepted is deleted by
-- the shipper that sent it, never sent again by another.
ALTER TABLE audit_outbox ADD COLUMN leased_until timestamptz;
