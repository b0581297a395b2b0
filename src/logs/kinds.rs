//! The registry's audit-log kinds, used to turn "any of these kinds" into `kind!=` exclusions.
//!
//! The SPL subset has no `OR`, so a request for several kinds searches with `kind!="x"` for
//! every known kind that was not asked for. Kinds missing from this list still reach the
//! results and are filtered out after fetching (see `lookup`); keeping the list complete only
//! keeps that rare path rare.

/// Quay's log entry kinds (its `LogEntryKind` table).
pub const KNOWN_KINDS: &[&str] = &[
    "account_change_cc",
    "account_change_password",
    "account_change_plan",
    "account_convert",
    "add_repo_accesstoken",
    "add_repo_notification",
    "add_repo_permission",
    "add_repo_webhook",
    "autoprune_tag_delete",
    "build_dockerfile",
    "change_repo_permission",
    "change_repo_state",
    "change_repo_trust",
    "change_repo_visibility",
    "change_tag_expiration",
    "create_app_specific_token",
    "create_application",
    "create_namespace_autoprune_policy",
    "create_prototype_permission",
    "create_proxy_cache_config",
    "create_repo",
    "create_repository_autoprune_policy",
    "create_robot",
    "create_robot_federation",
    "create_tag",
    "delete_application",
    "delete_namespace_autoprune_policy",
    "delete_prototype_permission",
    "delete_proxy_cache_config",
    "delete_repo",
    "delete_repo_accesstoken",
    "delete_repo_notification",
    "delete_repo_permission",
    "delete_repo_trigger",
    "delete_repo_webhook",
    "delete_repository_autoprune_policy",
    "delete_robot",
    "delete_robot_federation",
    "delete_tag",
    "disable_user",
    "enable_user",
    "export_logs_failure",
    "export_logs_success",
    "federated_robot_token_exchange",
    "login_failure",
    "login_success",
    "logout_success",
    "manifest_label_add",
    "manifest_label_delete",
    "modify_prototype_permission",
    "move_tag",
    "oauth_token_assigned",
    "oauth_token_revoked",
    "org_add_team_member",
    "org_change_email",
    "org_change_invoicing",
    "org_change_name",
    "org_change_tag_expiration",
    "org_create",
    "org_create_team",
    "org_delete",
    "org_delete_team",
    "org_delete_team_member_invite",
    "org_invite_team_member",
    "org_remove_team_member",
    "org_set_team_description",
    "org_set_team_role",
    "org_team_member_invite_accepted",
    "org_team_member_invite_declined",
    "permanently_delete_tag",
    "pull_repo",
    "push_repo",
    "regenerate_robot_token",
    "repo_mirror_config_changed",
    "repo_mirror_disabled",
    "repo_mirror_enabled",
    "repo_mirror_sync_failed",
    "repo_mirror_sync_now_requested",
    "repo_mirror_sync_started",
    "repo_mirror_sync_success",
    "repo_mirror_sync_tag_failed",
    "repo_mirror_sync_tag_success",
    "repo_mirror_sync_test_failed",
    "repo_mirror_sync_test_started",
    "repo_mirror_sync_test_success",
    "repo_verb",
    "reset_application_client_secret",
    "reset_repo_notification",
    "revert_tag",
    "revoke_app_specific_token",
    "service_key_approve",
    "service_key_create",
    "service_key_delete",
    "service_key_extend",
    "service_key_modify",
    "service_key_rotate",
    "set_repo_description",
    "setup_repo_trigger",
    "start_build_trigger",
    "take_ownership",
    "toggle_repo_trigger",
    "update_application",
    "update_namespace_autoprune_policy",
    "update_repository_autoprune_policy",
    "user_change_email",
    "user_change_invoicing",
    "user_change_metadata",
    "user_change_name",
    "user_change_tag_expiration",
    "user_create",
    "user_delete",
    "user_disable",
    "user_enable",
];

/// The `kind!=` exclusions that leave (mostly) only `wanted`.
pub fn exclusions_for(wanted: &[String]) -> Vec<String> {
    KNOWN_KINDS
        .iter()
        .filter(|k| !wanted.iter().any(|w| w == *k))
        .map(|k| (*k).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_unique_and_excludes_the_wanted() {
        assert!(KNOWN_KINDS.windows(2).all(|w| w[0] < w[1]));
        let ex = exclusions_for(&["push_repo".into(), "pull_repo".into()]);
        assert_eq!(ex.len(), KNOWN_KINDS.len() - 2);
        assert!(!ex.iter().any(|k| k == "push_repo" || k == "pull_repo"));
    }
}
