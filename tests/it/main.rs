//! Integration tests against real servers: Postgres, Garage (S3), an SMTP server and the Splunk
//! emulator. Start them with `deploy/test.sh`, which also runs this suite.

mod helpers;

mod api;
mod audit;
mod background;
mod db_outage;
mod delivery;
mod docs_examples;
mod emulator;
mod emulator_costs;
mod evidence;
mod export;
mod export_filters;
mod export_integrity;
mod export_listing;
mod honest_status;
mod job_migration;
mod jobs;
mod layers;
mod logs;
mod metrics;
mod notify;
pub mod operator;
mod outage;
mod quay_auth;
mod quay_parity;
mod quay_standin;
mod queue;
mod resume;
mod schedules;
mod search_quota;
mod splunk;
mod storage;
mod tls;
mod typed_rows;
