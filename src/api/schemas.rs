//! The API's response bodies as types, for the OpenAPI document.
//!
//! The small bodies are what the handlers serialize. The large documents (export status,
//! schedule, log objects) are still built with `json!` beside the code that owns their fields;
//! their types here mirror them with `additionalProperties: false`, and `deploy/fuzz-api.sh`
//! checks real responses against the document, so a field added on one side only fails the tests.

// The parameter types and the mirrors are read by the document only, never built.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Every error, in Quay's shape.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// The HTTP status again.
    #[schema(example = 400)]
    pub status: u16,
    /// `invalid_request` (400), `invalid_token` (401), `insufficient_scope` (403), `not_found`
    /// (404), `conflict` (409), `gone` (410), `unavailable` (503), `internal_error` (500).
    #[schema(example = "invalid_request")]
    pub error_type: &'static str,
    /// Same as `error_type`.
    pub title: &'static str,
    /// What happened and what to do.
    pub detail: String,
    /// Same as `detail` (Quay's older clients read this one).
    pub error_message: String,
    /// `/api/v1/error/{error_type}`.
    #[serde(rename = "type")]
    #[schema(example = "/api/v1/error/invalid_request")]
    pub kind: String,
}

/// The answer to a queued export (Quay's).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportQueued {
    pub export_id: Uuid,
}

/// The answer to `DELETE /api/v1/exportlogs/{export_id}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelAccepted {
    pub export_id: Uuid,
    /// `cancelled before it started`, or `cancel requested; …` for a running export.
    pub message: &'static str,
}

/// Quay's `status` of a finished export: `success`, `failed`, `timedout`, `invalidrequest`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QuayStatus {
    Success,
    Failed,
    Timedout,
    Invalidrequest,
}

/// An export's or a schedule's filter.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    pub performer: Option<String>,
    pub kind: Vec<String>,
}

/// The delivery of an export's notification.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// `none`: nothing to send yet (the export has not finished); `pending`: due or being
    /// retried; `delivered`: every channel delivered; `failed`: a channel gave up (see
    /// `last_error`); `skipped`: never sent (the export was cancelled).
    pub state: String,
    pub email: Option<String>,
    pub callback_url: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Sent as the callback's `webhook-id`.
    pub webhook_id: String,
}

/// One export's status document (mirrors `status_json`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportStatus {
    pub export_id: Uuid,
    #[schema(value_type = crate::queue::JobState)]
    pub state: String,
    /// Quay's status, once finished (null while queued or running, and when cancelled).
    pub status: Option<QuayStatus>,
    /// `user`, `organization` or `repository`.
    pub scope: String,
    pub namespace: String,
    pub repository: Option<String>,
    pub requested_by: String,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub timezone: String,
    /// The first day, `YYYY-MM-DD` in `timezone`.
    pub start_day: String,
    /// The last day, `YYYY-MM-DD` in `timezone`.
    pub end_day: String,
    /// `json`, `ndjson` or `csv`.
    pub format: String,
    /// `none`, `gzip` or `zstd`.
    pub compression: String,
    /// The schedule that made the export (null for a requested one).
    pub schedule_id: Option<Uuid>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub filters: Filters,
    pub attempts: i32,
    pub max_attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    pub logs_exported: i64,
    pub logs_skipped: i64,
    pub slices_total: i32,
    pub slices_done: i32,
    pub searches_running: i32,
    pub estimated_seconds_left: Option<i64>,
    pub bytes_written: i64,
    /// Quay's field: the signed link sent in the notification, while it is valid.
    pub exported_data_url: Option<String>,
    /// `GET` it for a freshly signed link (302).
    pub download_url: Option<String>,
    pub sha256: Option<String>,
    pub manifest_url: Option<String>,
    pub url_expires_at: Option<DateTime<Utc>>,
    pub object_deleted: bool,
    /// The last attempt's error (null once an attempt succeeded).
    pub last_error: Option<String>,
    /// An earlier attempt's error, when a later attempt succeeded.
    pub previous_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub notification: Notification,
}

/// `GET /api/v1/exportlogs`: newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportList {
    pub exports: Vec<ExportStatus>,
    /// Present when there are more: pass it back as `next_page`.
    pub next_page: Option<String>,
}

/// One public key of the manifest signatures (RFC 8037 JWK).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Jwk {
    #[schema(example = "OKP")]
    pub kty: String,
    #[schema(example = "Ed25519")]
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// The `key_id` manifests name.
    pub kid: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub key_use: String,
    #[schema(example = "EdDSA")]
    pub alg: String,
    /// When the key made its first signature (RFC 3339); absent until it has signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_from: Option<String>,
    /// When the key that replaced it first signed; null while it is the current key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub signing_until: Option<Option<String>>,
}

/// `GET /api/v1/exportlogs/chain` query.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChainParams {
    /// The namespace (user or organization) whose chain head to answer.
    #[param(value_type = NamespaceName)]
    pub namespace: String,
}

/// A JWK set, the current key first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningKeys {
    pub keys: Vec<Jwk>,
}

/// Quay's avatar block.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Avatar {
    pub name: String,
    pub hash: String,
    pub color: String,
    /// `user` or `robot`.
    pub kind: String,
}

/// Who performed the action.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Performer {
    pub kind: String,
    pub name: String,
    pub is_robot: bool,
    pub avatar: Avatar,
}

/// The namespace block of superuser listings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogNamespace {
    /// `org`.
    pub kind: String,
    pub name: String,
    #[schema(value_type = Option<Object>)]
    pub avatar: Option<serde_json::Value>,
}

/// One audit event (Quay's `Log.to_dict`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogObject {
    pub kind: String,
    /// The event's own fields (a JSON object).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub ip: Option<String>,
    /// RFC 2822, e.g. `Tue, 18 Jun 2024 18:59:13 -0000`.
    pub datetime: String,
    pub performer: Option<Performer>,
    /// Superuser listings only.
    pub namespace: Option<LogNamespace>,
}

/// A page of `logs` (Quay's), 20 events, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsPage {
    /// RFC 2822.
    pub start_time: String,
    /// RFC 2822.
    pub end_time: String,
    pub logs: Vec<LogObject>,
    /// Present when there are more: pass it back as `next_page`.
    pub next_page: Option<String>,
    /// Present (true) when Splunk could not answer: `logs` is then empty.
    pub search_unavailable: Option<bool>,
    /// Why Splunk could not answer.
    pub message: Option<String>,
}

/// `aggregatelogs` (Quay's): one entry per kind per day.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregatePage {
    pub aggregated: Vec<crate::logs::AggregateCount>,
    /// Present (true) when Splunk could not answer: `aggregated` is then empty.
    pub search_unavailable: Option<bool>,
    /// Why Splunk could not answer.
    pub message: Option<String>,
}

/// The answer to a created schedule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleCreated {
    pub schedule_id: Uuid,
    pub first_period_start: DateTime<Utc>,
    pub next_run_at: DateTime<Utc>,
}

/// The answer to a deleted schedule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDeleted {
    pub schedule_id: Uuid,
    pub message: &'static str,
}

/// The next period a schedule exports.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NextPeriod {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `YYYY-MM-DD` in the schedule's time zone.
    pub day: String,
}

/// The newest period a schedule enqueued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LastRun {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub export_id: Option<Uuid>,
    pub state: Option<String>,
    pub enqueued_at: DateTime<Utc>,
}

/// Periods skipped while the schedule was paused or behind.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkippedPeriods {
    pub count: i64,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
}

/// One of a schedule's exports.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduledExport {
    pub export_id: Uuid,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub state: String,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A schedule's status document (mirrors `schedule_json`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub schedule_id: Uuid,
    pub owner: String,
    pub scope: String,
    pub namespace: String,
    pub repository: Option<String>,
    /// `daily`, `weekly` or `monthly`.
    pub period: String,
    pub timezone: String,
    pub start_date: String,
    pub first_period_start: DateTime<Utc>,
    pub delay_minutes: i32,
    pub format: String,
    pub compression: String,
    pub filters: Filters,
    pub callback_email: Option<String>,
    pub callback_url: Option<String>,
    /// `active` or `paused`.
    pub state: String,
    pub paused_reason: Option<String>,
    /// Why an active schedule's due runs wait: Quay refuses logexport's own service token
    /// (`auth.quay_service_token`), so its owner cannot be re-checked. Null once Quay answers.
    pub blocked_reason: Option<String>,
    pub blocked_since: Option<DateTime<Utc>>,
    pub next_period: NextPeriod,
    pub next_period_start: DateTime<Utc>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub lag_seconds: i64,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_run: Option<LastRun>,
    pub skipped_periods: SkippedPeriods,
    /// The newest ten.
    pub exports: Vec<ScheduledExport>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A namespace's or repository's schedules.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

/// A user or organization name: lowercase letters and digits, single `.`, `_` or `-` between
/// them, 2 to 255 characters (the API answers 400 to any other).
#[derive(Debug, ToSchema)]
#[schema(pattern = "^[a-z0-9]+([._-][a-z0-9]+)*$", example = "ns0")]
pub struct NamespaceName(String);

/// A repository's name: a lowercase letter or digit, then lowercase letters, digits, `.`, `_`
/// or `-`, at most 255 characters.
#[derive(Debug, ToSchema)]
#[schema(pattern = "^[a-z0-9][a-z0-9._-]*$", example = "repo1")]
pub struct RepoName(String);

/// A user name, or a robot's `namespace+robot`.
#[derive(Debug, ToSchema)]
#[schema(
    pattern = "^[a-z0-9]+([._-][a-z0-9]+)*([+][a-z][a-z0-9_]*)?$",
    example = "alice"
)]
pub struct PerformerName(String);

/// A log kind: lowercase letters, digits and `_`.
#[derive(Debug, ToSchema)]
#[schema(pattern = "^[a-z0-9_]+$", example = "push_repo")]
pub struct LogKind(String);

/// A day, `MM/DD/YYYY` (Quay's) or `YYYY-MM-DD`, or an RFC 3339 instant (a date that does not
/// exist, or a range the server does not allow, is still a 400).
#[derive(Debug, ToSchema)]
#[schema(
    pattern = "^([0-9]{2}/[0-9]{2}/[0-9]{4}|[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?)$",
    example = "01/01/2024"
)]
pub struct DayOrInstant(String);

/// An IANA time zone name, e.g. `Europe/Berlin` (an unknown one is a 400).
#[derive(Debug, ToSchema)]
#[schema(pattern = "^[A-Za-z][A-Za-z0-9_+/-]*$", example = "Europe/Berlin")]
pub struct TimeZoneName(String);

/// A bare e-mail address, `local@domain` with a fully qualified domain (at most 254
/// characters); empty for none.
#[derive(Debug, ToSchema)]
#[schema(
    pattern = "^([A-Za-z0-9_+-]+([.][A-Za-z0-9_+-]+)*@[A-Za-z0-9]+(-[A-Za-z0-9]+)*([.][A-Za-z0-9]+(-[A-Za-z0-9]+)*)+)?$",
    example = "ops@example.com"
)]
pub struct EmailOrNone(String);

/// An `http` or `https` URL; empty for none.
#[derive(Debug, ToSchema)]
#[schema(
    pattern = "^(https?://.+)?$",
    example = "https://hooks.example.com/logexport"
)]
pub struct CallbackUrlOrNone(String);

/// The date range of a listing or an export, as Quay takes it.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// First day: `MM/DD/YYYY` (Quay's), `YYYY-MM-DD` or an RFC 3339 timestamp; default a
    /// month before `endtime`.
    #[param(value_type = Option<DayOrInstant>, example = "01/01/2024")]
    pub starttime: Option<String>,
    /// Last day (included), same forms; default today.
    #[param(value_type = Option<DayOrInstant>, example = "01/31/2024")]
    pub endtime: Option<String>,
    /// IANA time zone the days are in, e.g. `Europe/Berlin`; default UTC.
    #[param(value_type = Option<TimeZoneName>)]
    pub timezone: Option<String>,
}

/// The filters of a listing or an export.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilterParams {
    /// Only this performer's events (a user or robot name).
    #[param(value_type = Option<PerformerName>)]
    pub performer: Option<String>,
    /// Only these kinds (repeatable: `kind=push_repo&kind=delete_tag`).
    #[param(style = Form, explode, value_type = Option<Vec<LogKind>>)]
    pub kind: Option<Vec<String>>,
}

/// The page of a logs listing.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The `next_page` of the previous page (opaque, valid 2 days).
    pub next_page: Option<String>,
}

/// `GET /api/v1/exportlogs` filters.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportListParams {
    /// Only this namespace's exports (all of them for its admins, else the caller's own).
    #[param(value_type = Option<NamespaceName>)]
    pub namespace: Option<String>,
    /// Only this repository's (needs `namespace`).
    #[param(value_type = Option<RepoName>)]
    pub repository: Option<String>,
    /// Only exports in this state.
    pub state: Option<crate::queue::JobState>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `next_page` of the previous page (opaque, bound to the same filters).
    pub next_page: Option<String>,
}

/// A local-storage download link's signature.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadLinkParams {
    /// Unix time the link expires.
    pub expires: Option<String>,
    /// HMAC of the file name and `expires`.
    pub signature: Option<String>,
}

/// An organization (or a user's namespace, as Quay's UI addresses it).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrgPath {
    /// The organization's name.
    #[param(value_type = NamespaceName, example = "ns0")]
    pub orgname: String,
}

/// A repository.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RepoPath {
    /// The repository's namespace (organization or user).
    #[param(value_type = NamespaceName, example = "ns1")]
    pub namespace: String,
    /// The repository's name.
    #[param(value_type = RepoName, example = "repo1")]
    pub repository: String,
}

/// An export.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ExportPath {
    /// The export's id (a UUID; anything else is a 404).
    pub export_id: String,
}

/// A schedule.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SchedulePath {
    /// The schedule's id (a UUID; anything else is a 404).
    pub schedule_id: String,
}

/// Makes a retried request return the first one's export instead of queueing another.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// 1 to 255 printable ASCII characters.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
}

/// The filter of an aggregate listing (`kind` is not taken there, as in Quay).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AggregateFilterParams {
    /// Only this performer's events.
    #[param(value_type = Option<PerformerName>)]
    pub performer: Option<String>,
}
