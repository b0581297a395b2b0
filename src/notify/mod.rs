//! Notification stage: one e-mail or signed callback per finished export.
//!
//! This module performs ONE delivery attempt and classifies its result as a [`Delivery`]
//! (delivered, retry later, give up). Persisting the notification state, scheduling retries and
//! backing off between attempts belong to the queue's notifier loop, so a failing mail server or
//! callback receiver never causes the export itself to run again.

pub mod callback;
pub mod email;
pub mod message;
pub mod notice;
pub mod signing;
pub mod ssrf;
pub mod wording;

pub use callback::{CallbackSender, USER_AGENT, callback_payload};
pub use email::{FileMailer, Mailer, NoMailer, SmtpMailer, mailer_from_config};
pub use notice::{Delivery, Notice, Outcome, download_url};
pub use signing::SigningKey;
