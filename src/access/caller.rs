//! A caller's rights and the rules that judge them: the token's own rights in token mode, Quay's
//! answer in quay mode. The API asks them for each request; the scheduler asks them for a
//! schedule's owner before each run.

use crate::domain::{ExportScope, Namespace, RepositoryName};

use super::quay::{Answer, Credential, QuayIdentity, QuayUnavailable, QuayUser, Question};

/// Whose logs a request reads or exports, for [`Caller::authorize`].
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// The caller's own user namespace (Quay's `/api/v1/user/…` endpoints).
    User,
    Organization(&'a Namespace),
    Repository(&'a Namespace, &'a RepositoryName),
    /// Every namespace (Quay's `/api/v1/superuser/logs`).
    Registry,
}

/// What a request does with a [`Resource`]'s logs: Quay guards its `logs`/`aggregatelogs`
/// (read) and `exportlogs` (export) endpoints differently for repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Export,
}

/// Why a caller may not do what it asked. The API answers each with its own status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The caller lacks the right (403).
    #[error("{0}")]
    Forbidden(String),
    /// Quay found no such thing once its permission test passed (404).
    #[error("{0}")]
    NotFound(String),
    /// Quay does not accept the credential (401).
    #[error("Quay does not accept the credential")]
    CredentialRefused,
    /// Quay could not be asked (503): never a grant.
    #[error(transparent)]
    QuayUnavailable(#[from] QuayUnavailable),
}

/// The authenticated caller and what it administers.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Caller {
    pub username: String,
    pub admin_orgs: Vec<String>,
    pub admin_repos: Vec<String>,
    pub superuser: bool,
    /// Quay's global read-only superuser (`global_readonly_super_user` in `endpoints/api/user.py`):
    /// reads every log and exports users' and organizations' logs, never a repository's. Token mode
    /// has no such token yet, hence the default.
    #[sqlx(default)]
    pub global_readonly_superuser: bool,
    /// Superusers reach every namespace (Quay's `FEATURE_SUPERUSERS_FULL_ACCESS`, from
    /// `auth.superusers_full_access`); without it they read the registry-wide logs only.
    #[sqlx(default)]
    pub superuser_full_access: bool,
    /// Quay mode: the caller's own Quay credential, to put each permission question to Quay.
    /// The user name is empty when Quay would not say who it is (no `user:read` scope).
    #[sqlx(skip)]
    pub quay: Option<Credential>,
}

impl Caller {
    /// Admin of the namespace (its organization admin, the user itself) or superuser.
    pub fn administers_namespace(&self, namespace: &str) -> bool {
        (self.superuser && self.superuser_full_access)
            || self.username == namespace
            || self.admin_orgs.iter().any(|o| o == namespace)
    }

    /// May export / read the organization's logs. As in Quay (`auth/permissions.py`), a user
    /// administers its own namespace, and Quay's UI addresses that namespace as an organization
    /// (`web/src/hooks/UseUsageLogs.ts`), so the user whose namespace it is passes too.
    pub fn may_access_organization(&self, org: &Namespace) -> bool {
        self.administers_namespace(org.as_str()) || self.global_readonly_superuser
    }

    /// May read the repository's logs: its admins, and global read-only superusers
    /// (`require_repo_admin(allow_for_global_readonly_superuser=True)` in Quay's `logs.py`).
    pub fn may_read_repository(&self, namespace: &Namespace, repository: &RepositoryName) -> bool {
        self.may_access_repository(namespace, repository) || self.global_readonly_superuser
    }

    /// May read the registry-wide logs (Quay's `/api/v1/superuser/logs`).
    pub fn may_read_superuser_logs(&self) -> bool {
        self.superuser || self.global_readonly_superuser
    }

    /// May export the repository's logs (and read them, see [`Caller::may_read_repository`]).
    pub fn may_access_repository(
        &self,
        namespace: &Namespace,
        repository: &RepositoryName,
    ) -> bool {
        let full = format!("{namespace}/{repository}");
        self.administers_namespace(namespace.as_str()) || self.admin_repos.contains(&full)
    }
}

impl Caller {
    /// A caller as Quay describes it (`user_view`), when the credential may read that.
    pub fn from_quay(user: &QuayUser, credential: Credential, full_access: bool) -> Self {
        Self {
            username: user.username.clone(),
            admin_orgs: Vec::new(),
            admin_repos: Vec::new(),
            superuser: user.super_user,
            global_readonly_superuser: user.global_readonly_super_user,
            superuser_full_access: full_access,
            quay: Some(credential),
        }
    }

    /// A Quay credential whose owner Quay would not name: every question still goes to Quay.
    pub fn unidentified(credential: Credential, full_access: bool) -> Self {
        Self {
            username: String::new(),
            admin_orgs: Vec::new(),
            admin_repos: Vec::new(),
            superuser: false,
            global_readonly_superuser: false,
            superuser_full_access: full_access,
            quay: Some(credential),
        }
    }

    /// The caller's user name, when known (always in token mode; beside Quay when the credential
    /// may read the user).
    pub fn known_username(&self) -> Option<&str> {
        Some(self.username.as_str()).filter(|u| !u.is_empty())
    }

    /// Whether the caller may `access` the logs of `resource`: [`Refusal::Forbidden`] when not,
    /// [`Refusal::CredentialRefused`] when Quay does not accept the credential,
    /// [`Refusal::QuayUnavailable`] when Quay cannot be asked.
    ///
    /// Token mode: the token's rights. Quay mode: Quay's own answer to the [`Question`] guarded
    /// as the Quay endpoint is.
    pub async fn authorize(
        &self,
        quay: Option<&QuayIdentity>,
        resource: Resource<'_>,
        access: Access,
    ) -> Result<(), Refusal> {
        let (Some(credential), Some(quay)) = (&self.quay, quay) else {
            return self.authorize_token(resource, access);
        };
        let ask = |question: Question| async move { quay.ask(credential, &question).await };
        let refused = |answer: Answer, what: String| match answer {
            Answer::Unauthenticated => Refusal::CredentialRefused,
            _ => Refusal::Forbidden(format!("Quay does not let this credential {what}")),
        };
        match resource {
            Resource::User => match ask(Question::UserAdmin).await? {
                Answer::Granted if self.known_username().is_some() => Ok(()),
                Answer::Granted | Answer::NotFound => Err(Refusal::Forbidden(
                    "Quay did not say whose namespace this is (the user:read scope)".into(),
                )),
                answer => Err(refused(
                    answer,
                    "administer the user (Quay's require_user_admin: the user:admin scope)".into(),
                )),
            },
            Resource::Organization(org) => {
                match ask(Question::OrganizationAdmin(org.clone())).await? {
                    Answer::Granted | Answer::NotFound => Ok(()),
                    answer => Err(refused(
                        answer,
                        format!("administer organization {org} (the org:admin scope)"),
                    )),
                }
            }
            Resource::Repository(namespace, repository) => {
                let (verb, question): (_, fn(Namespace, RepositoryName) -> Question) = match access
                {
                    Access::Read => ("read", Question::RepositoryAdminRead),
                    Access::Export => ("export", Question::RepositoryAdminExport),
                };
                match ask(question(namespace.clone(), repository.clone())).await? {
                    Answer::Granted => Ok(()),
                    Answer::NotFound => Err(Refusal::NotFound(format!(
                        "no repository {namespace}/{repository}"
                    ))),
                    answer => Err(refused(
                        answer,
                        format!(
                            "{verb} the logs of repository {namespace}/{repository} (the repo:admin scope)"
                        ),
                    )),
                }
            }
            Resource::Registry => match ask(Question::AnySuperuser).await? {
                Answer::Granted | Answer::NotFound => Ok(()),
                answer => Err(refused(
                    answer,
                    "read the registry-wide logs (superusers, with the super:user scope)".into(),
                )),
            },
        }
    }

    /// Whether the caller may `access` a stored export or schedule of `scope` over `namespace`
    /// (and `repository`), requested or owned by `owner`. Beside Quay: the rule of the Quay
    /// endpoint that would have made it. Token mode: its requester or owner, the namespace's
    /// admins and superusers. A refusal is `Ok(false)`, so callers can answer 404 and not tell
    /// that the thing exists; Quay refusing the credential (401) or being down (503) is an error.
    pub async fn may_access_stored(
        &self,
        quay: Option<&QuayIdentity>,
        scope: &str,
        namespace: &str,
        repository: Option<&str>,
        owner: &str,
        access: Access,
    ) -> Result<bool, Refusal> {
        if self.quay.is_none() {
            return Ok(owner == self.username || self.administers_namespace(namespace));
        }
        let (Ok(scope), Ok(namespace)) =
            (scope.parse::<ExportScope>(), Namespace::parse(namespace))
        else {
            return Ok(false);
        };
        let repository = repository.map(RepositoryName::parse).transpose();
        let Ok(repository) = repository else {
            return Ok(false);
        };
        let outcome = match (scope, &repository) {
            (ExportScope::User, _) => {
                if self.known_username() != Some(namespace.as_str()) {
                    return Ok(false);
                }
                self.authorize(quay, Resource::User, access).await
            }
            (ExportScope::Organization, _) | (ExportScope::Repository, None) => {
                self.authorize(quay, Resource::Organization(&namespace), access)
                    .await
            }
            (ExportScope::Repository, Some(repository)) => {
                self.authorize(quay, Resource::Repository(&namespace, repository), access)
                    .await
            }
        };
        match outcome {
            Ok(()) => Ok(true),
            Err(Refusal::Forbidden(_) | Refusal::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Token mode's rules, the token's own rights.
    fn authorize_token(&self, resource: Resource<'_>, access: Access) -> Result<(), Refusal> {
        let (allowed, what) = match resource {
            Resource::User => (true, String::new()),
            Resource::Organization(org) => (
                self.may_access_organization(org),
                format!("you are not an administrator of organization {org}"),
            ),
            Resource::Repository(namespace, repository) => (
                match access {
                    Access::Read => self.may_read_repository(namespace, repository),
                    Access::Export => self.may_access_repository(namespace, repository),
                },
                format!("you are not an administrator of repository {namespace}/{repository}"),
            ),
            Resource::Registry => (
                self.may_read_superuser_logs(),
                "registry-wide logs are for superusers only".into(),
            ),
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Forbidden(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(username: &str, orgs: &[&str]) -> Caller {
        Caller {
            username: username.into(),
            admin_orgs: orgs.iter().map(|o| o.to_string()).collect(),
            admin_repos: vec![],
            superuser: false,
            global_readonly_superuser: false,
            superuser_full_access: false,
            quay: None,
        }
    }

    fn ns(name: &str) -> Namespace {
        Namespace::parse(name).unwrap()
    }

    #[test]
    fn a_user_administers_its_own_namespace_addressed_as_an_organization() {
        let ns1 = caller("ns1", &[]);
        assert!(ns1.may_access_organization(&ns("ns1")));
        assert!(!ns1.may_access_organization(&ns("acme")));
        assert!(caller("alice", &["acme"]).may_access_organization(&ns("acme")));
    }

    #[test]
    fn a_global_readonly_superuser_reads_everything_but_exports_no_repository() {
        let auditor = Caller {
            global_readonly_superuser: true,
            ..caller("auditor", &[])
        };
        let web = RepositoryName::parse("web").unwrap();
        assert!(auditor.may_access_organization(&ns("acme")));
        assert!(auditor.may_read_repository(&ns("acme"), &web));
        assert!(!auditor.may_access_repository(&ns("acme"), &web));
        assert!(auditor.may_read_superuser_logs());
        assert!(!caller("alice", &["acme"]).may_read_superuser_logs());
        assert!(!caller("alice", &["acme"]).may_read_repository(&ns("beta"), &web));
    }
}
