//! Notification stage: one e-mail or callback per finished export.

pub mod ssrf;
