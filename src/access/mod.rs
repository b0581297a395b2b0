//! Who the caller is and what it may do: the permission model that the API (for each request)
//! and the scheduler (for a schedule's owner, before each run) both use.
//!
//! [`Caller`] holds a caller's rights and the rules that judge them; [`tokens`] is the
//! `api_tokens` table behind token mode; [`quay`] asks Quay, which answers for itself in quay
//! mode. The HTTP side (reading the credential off a request) stays in `api::auth`.

mod caller;
pub mod quay;
pub mod tokens;

pub use caller::{Access, Caller, Refusal, Resource};
pub use quay::{QuayClientError, QuayIdentity};
pub use tokens::create_token;
