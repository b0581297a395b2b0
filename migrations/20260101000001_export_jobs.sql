-- Export requests and their progress through the queue, the export and the notification stage.
CREATE TABLE export_jobs (
    id                  uuid PRIMARY KEY,
    scope               text NOT NULL CHECK (scope IN ('user', 'organization', 'repository')),
    namespace           text NOT NULL,
    repository          text,
    requested_by        text NOT NULL,
    start_time          timestamptz NOT NULL,
    end_time            timestamptz NOT NULL,
    timezone            text NOT NULL DEFAULT 'UTC',
    format              text NOT NULL,
    compression         text NOT NULL,
    callback_url        text,
    callback_email      text,
    idempotency_key     text,

    state               text NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'invalid', 'cancelled')),
    attempt             integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL,
    run_at              timestamptz NOT NULL DEFAULT now(),
    lease_expires_at    timestamptz,
    worker_id           text,
    cancel_requested    boolean NOT NULL DEFAULT false,

    logs_exported       bigint NOT NULL DEFAULT 0,
    logs_skipped        bigint NOT NULL DEFAULT 0,
    bytes_written       bigint NOT NULL DEFAULT 0,
    object_key          text,
    download_url        text,
    url_expires_at      timestamptz,
    object_deleted_at   timestamptz,
    last_error          text,

    -- The notification stage: its own state, attempts and lease, independent of the export's.
    notify_state        text NOT NULL DEFAULT 'none'
                        CHECK (notify_state IN ('none', 'pending', 'delivered', 'failed', 'skipped')),
    notify_attempts     integer NOT NULL DEFAULT 0,
    notify_run_at       timestamptz,
    notify_lease_expires_at timestamptz,
    notify_last_error   text,
    notified_at         timestamptz,
    webhook_id          text NOT NULL,

    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz
);

-- The claim query: runnable queued jobs by due time, and running jobs whose lease expired.
CREATE INDEX export_jobs_queued_idx ON export_jobs (run_at) WHERE state = 'queued';
CREATE INDEX export_jobs_running_idx ON export_jobs (lease_expires_at) WHERE state = 'running';
-- The per-namespace limit counts running jobs of one namespace.
CREATE INDEX export_jobs_running_ns_idx ON export_jobs (namespace) WHERE state = 'running';
-- The notifier picks due notifications.
CREATE INDEX export_jobs_notify_idx ON export_jobs (notify_run_at) WHERE notify_state = 'pending';
-- Retention and object expiry.
CREATE INDEX export_jobs_finished_idx ON export_jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX export_jobs_idempotency_idx ON export_jobs (requested_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX export_jobs_requested_by_idx ON export_jobs (requested_by);

CREATE TABLE api_tokens (
    id              uuid PRIMARY KEY,
    token_hash      bytea NOT NULL UNIQUE,
    username        text NOT NULL,
    admin_orgs      text[] NOT NULL DEFAULT '{}',
    admin_repos     text[] NOT NULL DEFAULT '{}',
    superuser       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
