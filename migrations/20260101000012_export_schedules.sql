-- Scheduled exports: one export per closed period (daily, weekly, monthly) of a schedule.
CREATE TABLE export_schedules (
    id                      uuid PRIMARY KEY,
    -- Whose rights each run is checked against (the creator).
    owner                   text NOT NULL,
    scope                   text NOT NULL CHECK (scope IN ('user', 'organization', 'repository')),
    namespace               text NOT NULL,
    repository              text,
    period                  text NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    timezone                text NOT NULL,
    first_period_start      timestamptz NOT NULL,
    delay_minutes           integer NOT NULL CHECK (delay_minutes >= 0),
    format                  text NOT NULL,
    compression             text NOT NULL,
    performer               text,
    kinds                   text[] NOT NULL DEFAULT '{}',
    callback_url            text,
    callback_email          text,
    state                   text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
    paused_reason           text,
    -- The oldest period neither exported nor skipped, and when it is due (its end + delay).
    next_period_start       timestamptz NOT NULL,
    next_run_at             timestamptz NOT NULL,
    -- Periods older than schedule.max_catch_up_periods when the scheduler came to them.
    skipped_periods         bigint NOT NULL DEFAULT 0,
    oldest_skipped_period   timestamptz,
    newest_skipped_period   timestamptz,
    last_run_at             timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- The scheduler picks due active schedules.
CREATE INDEX export_schedules_due_idx ON export_schedules (next_run_at) WHERE state = 'active';
CREATE INDEX export_schedules_namespace_idx ON export_schedules (namespace, created_at);

-- One row per exported period: the primary key is what makes each period's export exactly once,
-- however many schedulers run. Written in the export's own transaction.
CREATE TABLE schedule_runs (
    schedule_id     uuid NOT NULL REFERENCES export_schedules (id) ON DELETE CASCADE,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    -- Deferred: the run row is written first, its export second, in one transaction.
    export_id       uuid REFERENCES export_jobs (id) ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, period_start)
);

-- Exports a schedule made (its periods and its pause notices). No foreign key: deleting a
-- schedule leaves its exports, and they keep saying where they came from.
ALTER TABLE export_jobs ADD COLUMN schedule_id uuid;
CREATE INDEX export_jobs_schedule_idx ON export_jobs (schedule_id, created_at DESC)
    WHERE schedule_id IS NOT NULL;
