-- The Splunk search quota as numbered places, one row per place: taking a permit is one
-- statement (the first free place below the process's limit, skipping places another process is
-- taking at that moment), so no lock serialises the processes that ask, and freeing one sends
-- NOTIFY logexport_search_freed, which wakes every process's waiters at once. Replaces
-- splunk_searches (a row per running search counted under an advisory lock, with waiters in
-- other processes polling).
DROP TABLE splunk_searches;
CREATE TABLE splunk_search_slots (
    slot                integer PRIMARY KEY CHECK (slot >= 0),
    permit              uuid UNIQUE,
    holder              text,
    purpose             text,
    acquired_at         timestamptz,
    lease_expires_at    timestamptz
);
