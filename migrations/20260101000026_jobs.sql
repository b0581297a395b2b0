-- One table for the background work the job runner (src/worker/jobs) runs: a job has a kind and
-- typed arguments, one lease, and every state change is fenced on its attempt number.
CREATE TABLE jobs (
    id                  bigserial PRIMARY KEY,
    kind                text NOT NULL,
    -- With `kind`, makes a job structurally unique: one notification per export.
    unique_key          text,
    args                jsonb NOT NULL,
    -- What earlier attempts finished (a notification's delivered channels), for the next one;
    -- NULL until an attempt saves some.
    progress            jsonb,
    state               text NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    attempt             integer NOT NULL DEFAULT 0,
    -- The kind's configured limit, written again at each claim (a configuration change applies
    -- to waiting jobs); rows inserted by SQL (an export's outcome) hold the default until then.
    max_attempts        integer NOT NULL DEFAULT 1,
    run_at              timestamptz NOT NULL DEFAULT now(),
    lease_owner         text,
    lease_expires_at    timestamptz,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    UNIQUE (kind, unique_key)
);
CREATE INDEX jobs_queued_idx ON jobs (kind, run_at) WHERE state = 'queued';
CREATE INDEX jobs_running_idx ON jobs (kind, lease_expires_at) WHERE state = 'running';

-- Notifications move over as they are: a pending one with its attempts, due time, last error and
-- lease (a lease still held stays with its notifier, which records its result fenced on the
-- attempt), a delivered or failed one as a finished job. 'none' and 'skipped' have no job.
INSERT INTO jobs (kind, unique_key, args, progress, state, attempt, run_at, lease_expires_at,
                  last_error, created_at, finished_at)
SELECT 'notification', id::text, jsonb_build_object('export_id', id),
       jsonb_build_object('email_done', email_done, 'callback_done', callback_done),
       CASE notify_state
           WHEN 'delivered' THEN 'succeeded'
           WHEN 'failed' THEN 'failed'
           WHEN 'pending' THEN
               CASE WHEN notify_lease_expires_at IS NOT NULL THEN 'running' ELSE 'queued' END
       END,
       notify_attempts, coalesce(notify_run_at, finished_at, now()),
       CASE WHEN notify_state = 'pending' THEN notify_lease_expires_at END,
       notify_last_error, coalesce(finished_at, created_at),
       CASE WHEN notify_state = 'delivered' THEN coalesce(notified_at, updated_at)
            WHEN notify_state = 'failed' THEN updated_at END
FROM export_jobs
WHERE notify_state IN ('pending', 'delivered', 'failed');

-- `notify_state` stays on export_jobs as a mirror of the notification job kept by this trigger
-- (and 'skipped' by a cancel), for SQL that reads it there; the code reads the job
-- (queue::storage's export_notifications join).
CREATE FUNCTION jobs_mirror_notify_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'notification' THEN
        UPDATE export_jobs
        SET notify_state = mirrored.state
        FROM (SELECT CASE NEW.state WHEN 'succeeded' THEN 'delivered'
                                    WHEN 'failed' THEN 'failed' ELSE 'pending' END AS state)
             AS mirrored
        WHERE id = (NEW.args ->> 'export_id')::uuid
          AND notify_state IS DISTINCT FROM mirrored.state;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_mirror_notify_state AFTER INSERT OR UPDATE OF state ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_mirror_notify_state();

DROP INDEX export_jobs_notify_idx;
ALTER TABLE export_jobs
    DROP COLUMN notify_attempts,
    DROP COLUMN notify_run_at,
    DROP COLUMN notify_lease_expires_at,
    DROP COLUMN notify_last_error,
    DROP COLUMN notified_at,
    DROP COLUMN email_done,
    DROP COLUMN callback_done;
