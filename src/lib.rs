//! logexport: exports container-registry audit logs from Splunk into object storage.
//!
//! Data flows `api` → `queue` → `worker` → `export` (the job) which reads `splunk`, encodes with
//! `archive`, writes to `storage` and hands the outcome to `notify`. `logs` is the read side;
//! `schedule` turns each closed period of a schedule into one export on the queue. `access` is
//! the permission model both `api` and `schedule` ask. Imports point down the layers that the
//! README's "Code layout" lists (checked by `tests/it/layers.rs`).
//! `emulator` is the local Splunk stand-in used by tests, the demo and the benchmarks.

// The status document is one `json!` literal with more fields than the macro's default depth.
#![recursion_limit = "256"]

pub mod access;
pub mod api;
pub mod archive;
pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod emulator;
pub mod export;
pub mod http_client;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod queue;
pub mod schedule;
pub mod secrets;
pub mod service;
pub mod splunk;
pub mod storage;
pub mod telemetry;
pub mod worker;
