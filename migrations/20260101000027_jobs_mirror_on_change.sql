-- The notification's state on the export's row (`export_jobs.notify_state`, kept for SQL that
-- reads it there) is written as `pending` by the statement that enqueues the notification, so the
-- mirror trigger only needs to follow the job's later state changes: on every export's finish it
-- fired for nothing, and claim + complete ran 16 % slower (docs/benchmarks.md).
DROP TRIGGER jobs_mirror_notify_state ON jobs;
CREATE TRIGGER jobs_mirror_notify_state AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION jobs_mirror_notify_state();
