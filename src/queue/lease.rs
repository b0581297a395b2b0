//! What every lease of the queue's tables shares.

use std::time::Duration;

/// For this long after Postgres (re)starts, a lease that lapsed while it was down stays with its
/// holder: a worker that kept its job (or its finished result) through the outage renews or
/// records it within a few seconds of the database's return, and only a holder that gave up or
/// died has its job taken over. Longer than the holders' retry interval (at most 2 s) plus a
/// reconnect.
pub const RESTART_GRACE: Duration = Duration::from_secs(8);
