//! Finding past exports (`GET /api/v1/exportlogs`) and downloading them again
//! (`GET /api/v1/exportlogs/{id}/download`).

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::export::{ExportEnv, JANUARY, dataset, download};

async fn list(env: &ExportEnv, token: &str, query: &str) -> reqwest::Response {
    env.app
        .client
        .get(env.app.url(&format!("/api/v1/exportlogs{query}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn ids(env: &ExportEnv, token: &str, query: &str) -> Vec<String> {
    let r = list(env, token, query).await;
    assert_eq!(r.status(), 200, "{query}");
    let body: Value = r.json().await.unwrap();
    body["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Inserts queued exports straight into the table (the listing reads rows; no worker runs them).
async fn insert(env: &ExportEnv, namespace: &str, requested_by: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let id: uuid::Uuid = sqlx::query_scalar(
            "INSERT INTO export_jobs (id, scope, namespace, requested_by, start_time, end_time,
                 format, compression, max_attempts, webhook_id, callback_email, run_at)
             VALUES (gen_random_uuid(), 'organization', $1, $2, now() - interval '1 day', now(),
                 'json', 'none', 3, 'msg_x', 'a@example.com', now() + interval '1 day')
             RETURNING id",
        )
        .bind(namespace)
        .bind(requested_by)
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
        out.push(id.to_string());
    }
    out
}

#[tokio::test]
async fn each_caller_sees_what_the_status_endpoint_would_show() {
    let env = ExportEnv::start(&[], |c| c.worker.concurrency = 1).await;
    let admin = env.app.token("root", &["acme"], &[], false).await;
    let bob = env.app.token("bob", &[], &[], false).await;
    let carol = env.app.token("carol", &[], &[], false).await;
    let superuser = env.app.token("su", &[], &[], true).await;
    let bobs = insert(&env, "acme", "bob", 2).await;
    let roots = insert(&env, "acme", "root", 1).await;
    let others = insert(&env, "other", "carol", 1).await;

    let set = |v: Vec<String>| v.into_iter().collect::<HashSet<_>>();
    let all_acme = set([bobs.clone(), roots.clone()].concat());
    assert_eq!(set(ids(&env, &admin, "?namespace=acme").await), all_acme);
    assert_eq!(
        set(ids(&env, &superuser, "?namespace=acme").await),
        all_acme
    );
    // A requester sees only their own, with or without the namespace.
    assert_eq!(
        set(ids(&env, &bob, "?namespace=acme").await),
        set(bobs.clone())
    );
    assert_eq!(set(ids(&env, &bob, "").await), set(bobs));
    assert!(ids(&env, &carol, "?namespace=acme").await.is_empty());
    assert_eq!(set(ids(&env, &carol, "").await), set(others));
    assert!(
        ids(&env, &admin, "?namespace=acme&state=succeeded")
            .await
            .is_empty()
    );
    for bad in [
        "?namespace=Acme",
        "?state=done",
        "?limit=0",
        "?limit=101",
        "?repository=web",
        "?namespace=acme&next_page=garbage",
    ] {
        assert_eq!(list(&env, &admin, bad).await.status(), 400, "{bad}");
    }
    assert_eq!(list(&env, "nope", "").await.status(), 401);
}

#[tokio::test]
async fn paging_walks_45_exports_newest_first_without_loss_or_repeat() {
    let env = ExportEnv::start(&[], |_| {}).await;
    let admin = env.app.token("root", &["acme"], &[], false).await;
    let other_admin = env.app.token("root2", &["acme"], &[], false).await;
    let mut inserted = insert(&env, "acme", "bob", 45).await;
    let mut seen = Vec::new();
    let mut query = "?namespace=acme&limit=10".to_owned();
    let mut first_token = None;
    loop {
        let r = list(&env, &admin, &query).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let page = body["exports"].as_array().unwrap();
        assert!(page.len() <= 10);
        // Compared as times: RFC 3339 text drops trailing zeros of the fraction, so "…01.12Z"
        // sorts after "…01.123Z" as text.
        let times: Vec<chrono::DateTime<chrono::FixedOffset>> = page
            .iter()
            .map(|e| {
                chrono::DateTime::parse_from_rfc3339(e["created_at"].as_str().unwrap()).unwrap()
            })
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "newest first: {times:?}"
        );
        seen.extend(
            page.iter()
                .map(|e| e["export_id"].as_str().unwrap().to_owned()),
        );
        let Some(token) = body["next_page"].as_str() else {
            break;
        };
        first_token.get_or_insert(token.to_owned());
        query = format!("?namespace=acme&limit=10&next_page={token}");
    }
    assert_eq!(seen.len(), 45, "no export lost or repeated");
    seen.sort();
    inserted.sort();
    assert_eq!(seen, inserted);

    // A token is bound to its caller and its filters, and refuses any change.
    let token = first_token.unwrap();
    let mut tampered = token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (who, q) in [
        (
            &other_admin,
            format!("?namespace=acme&limit=10&next_page={token}"),
        ),
        (
            &admin,
            format!("?namespace=acme&state=queued&limit=10&next_page={token}"),
        ),
        (
            &admin,
            format!("?namespace=acme&limit=10&next_page={tampered}"),
        ),
    ] {
        assert_eq!(list(&env, who, &q).await.status(), 400, "{q}");
    }
}

#[tokio::test]
async fn download_again_before_after_and_once_deleted() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    let bob = env.app.token("bob", &[], &[], false).await;
    let id = env
        .request(
            &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
            json!({"callback_email": "a@example.com", "format": "ndjson"}),
        )
        .await;
    let fetch = |token: String| {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let url = env.app.url(&format!("/api/v1/exportlogs/{id}/download"));
        async move { client.get(url).bearer_auth(token).send().await.unwrap() }
    };
    // Before success: 409 (an export still queued, due in a day).
    let queued = insert(&env, "acme", "root", 1).await;
    let client = reqwest::Client::new();
    let early = client
        .get(
            env.app
                .url(&format!("/api/v1/exportlogs/{}/download", queued[0])),
        )
        .bearer_auth(&env.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 409);
    let status = env.finished(&id).await;
    assert_eq!(status["state"], "succeeded");
    let stable = status["download_url"].as_str().expect("download_url");
    assert!(stable.ends_with(&format!("/api/v1/exportlogs/{id}/download")));

    let first = fetch(env.admin.clone()).await;
    assert_eq!(first.status(), 302);
    assert!(first.headers().contains_key("x-link-expires-at"));
    let link = first.headers()["location"].to_str().unwrap().to_owned();
    let bytes = download(&link).await.bytes().await.unwrap();
    assert_eq!(
        bytes.len() as u64,
        status["bytes_written"].as_u64().unwrap()
    );
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        status["sha256"].as_str().unwrap(),
        "the bytes are the ones the status's sha256 names"
    );
    // Each call signs a link of its own, from now.
    let second = fetch(env.admin.clone()).await;
    let again = second.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(download(&again).await.bytes().await.unwrap(), bytes);
    // Another user cannot tell it exists.
    assert_eq!(fetch(bob).await.status(), 404);

    // Once housekeeping deleted the archive: 410.
    sqlx::query("UPDATE export_jobs SET object_deleted_at = now() WHERE id = $1::uuid")
        .bind(&id)
        .execute(&env.app.pool)
        .await
        .unwrap();
    assert_eq!(fetch(env.admin.clone()).await.status(), 410);
    let status: Value = env
        .app
        .export_status(&env.admin, &id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["download_url"], Value::Null);
}
