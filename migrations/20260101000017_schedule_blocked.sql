-- A schedule whose owner check cannot be made because Quay refuses logexport's own service token
-- (auth.quay_service_token): the run waits, and the schedule's document says why. Cleared by the
-- next check that Quay answers.
ALTER TABLE export_schedules
    ADD COLUMN blocked_reason text,
    ADD COLUMN blocked_since timestamptz;
