//! The OpenAPI 3.1 document, generated from the handlers' annotations and the response types,
//! served at `GET /api/v1/openapi.json`.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{chain, exportlogs, exports, health, logs, schedules, schemas, status};

const DESCRIPTION: &str = "Exports container-registry audit logs from Splunk to object storage. \
Speaks Project Quay's `logs`, `aggregatelogs` and `exportlogs` API (same paths, parameters, \
response and error shapes), plus export status, downloads, signed manifests and scheduled exports.\n\n\
Authentication: `Authorization: Bearer <token>` with a token made by `logexport token create`. \
Beside Quay (`auth.mode = \"quay\"`), a Quay OAuth token or Quay's session cookie is accepted \
instead; state-changing requests with the cookie must carry `X-Requested-With`.\n\n\
Every error is Quay's `{\"status\", \"error_type\", \"title\", \"detail\", \"error_message\", \"type\"}`.";

/// The document's paths and components.
#[derive(OpenApi)]
#[openapi(
    info(title = "logexport", description = DESCRIPTION, license(name = "Apache-2.0")),
    paths(
        exportlogs::user,
        exportlogs::organization,
        exportlogs::repository,
        logs::user_logs,
        logs::user_aggregate,
        logs::org_logs,
        logs::org_aggregate,
        logs::repo_logs,
        logs::repo_aggregate,
        logs::superuser_logs,
        logs::superuser_aggregate,
        exports::list,
        status::get,
        status::cancel,
        exports::download,
        exports::manifest,
        chain::signing_keys,
        chain::head,
        schedules::create_user,
        schedules::list_user,
        schedules::create_organization,
        schedules::list_organization,
        schedules::create_repository,
        schedules::list_repository,
        schedules::get,
        schedules::update,
        schedules::delete,
        openapi_json,
        health::healthz,
        health::readyz,
        health::metrics,
        super::download::serve_download,
    ),
    // The names only parameters use (a body's or a response's are collected on their own).
    components(schemas(
        schemas::NamespaceName,
        schemas::RepoName,
        schemas::DayOrInstant,
        schemas::LogKind
    )),
    security(("bearer" = [])),
    modifiers(&BearerAuth),
    tags(
        (name = "exports", description = "Quay's exportlogs: queue an export"),
        (name = "logs", description = "Quay's logs and aggregatelogs, served from Splunk"),
        (name = "export status", description = "Beyond Quay: status, cancel, listing, download, manifests"),
        (name = "schedules", description = "Beyond Quay: scheduled exports"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the document's `security` names.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A logexport token (`logexport token create`); beside Quay also a Quay \
                         OAuth token, or Quay's session cookie",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, rendered once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}"))
});

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document (no authentication).
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    operation_id = "getOpenApi",
    security(()),
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_openapi_3_1_with_every_quay_route_and_the_error_shape() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).expect("renders as JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/api/v1/user/exportlogs",
            "/api/v1/organization/{orgname}/exportlogs",
            "/api/v1/repository/{namespace}/{repository}/exportlogs",
            "/api/v1/superuser/logs",
            "/api/v1/repository/{namespace}/{repository}/aggregatelogs",
            "/api/v1/exportlogs/chain",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is documented");
        }
        let error = &doc["components"]["schemas"]["ErrorBody"];
        let mut fields: Vec<&str> = error["required"]
            .as_array()
            .expect("required fields")
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "detail",
                "error_message",
                "error_type",
                "status",
                "title",
                "type"
            ]
        );
        assert_eq!(error["additionalProperties"], false);
    }

    /// The document's pattern of a named string schema, without its anchors.
    fn pattern(doc: &serde_json::Value, name: &str) -> String {
        let pattern = doc["components"]["schemas"][name]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has a pattern"));
        pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .unwrap_or_else(|| panic!("{name}'s pattern is anchored"))
            .to_owned()
    }

    #[test]
    fn every_name_the_document_allows_the_server_accepts() {
        use crate::domain::{EmailAddress, LogFilter, Namespace, Performer, RepositoryName};
        use proptest::test_runner::{Config, TestRunner};
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).expect("renders as JSON");
        type Check = fn(&str) -> bool;
        let checks: [(&str, Check); 5] = [
            ("NamespaceName", |v| Namespace::parse(v).is_ok()),
            ("RepoName", |v| RepositoryName::parse(v).is_ok()),
            ("PerformerName", |v| Performer::parse(v).is_ok()),
            ("LogKind", |v| LogFilter::parse(None, [v]).is_ok()),
            ("EmailOrNone", |v| EmailAddress::parse(v).is_ok()),
        ];
        for (name, accepts) in checks {
            let strings = proptest::string::string_regex(&pattern(&doc, name))
                .unwrap_or_else(|e| panic!("{name}'s pattern: {e}"));
            TestRunner::new(Config::with_cases(500))
                .run(&strings, |value| {
                    // Lengths are in the descriptions (a pattern of unnamed fields takes none).
                    if (2..=64).contains(&value.len()) {
                        proptest::prop_assert!(accepts(&value), "{name} {value:?} is refused");
                    }
                    Ok(())
                })
                .unwrap();
        }
    }
}
