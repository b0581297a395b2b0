-- Evidence for a series of exports (issue 26).
--
-- Each namespace's exports form one chain of manifests. The head row is locked (FOR UPDATE)
-- while a link is added, so two exports of one namespace finishing at once get consecutive
-- numbers; the number is written on the export in the same transaction and kept by retries.
CREATE TABLE export_chains (
    namespace       text PRIMARY KEY,
    -- The last link's number (0: no link yet) and the SHA-256 of its canonical manifest bytes.
    sequence        bigint NOT NULL DEFAULT 0,
    manifest_sha256 text,
    export_id       uuid,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The export's link in its namespace's chain; set once, when the archive is sealed.
ALTER TABLE export_jobs ADD COLUMN chain_sequence bigint;
CREATE UNIQUE INDEX export_jobs_chain_idx ON export_jobs (namespace, chain_sequence)
    WHERE chain_sequence IS NOT NULL;

-- When each manifest signing key signed: from its first signature until the first signature
-- of the key that replaced it (NULL while it is the current key). The first key recorded gets
-- no start (NULL): it may have signed manifests before this history began.
CREATE TABLE manifest_signing_keys (
    key_id          text PRIMARY KEY,
    jwk             jsonb NOT NULL,
    signing_from    timestamptz,
    signing_until   timestamptz
);
