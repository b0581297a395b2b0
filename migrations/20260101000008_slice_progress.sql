-- A running export's time slices: how many, how many read, how many searches read now.
ALTER TABLE export_jobs
    ADD COLUMN slices_total integer NOT NULL DEFAULT 0,
    ADD COLUMN slices_done integer NOT NULL DEFAULT 0,
    ADD COLUMN searches_running integer NOT NULL DEFAULT 0;
