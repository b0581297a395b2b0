-- Secrets every process of one deployment must share and that nobody configured: the key that
-- signs local-storage download links (server.signing_key) and the key that seals listing
-- next_page tokens (logs.page_token_key). The first process to need one generates it; every
-- later process (serve, work, run, on any machine) reads the same value, so a link minted by a
-- worker verifies in the API. A configured key always wins and is never stored here.
CREATE TABLE service_secrets (
    name text PRIMARY KEY,
    value text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- When each API token was last looked up (`logexport token list`); updated when a process reads
-- the token from the database, so at most a few seconds behind.
ALTER TABLE api_tokens ADD COLUMN last_used_at timestamptz;

-- The error of an earlier attempt, once a later attempt succeeded: last_error then says nothing,
-- since nothing is wrong any more.
ALTER TABLE export_jobs ADD COLUMN previous_error text;
