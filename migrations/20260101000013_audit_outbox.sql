-- Quay's audit events for export requests (export_logs_success / export_logs_failure), written
-- in the request's transaction and shipped to Splunk HEC by the workers: the request never
-- waits on Splunk, and an event survives Splunk being down. Delivered rows are deleted.
CREATE TABLE audit_outbox (
    id uuid PRIMARY KEY,
    event jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text
);

CREATE INDEX audit_outbox_due ON audit_outbox (next_attempt_at);
