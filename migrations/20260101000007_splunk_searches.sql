-- Splunk searches running now, across every process: the cluster-wide share of the Splunk role's
-- search quota. A row is a permit, leased and renewed while its search runs.
CREATE TABLE splunk_searches (
    id                  uuid PRIMARY KEY,
    holder              text NOT NULL,
    purpose             text NOT NULL,
    acquired_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_expires_at    timestamptz NOT NULL
);
