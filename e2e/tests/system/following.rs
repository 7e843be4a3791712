//! Following an order without polling: `GET /orders/{id}` with `If-None-Match` and
//! `Prefer: wait=N` answers when the status changes, woken by the same NOTIFY as the POST's
//! wait, or with `304` when nothing changed.

use std::time::{Duration, Instant};

use e2e::{Options, TestSystem};
use inventory::gremlin::Pattern;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH};

/// `GET url` as a follower holding `tag`, willing to wait `seconds`.
async fn follow(system: &TestSystem, url: &str, tag: &str, seconds: u32) -> reqwest::Response {
    let request = system.http.get(url).header(IF_NONE_MATCH, tag).header("Prefer", format!("wait={seconds}"));
    request.send().await.expect("answers")
}

#[tokio::test]
async fn a_follower_is_answered_when_the_status_changes_and_told_304_when_it_does_not() {
    // Every order waits 1.5 s in inventory: long enough to be followed while PENDING.
    let gremlin = Pattern { enabled: true, one_in: 1, delay_ms: 1_500 };
    let system = TestSystem::start_with(Options { gremlin, ..Options::default() }).await;
    let id = system.place("MUG-01", 1).await;
    let url = format!("{}/orders/{id}", system.order_url);

    let first = system.http.get(&url).send().await.expect("answers");
    let pending_tag = first.headers()[ETAG].to_str().expect("etag").to_owned();
    assert_eq!(first.json::<serde_json::Value>().await.expect("json")["status"], "PENDING");

    // Unchanged and not asked to wait: 304 at once.
    let unchanged = system.http.get(&url).header(IF_NONE_MATCH, &pending_tag).send().await.expect("answers");
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);

    // Asked to wait up to 20 s: answered when inventory confirms, about 1.5 s in.
    let asked = Instant::now();
    let changed = follow(&system, &url, &pending_tag, 20).await;
    let waited = asked.elapsed();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(changed.headers()["preference-applied"], "wait=20");
    let confirmed_tag = changed.headers()[ETAG].to_str().expect("etag").to_owned();
    assert_ne!(confirmed_tag, pending_tag);
    assert_eq!(changed.json::<serde_json::Value>().await.expect("json")["status"], "CONFIRMED");
    assert!(waited < Duration::from_secs(10), "woken by the change, not by the end of the wait: {waited:?}");

    // Nothing more happens to a confirmed order: 304 after the wait, with its tag.
    let asked = Instant::now();
    let quiet = follow(&system, &url, &confirmed_tag, 1).await;
    assert_eq!(quiet.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(quiet.headers()[ETAG].to_str().expect("etag"), confirmed_tag);
    assert!(asked.elapsed() >= Duration::from_millis(800), "it waited: {:?}", asked.elapsed());

    // `*` matches any current version of the order (RFC 9110): 304, at once or after a wait.
    let any = system.http.get(&url).header(IF_NONE_MATCH, "*").send().await.expect("answers");
    assert_eq!(any.status(), StatusCode::NOT_MODIFIED);
    let any = follow(&system, &url, "*", 1).await;
    assert_eq!(any.status(), StatusCode::NOT_MODIFIED);

    // Another customer cannot follow it.
    let other = system.keys.client("someone-else", Duration::from_secs(10));
    let refused = other.get(&url).header("Prefer", "wait=5").send().await.expect("answers");
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    system.stop().await;
}

#[tokio::test]
async fn waiting_without_an_etag_ends_when_the_order_is_final() {
    let gremlin = Pattern { enabled: true, one_in: 1, delay_ms: 1_000 };
    let system = TestSystem::start_with(Options { gremlin, ..Options::default() }).await;
    let id = system.place("CABLE-01", 1).await;
    let followed = system
        .http
        .get(format!("{}/orders/{id}", system.order_url))
        .header("Prefer", "wait=20")
        .send()
        .await
        .expect("answers");
    assert_eq!(followed.status(), StatusCode::OK);
    assert_eq!(followed.json::<serde_json::Value>().await.expect("json")["status"], "CONFIRMED");
    system.stop().await;
}
