//! Each run re-checks the schedule owner's rights exactly as the API checks a new request, so a
//! schedule never exports what its owner could no longer export by hand.

use sqlx::PgConnection;

use crate::access::quay::{OwnerTarget, ServiceCheckError};
use crate::access::{Caller, QuayIdentity, tokens};
use crate::config::{AuthConfig, AuthMode};
use crate::domain::{ExportScope, Namespace, RepositoryName};

/// What a schedule exports, for the permission check.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub scope: ExportScope,
    pub namespace: &'a Namespace,
    pub repository: Option<&'a RepositoryName>,
}

/// `Ok(None)` when `owner` may still export `target`; `Ok(Some(reason))` when not, with a reason
/// fit for the schedule's status and its recipients.
///
/// Token mode: the owner's rights now are the union of their tokens that are not revoked, judged
/// by the same [`Caller`] methods the API uses. Quay mode: Quay is asked about the owner with
/// logexport's own token (`auth.quay_service_token`), since the owner sends no credential
/// between runs; without that token nothing can be re-checked, so the answer is no. Quay being
/// unavailable is an error (the run waits for the next tick), never a yes.
pub async fn may_still_export(
    conn: &mut PgConnection,
    auth: &AuthConfig,
    quay: Option<&QuayIdentity>,
    owner: &str,
    target: Target<'_>,
) -> anyhow::Result<Option<String>> {
    if auth.mode == AuthMode::Quay {
        let (Some(quay), false) = (quay, auth.quay_service_token.expose().is_empty()) else {
            return Ok(Some(QUAY_MODE_REFUSAL.into()));
        };
        let owner = Namespace::parse(owner)?;
        let target = OwnerTarget {
            user_scope: target.scope == ExportScope::User,
            namespace: target.namespace,
            repository: target.repository,
        };
        return quay
            .owner_may_export(
                &auth.quay_service_token,
                &owner,
                target,
                auth.superusers_full_access(),
            )
            .await
            .map_err(anyhow::Error::new);
    }
    let Some(caller) = tokens::caller_from_tokens(conn, owner).await? else {
        return Ok(Some(format!("{owner} has no API token any more")));
    };
    let caller = Caller {
        superuser_full_access: auth.superusers_full_access(),
        ..caller
    };
    Ok(refusal(&caller, target))
}

/// Tries `auth.quay_service_token` once against Quay at start-up (quay mode): a token Quay refuses
/// for the owner checks stops start-up with one line naming the key and Quay's answer; Quay
/// being unreachable only warns, since schedules wait for it anyway.
pub async fn check_service_token(auth: &AuthConfig) -> anyhow::Result<()> {
    if auth.mode != AuthMode::Quay || auth.quay_service_token.expose().is_empty() {
        return Ok(());
    }
    let quay = QuayIdentity::new(auth).map_err(anyhow::Error::msg)?;
    match quay.check_service_token(&auth.quay_service_token).await {
        Ok(()) => Ok(()),
        Err(ServiceCheckError::Refused { path, status }) => Err(anyhow::anyhow!(
            "invalid configuration: auth.quay_service_token: Quay answered HTTP {status} on \
             {path}: it cannot check schedule owners; use a global read-only superuser's token \
             (any scope), or, when Quay runs with FEATURE_SUPERUSERS_FULL_ACCESS, a \
             superuser's token with the super:user scope"
        )),
        Err(ServiceCheckError::Unavailable(e)) => {
            tracing::warn!(error = %e, "could not try auth.quay_service_token against Quay at start-up; schedules wait for Quay");
            Ok(())
        }
    }
}

/// Why schedules are not run (nor created) in quay mode without `auth.quay_service_token`: each
/// run must re-check the owner's rights as the API would, and the owner sends no credential.
pub const QUAY_MODE_REFUSAL: &str = "scheduled exports in auth.mode = \"quay\" need \
auth.quay_service_token: logexport re-checks the owner's rights in Quay before each run";

/// The API's decision for `caller` asking to export `target`, in the third person.
pub fn refusal(caller: &Caller, target: Target<'_>) -> Option<String> {
    let owner = &caller.username;
    match (target.scope, target.repository) {
        (ExportScope::User, _) => (target.namespace.as_str() != owner.as_str())
            .then(|| format!("{owner} does not own namespace {}", target.namespace)),
        (ExportScope::Repository, Some(repository)) => {
            (!caller.may_access_repository(target.namespace, repository)).then(|| {
                format!(
                    "{owner} is no longer an administrator of repository {}/{repository}",
                    target.namespace
                )
            })
        }
        (ExportScope::Repository, None) => Some("the schedule names no repository".into()),
        (ExportScope::Organization, _) => {
            (!caller.may_access_organization(target.namespace)).then(|| {
                format!(
                    "{owner} is no longer an administrator of organization {}",
                    target.namespace
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(orgs: &[&str], repos: &[&str]) -> Caller {
        Caller {
            username: "alice".into(),
            admin_orgs: orgs.iter().map(|s| s.to_string()).collect(),
            admin_repos: repos.iter().map(|s| s.to_string()).collect(),
            superuser: false,
            global_readonly_superuser: false,
            superuser_full_access: false,
            quay: None,
        }
    }

    #[test]
    fn the_api_rules_decide_in_the_third_person() {
        let acme = Namespace::parse("acme").unwrap();
        let web = RepositoryName::parse("web").unwrap();
        let org = Target {
            scope: ExportScope::Organization,
            namespace: &acme,
            repository: None,
        };
        let repo = Target {
            scope: ExportScope::Repository,
            namespace: &acme,
            repository: Some(&web),
        };
        assert_eq!(refusal(&caller(&["acme"], &[]), org), None);
        assert_eq!(
            refusal(&caller(&[], &["acme/web"]), org).as_deref(),
            Some("alice is no longer an administrator of organization acme")
        );
        assert_eq!(refusal(&caller(&[], &["acme/web"]), repo), None);
        assert_eq!(refusal(&caller(&["acme"], &[]), repo), None);
        assert_eq!(
            refusal(&caller(&[], &[]), repo).as_deref(),
            Some("alice is no longer an administrator of repository acme/web")
        );
    }
}
