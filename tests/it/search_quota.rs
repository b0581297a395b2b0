//! The Splunk search quota is shared by every process: permits in Postgres, and a Splunk that
//! refuses searches beyond its role quota never sees more than `splunk.max_concurrent_searches`.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use logexport::config::{Config, StorageKind};
use logexport::emulator::{self, EmulatorOptions, Faults, SyntheticSpec};
use logexport::splunk::{SearchPermit, SearchQuota, SplunkError};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    TestApp, eventually, garage_s3_config, spawn_app_with, spawn_export_worker, test_config,
    test_db, use_emulator,
};

#[tokio::test]
async fn permits_are_counted_across_holders_and_freed_on_drop_or_expiry() {
    let (_url, pool) = test_db().await;
    // Two quotas over the same database stand for two processes.
    let (a, b) = (
        SearchQuota::new(pool.clone(), 2),
        SearchQuota::new(pool.clone(), 2),
    );
    let first = a
        .acquire("test", Duration::from_secs(1))
        .await
        .expect("first");
    let _second = b
        .acquire("test", Duration::from_secs(1))
        .await
        .expect("second");
    assert_eq!(a.running().await.unwrap(), 2);

    let refused = a.acquire("test", Duration::from_millis(300)).await;
    match refused {
        // The service's own limit: Splunk was asked nothing, and the error does not say it was.
        Err(e @ SplunkError::Busy { limit: 2, .. }) => {
            assert!(e.is_retryable());
            assert!(
                e.to_string().starts_with(
                    "all 2 Splunk searches allowed at once (splunk.max_concurrent_searches) stayed busy"
                ),
                "{e}"
            );
        }
        other => panic!("a third permit must wait and then be refused: {other:?}"),
    }
    // A waiting searcher gets the slot once a search ends.
    let waiter = in_line(&b, "test").await;
    drop(first);
    let third = waiter.await.unwrap().expect("the freed slot is taken");
    assert_eq!(a.running().await.unwrap(), 2);

    // A holder that died leaves a lease that expires; its slot is then taken over.
    drop(third);
    eventually(5, "dropped permit freed", || async {
        (a.running().await.unwrap() == 1).then_some(())
    })
    .await;
    let dead = sqlx::query(
        "UPDATE splunk_search_slots
         SET permit = gen_random_uuid(), holder = 'dead:1', purpose = 'export',
             lease_expires_at = now() - interval '1 second'
         WHERE permit IS NULL",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(dead.rows_affected(), 1, "the freed place");
    assert_eq!(
        a.running().await.unwrap(),
        1,
        "an expired lease is not running"
    );
    a.acquire("test", Duration::from_millis(500))
        .await
        .expect("the expired lease does not count");
}

#[tokio::test]
async fn a_freed_place_goes_to_a_waiter_of_the_same_process_for_a_while_then_through_postgres() {
    let (_url, pool) = test_db().await;
    // Two quotas over the same database stand for two processes; one place, which passes
    // within a process for 4 s after it was taken from Postgres.
    let hold = Duration::from_secs(4);
    let (here, there) = (
        SearchQuota::with_local_hold(pool.clone(), 1, hold),
        SearchQuota::with_local_hold(pool.clone(), 1, hold),
    );
    let place = || async {
        sqlx::query_as::<_, (Option<uuid::Uuid>, Option<String>)>(
            "SELECT permit, purpose FROM splunk_search_slots WHERE slot = 0",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let mut permit = here.acquire("first", Duration::from_secs(1)).await.unwrap();
    let taken_at = tokio::time::Instant::now();
    let (taken, _) = place().await;
    assert!(taken.is_some());
    // The other process waits all along: it gets the place once it goes back to Postgres.
    let elsewhere = in_line(&there, "elsewhere").await;
    // Within the hold, however many searches: handed on without freeing the place (a search
    // more as long as a second of the hold is left for it).
    let mut pass = 0;
    while pass < 8 && taken_at.elapsed() < hold - Duration::from_secs(1) {
        pass += 1;
        let waiter = in_line(&here, "local").await;
        drop(permit);
        permit = waiter.await.unwrap().expect("handed over");
        assert_eq!(
            place().await,
            (taken, Some("first".to_string())),
            "pass {pass}: handed to the local waiter without freeing the place"
        );
        assert!(!elsewhere.is_finished(), "pass {pass}");
    }
    assert!(pass > 4, "more passes than the 4 a place once had: {pass}");
    // Past the hold: freed through Postgres for every process, and the waiters here and
    // elsewhere race for it.
    tokio::time::sleep_until(taken_at + hold).await;
    let local = in_line(&here, "local").await;
    drop(permit);
    let (id, purpose) = eventually(5, "the place taken again", || async {
        let (id, purpose) = place().await;
        (id.is_some() && id != taken).then_some((id, purpose))
    })
    .await;
    assert!(
        matches!(purpose.as_deref(), Some("local" | "elsewhere")),
        "freed and taken again, not handed over: {id:?} {purpose:?}"
    );
    local.abort();
    elsewhere.abort();
}

#[tokio::test]
async fn only_the_first_waiter_of_a_process_looks_and_one_that_takes_a_place_wakes_the_next() {
    let (_url, pool) = test_db().await;
    // Two quotas over the same database stand for two processes; the other holds both places.
    let (here, there) = (
        SearchQuota::new(pool.clone(), 2),
        SearchQuota::new(pool.clone(), 2),
    );
    let _held = (
        there
            .acquire("there", Duration::from_secs(1))
            .await
            .unwrap(),
        there
            .acquire("there", Duration::from_secs(1))
            .await
            .unwrap(),
    );
    // As a worker does at its start: a listener that connects later wakes every waiter to look
    // (a place may have been freed unheard).
    here.start().await.unwrap();
    eventually(5, "both processes listen for freed places", || async {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%logexport_search_freed%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (listening == 2).then_some(())
    })
    .await;
    let counter = |series: &'static str| {
        crate::helpers::metric(
            &logexport::metrics::METRICS.render(&Default::default()),
            series,
        )
    };
    let full = r#"logexport_splunk_quota_looks_total{outcome="full"}"#;
    let waited = r#"logexport_splunk_quota_waits_total{outcome="waited"}"#;
    let (full_before, waited_before) = (counter(full), counter(waited));
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let here = here.clone();
            tokio::spawn(async move { here.acquire("here", Duration::from_secs(20)).await })
        })
        .collect();
    eventually(5, "three searches wait", || async {
        (counter(waited) - waited_before >= 3.0).then_some(())
    })
    .await;
    // The first looked and found both places held; the two behind it did not look (the first
    // looks again after 100-150 ms at the soonest).
    let looks = counter(full) - full_before;
    assert!(
        (1.0..=2.0).contains(&looks),
        "only the first in line looks: {looks} looks"
    );

    // Both places come free unannounced (as when their holder's leases expire): the first in
    // line finds one at its next look, and wakes the next, which takes the other. Those behind
    // the first would otherwise look only after 2 s.
    sqlx::query(
        "UPDATE splunk_search_slots
         SET lease_expires_at = now() - interval '1 second'
         WHERE holder IS NOT NULL",
    )
    .execute(&pool)
    .await
    .unwrap();
    let freed_at = tokio::time::Instant::now();
    eventually(5, "two waiters took the places", || async {
        (here.waiting() == 1).then_some(())
    })
    .await;
    let took = freed_at.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the second place was taken {took:?} after it came free"
    );
    for waiter in waiters {
        waiter.abort();
    }
}

/// A search of `quota`'s process asking for a place, once it waits in line (alone).
async fn in_line(
    quota: &SearchQuota,
    purpose: &'static str,
) -> tokio::task::JoinHandle<Result<SearchPermit, SplunkError>> {
    let waiter = tokio::spawn({
        let quota = quota.clone();
        async move { quota.acquire(purpose, Duration::from_secs(20)).await }
    });
    eventually(5, "the search waits", || async {
        (quota.waiting() == 1).then_some(())
    })
    .await;
    waiter
}

/// `count` synthetic events over 2024-01-01..11 in `namespaces` namespaces, read at 40,000
/// events/s per search, with a Splunk role quota of `quota` searches.
async fn splunk(count: u64, namespaces: u32, quota: u64) -> emulator::RunningEmulator {
    splunk_with(
        count,
        namespaces,
        Faults {
            search_events_per_sec: Some(40_000),
            max_concurrent_searches: Some(quota),
            ..Faults::default()
        },
    )
    .await
}

/// `count` synthetic events over 2024-01-01..11 in `namespaces` namespaces, with `faults`.
async fn splunk_with(count: u64, namespaces: u32, faults: Faults) -> emulator::RunningEmulator {
    emulator::spawn(EmulatorOptions {
        token: Some("quota-token".into()),
        synthetic: Some(SyntheticSpec {
            count,
            start: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2024, 1, 11, 0, 0, 0).unwrap(),
            namespaces,
            skew: 0.0,
        }),
        faults,
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator")
}

#[tokio::test]
async fn workers_and_listings_together_stay_within_splunks_role_quota() {
    // Splunk refuses a third concurrent search; every search costs real scan time.
    let splunk = splunk(30_000, 3, 3).await;

    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    use_emulator(&mut config, &splunk, "quota-token");
    config.splunk.max_concurrent_searches = 2;
    config.storage.kind = StorageKind::S3;
    config.storage.s3 = garage_s3_config();
    config.export.object_prefix = format!("it-{}/", uuid::Uuid::new_v4().simple());
    config.worker.concurrency = 3;
    config.worker.per_namespace_limit = 3;

    // Three worker "processes": each its own pool, handler and quota connection.
    let stop = CancellationToken::new();
    for _ in 0..3 {
        let worker_pool = sqlx::PgPool::connect(&url).await.expect("worker pool");
        spawn_export_worker(worker_pool, &config, &stop).await;
    }
    let app = spawn_app_with(pool, config).await;
    let token = app.token("admin", &["ns0", "ns1", "ns2"], &[], false).await;

    let mut ids = Vec::new();
    for ns in ["ns0", "ns1", "ns2", "ns0", "ns1", "ns2"] {
        ids.push(request_export(&app, &token, ns).await);
    }
    // Listings search Splunk too, from the API process, while the exports run.
    for ns in ["ns0", "ns1", "ns2"] {
        let r = app
            .client
            .get(app.url(&format!(
                "/api/v1/organization/{ns}/aggregatelogs?starttime=01/01/2024&endtime=01/10/2024"
            )))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    for id in &ids {
        let status = app
            .status_until(&token, id, 120, "export finished", |s| {
                s["state"] != "queued" && s["state"] != "running"
            })
            .await;
        assert_eq!(status["state"], "succeeded", "{status}");
        assert_eq!(status["logs_exported"], 10_000);
    }
    stop.cancel();
    let stats = splunk.stats();
    assert_eq!(
        stats.quota_refused, 0,
        "Splunk refused searches: the cluster-wide limit was not held ({stats:?})"
    );
    assert!(
        stats.peak_searches >= 2,
        "searches ran side by side: {stats:?}"
    );
}

#[tokio::test]
async fn splunks_quota_answers_lower_an_exports_searches_instead_of_failing_it() {
    // Splunk allows one search (other users hold the rest of the role's quota); this export is
    // configured for three, and must still finish in its first attempt.
    let splunk = splunk(20_000, 1, 1).await;
    let (status, metrics) = export_ns0(&splunk, |c| {
        c.splunk.max_retries = 3;
        c.worker.max_attempts = 1;
        // Sliced by time, so the export asks for three searches from the start.
        c.export.probe_rows = 0;
    })
    .await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["attempts"], 1);
    assert_eq!(status["logs_exported"], 20_000);
    assert!(
        splunk.stats().quota_refused > 0,
        "Splunk did refuse searches"
    );
    assert!(
        crate::helpers::metric(
            &metrics,
            r#"logexport_export_slices_total{outcome="concurrency_lowered"}"#
        ) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_quota_answer_on_a_readers_own_place_does_not_lower_the_export() {
    // Two searches allowed, two readers, 14 pieces. Once both readers have started, Splunk
    // answers 40 % of search dispatches with its quota 503 (at 60 %, runs of answers in a row,
    // each backed off longer, 0.5 s, 1 s, 2 s … up to 30 s, made the test take from 5 s to past
    // its two minutes); every later search is started on
    // the place of the same reader's search that just ended (as when Splunk has not yet counted
    // that end). The client's retries get past each answer, and the export keeps both searches:
    // it lowers them only for a fresh place refused, or a refusal past the retries.
    let splunk = std::sync::Arc::new(splunk(30_000, 1, 2).await);
    let started = {
        let splunk = splunk.clone();
        tokio::spawn(async move {
            eventually(30, "both readers' first searches", || async {
                (splunk.stats().export_requests >= 2).then_some(())
            })
            .await;
            splunk.set_faults(Faults {
                search_events_per_sec: Some(40_000),
                max_concurrent_searches: Some(2),
                rate_503: 0.4,
                ..Faults::default()
            });
        })
    };
    let (status, metrics) = export_ns0(&splunk, |c| {
        c.splunk.max_concurrent_searches = 2;
        c.splunk.max_retries = 12;
        c.export.probe_rows = 0;
        c.export.slices = 8;
        c.worker.max_attempts = 1;
    })
    .await;
    started.await.unwrap();
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["logs_exported"], 30_000, "{status}");
    assert!(
        splunk.stats().injected_503 > 0,
        "Splunk answered some of the later searches 503: {:?}",
        splunk.stats()
    );
    assert_eq!(
        crate::helpers::metric(
            &metrics,
            r#"logexport_export_slices_total{outcome="concurrency_lowered"}"#
        ),
        0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn readers_ahead_cannot_hold_the_searches_the_next_slice_needs() {
    // Another process holds one of the three searches for the whole test, every search's first
    // stream is cut after 1,000 rows (of a slice's 2,000), and there is no read-ahead budget at
    // all: the readers of the
    // slices after the first wait for room while holding the two searches this export has, and
    // the first slice, cut, needs a search again. Readers ahead give theirs back after a while
    // (the spool budget is soft), so the export finishes in its first attempt.
    let splunk = splunk_with(
        8_000,
        1,
        Faults {
            // Slow enough that the third slice's reader waits for a search before the first is cut.
            search_events_per_sec: Some(2_000),
            cut_once_after: Some(1_000),
            ..Faults::default()
        },
    )
    .await;
    let (url, pool) = test_db().await;
    held_by_another_process(&pool).await;
    let archives = std::env::temp_dir().join(format!("logexport-ahead-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&archives).unwrap();
    let mut config = test_config(&url);
    use_emulator(&mut config, &splunk, "quota-token");
    config.splunk.max_concurrent_searches = 3;
    config.splunk.max_retries = 3;
    config.worker.max_attempts = 1;
    config.export.slices = 4;
    config.export.spool_max_mib = 0;
    config.storage.kind = StorageKind::Local;
    config.storage.local.path = archives.clone();
    let app = spawn_app_with(pool.clone(), config.clone()).await;
    config.server.public_url = app.config.server.public_url.clone();
    let stop = CancellationToken::new();
    spawn_export_worker(pool, &config, &stop).await;
    let token = app.token("admin", &["ns0"], &[], false).await;
    let r = app
        .post_export(
            &token,
            "/api/v1/organization/ns0/exportlogs?starttime=01/01/2024&endtime=01/10/2024",
            r#"{"callback_email": "ops@example.com", "format": "ndjson"}"#,
        )
        .await;
    let id = r.json::<Value>().await.unwrap()["export_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Held back, the first slice would wait out its search deadline (60 s) on every retry.
    let status = eventually(45, "export finished", || async {
        let s: Value = app.export_status(&token, &id).await.json().await.ok()?;
        (s["state"] != "queued" && s["state"] != "running").then_some(s)
    })
    .await;
    stop.cancel();
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["attempts"], 1);
    assert_eq!(status["logs_exported"], 8_000);
    // Readers ahead did wait, and each slice's reader waited out the budget once at most, not
    // again for every batch (which took 35 s here).
    let metrics = app.metrics().await;
    let over_budget = crate::helpers::metric(
        &metrics,
        r#"logexport_export_slices_total{outcome="spool_over_budget"}"#,
    );
    assert!((1.0..=3.0).contains(&over_budget), "{metrics}");
    let _ = std::fs::remove_dir_all(&archives);
}

#[tokio::test]
async fn a_worker_whose_searches_wait_for_the_quota_starts_no_more_exports() {
    // The quota's one place is another process's: this worker's first export waits for it, and
    // a second export (another namespace, three slots free) is left for a process whose searches
    // do not wait, until the place is freed.
    let splunk = splunk(4_000, 2, 3).await;
    let (url, pool) = test_db().await;
    held_by_another_process(&pool).await;
    let config = one_place_config(&url, &splunk);
    assert_eq!(config.worker.concurrency, 4);
    let stop = CancellationToken::new();
    spawn_export_worker(pool.clone(), &config, &stop).await;
    let app = spawn_app_with(pool.clone(), config).await;
    let token = app.token("admin", &["ns0", "ns1"], &[], false).await;
    let state = |id: String| {
        let (app, token) = (&app, &token);
        async move {
            let s: Value = app.export_status(token, &id).await.json().await.unwrap();
            s["state"].as_str().unwrap().to_owned()
        }
    };
    let first = request_export(&app, &token, "ns0").await;
    until_a_search_waited(&app, "the first export's search waits for the quota").await;
    let second = request_export(&app, &token, "ns1").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(state(first.clone()).await, "running");
    assert_eq!(
        state(second.clone()).await,
        "queued",
        "claimed while its search would wait"
    );

    freed_by_the_other_process(&pool).await;
    for id in [first, second] {
        let done = eventually(60, "export finished", || async {
            let s = state(id.clone()).await;
            (s != "queued" && s != "running").then_some(s)
        })
        .await;
        assert_eq!(done, "succeeded");
    }
    stop.cancel();
}

#[tokio::test]
async fn a_small_export_that_waited_for_the_quota_is_read_by_one_search() {
    // 12,000 events in each namespace: more than the probe's 2,000 rows, less than a slice.
    let splunk = splunk(24_000, 2, 3).await;
    let (url, pool) = test_db().await;
    // The quota's one place is another process's: ns0's first search waits for it.
    held_by_another_process(&pool).await;
    let config = one_place_config(&url, &splunk);
    assert_eq!(config.export.probe_rows, 2_000);
    let stop = CancellationToken::new();
    spawn_export_worker(pool.clone(), &config, &stop).await;
    let app = spawn_app_with(pool.clone(), config).await;
    let token = app.token("admin", &["ns0", "ns1"], &[], false).await;
    let export = |ns: &'static str| {
        let (app, token) = (&app, &token);
        async move {
            let id = request_export(app, token, ns).await;
            app.finished(token, &id).await
        }
    };
    let waited = export("ns0");
    let free_the_place = async {
        until_a_search_waited(&app, "ns0's first search waits for the quota").await;
        freed_by_the_other_process(&pool).await;
    };
    let (status, ()) = tokio::join!(waited, free_the_place);
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["logs_exported"], 12_000, "{status}");
    assert_eq!(
        splunk.stats().export_requests,
        1,
        "a search that waited for its place reads a slice's worth, the whole export here"
    );

    // The same export of the other namespace with the place free: the probe reads its 2,000
    // rows, and one search after it the rest.
    let idle = export("ns1").await;
    assert_eq!(idle["state"], "succeeded", "{idle}");
    assert_eq!(idle["logs_exported"], 12_000, "{idle}");
    assert_eq!(
        splunk.stats().export_requests,
        1 + 2,
        "the probe and one slice when Splunk is idle"
    );
    assert_eq!(splunk.stats().quota_refused, 0);
    stop.cancel();
}

/// A configuration reading `splunk` with a quota of one place, writing to Garage.
fn one_place_config(url: &str, splunk: &emulator::RunningEmulator) -> Config {
    let mut config = test_config(url);
    use_emulator(&mut config, splunk, "quota-token");
    config.splunk.max_concurrent_searches = 1;
    config.storage.kind = StorageKind::S3;
    config.storage.s3 = garage_s3_config();
    config.export.object_prefix = format!("it-{}/", uuid::Uuid::new_v4().simple());
    config
}

/// Requests an export of `ns` over 2024-01-01..10 notifying by mail; returns its id.
async fn request_export(app: &TestApp, token: &str, ns: &str) -> String {
    app.request_export(
        token,
        &format!("/api/v1/organization/{ns}/exportlogs?starttime=01/01/2024&endtime=01/10/2024"),
        &serde_json::json!({"callback_email": "ops@example.com"}),
    )
    .await
}

/// Returns once a search of `app`'s process has waited for a place in the quota.
async fn until_a_search_waited(app: &TestApp, what: &str) {
    eventually(20, what, || async {
        let waited = crate::helpers::metric(
            &app.metrics().await,
            r#"logexport_splunk_quota_waits_total{outcome="waited"}"#,
        );
        (waited >= 1.0).then_some(())
    })
    .await;
}

/// The other process frees the place [`held_by_another_process`] took, and says so as a freeing
/// process does.
async fn freed_by_the_other_process(pool: &sqlx::PgPool) {
    sqlx::query(
        "WITH freed AS (
             UPDATE splunk_search_slots
             SET permit = NULL, holder = NULL, purpose = NULL, lease_expires_at = NULL
             WHERE slot = 0 RETURNING slot)
         SELECT pg_notify('logexport_search_freed', '') FROM freed",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Another process holds the quota's first place (slot 0) for 10 minutes.
async fn held_by_another_process(pool: &sqlx::PgPool) {
    sqlx::query(
        "INSERT INTO splunk_search_slots (slot, permit, holder, purpose, lease_expires_at)
         VALUES (0, gen_random_uuid(), 'other-process:1', 'export', now() + interval '10 minutes')",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Runs one export of ns0 over 2024-01-01..10 with `config` adjusted; returns its status and
/// the process's metrics.
async fn export_ns0(
    splunk: &emulator::RunningEmulator,
    adjust: impl FnOnce(&mut Config),
) -> (Value, String) {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    use_emulator(&mut config, splunk, "quota-token");
    config.splunk.max_concurrent_searches = 3;
    config.storage.kind = StorageKind::S3;
    config.storage.s3 = garage_s3_config();
    config.export.object_prefix = format!("it-{}/", uuid::Uuid::new_v4().simple());
    adjust(&mut config);
    let stop = CancellationToken::new();
    spawn_export_worker(pool.clone(), &config, &stop).await;
    let app = spawn_app_with(pool, config).await;
    let token = app.token("admin", &["ns0"], &[], false).await;
    let id = request_export(&app, &token, "ns0").await;
    let status = app
        .status_until(&token, &id, 120, "export finished", |s| {
            s["state"] != "queued" && s["state"] != "running"
        })
        .await;
    let metrics = app.metrics().await;
    stop.cancel();
    (status, metrics)
}

#[tokio::test]
async fn the_first_search_sizes_the_plan_small_exports_are_one_search() {
    // 4,000 events in ns0 over nine days: fewer than the probe reads, so one search.
    let small = splunk(4_000, 1, 3).await;
    let (status, _) = export_ns0(&small, |c| c.export.probe_rows = 5_000).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["logs_exported"], 4_000, "{status}");
    assert_eq!(
        small.stats().export_requests,
        1,
        "one search for a small export"
    );

    // 60,000 events: the probe reads the newest 5,000 (whole seconds), and the rest (~55,000 by
    // the probe's rate) is cut into one round of the 3 searches, 3 slices of about 18,000 rows,
    // rather than 40 by time (or 4 by rows, whose fourth would be read alone at the end).
    let big = splunk(60_000, 1, 3).await;
    let (status, _) = export_ns0(&big, |c| c.export.probe_rows = 5_000).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["logs_exported"], 60_000, "{status}");
    assert_eq!(
        big.stats().export_requests,
        4,
        "the probe and one search per slice planned after it"
    );
    assert!(
        big.stats().events_streamed < 60_000 + 5_000,
        "the probe's rows are kept"
    );
    assert_eq!(
        big.stats().quota_refused,
        0,
        "the probe's search ends by itself, so its place is free for the slice after it"
    );
}

#[tokio::test]
async fn an_attempt_after_a_probe_resumes_with_the_same_plan() {
    // Every search's first stream is cut after 6,000 rows, and a cut fails the attempt: the
    // probe (5,000 rows) is not cut, a slice after it is, and the next attempt continues from
    // the checkpoint, whose plan must be the probe's (the same slices, the same bounds), or
    // rows would be lost or doubled.
    let splunk = splunk_with(
        60_000,
        1,
        Faults {
            search_events_per_sec: Some(40_000),
            max_concurrent_searches: Some(3),
            cut_once_after: Some(6_000),
            ..Faults::default()
        },
    )
    .await;
    // Local storage: every slice boundary is a checkpoint (S3 needs 5 MiB parts).
    let archives = std::env::temp_dir().join(format!("logexport-probe-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&archives).unwrap();
    let (status, metrics) = export_ns0(&splunk, |c| {
        c.splunk.max_retries = 0;
        c.worker.max_attempts = 3;
        c.worker.backoff_base_seconds = 0;
        c.export.split_min_rows = 0;
        c.export.probe_rows = 5_000;
        c.storage.kind = StorageKind::Local;
        c.storage.local.path = archives.clone();
        c.server.signing_key = logexport::config::Secret::new("local-links");
    })
    .await;
    let _ = std::fs::remove_dir_all(&archives);
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["logs_exported"], 60_000, "{status}");
    assert!(
        status["attempts"].as_i64() >= Some(2),
        "a cut failed an attempt: {status}"
    );
    assert!(
        crate::helpers::metric(
            &metrics,
            r#"logexport_export_checkpoints_total{outcome="resumed"}"#
        ) >= 1.0,
        "continued from the checkpoint after the probe: {metrics}"
    );
}
