//! The notifications service, added from the outside: it consumes the core's topics with a
//! group, database and inbox of its own, and mails each outcome over SMTP (decision 0014).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use e2e::processes::{Notifications, Processes};
use serde_json::json;

const CRASH: Duration = Duration::from_secs(60);
const CATCH_UP: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_crash_between_sending_and_recording_repeats_that_one_message_with_the_same_message_id() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let mut notifications = Notifications::prepare(&system).await;
    // One sender, so exactly one message is in flight when the process dies.
    let one_sender = ("NOTIFICATIONS__MAIL__SENDERS", "1");
    notifications.service.start(&[("CRASH_POINTS", "notifications.after_send_before_record=abort"), one_sender]);
    let mut orders = Vec::new();
    for i in 0..4 {
        orders.push(system.place(&format!("mail-{i}"), "MUG-01", 1).await);
    }

    assert!(notifications.service.exited(CRASH).await, "notifications died between sending and recording");
    let before = notifications.mail.messages();
    assert_eq!(before.len(), 1, "the server accepted the message before the crash: {before:?}");
    assert!(notifications.owed().await.iter().all(|o| !o.sent), "but nothing was recorded as sent");

    notifications.service.start(&[one_sender]);
    let owed = notifications.all_sent(orders.len(), CATCH_UP).await;
    let mails = notifications.mail.messages();
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for mail in &mails {
        *copies.entry(mail.message_id.as_str()).or_default() += 1;
    }
    assert_eq!(owed.len(), 4, "one message owed per confirmed order: {owed:?}");
    assert_eq!(
        owed.iter().map(|o| o.order_id.to_string()).collect::<HashSet<_>>(),
        orders.iter().cloned().collect::<HashSet<_>>(),
        "every order is told"
    );
    for row in &owed {
        let expected = if row.message_id == before[0].message_id { 2 } else { 1 };
        assert_eq!(copies.get(row.message_id.as_str()), Some(&expected), "copies of {row:?} in {mails:?}");
    }
    assert_eq!(mails.len(), 5, "four messages, and the one in flight at the crash once more: {mails:?}");

    // What was sent, as the customer sees it; nobody else sees it.
    let url = format!("{}/notifications?order_id={}", notifications.service.url(), orders[0]);
    let shown: serde_json::Value = system.http.get(&url).send().await.expect("answers").json().await.expect("json");
    let shown = &shown["notifications"][0];
    assert_eq!((shown["kind"].as_str(), shown["sent_at"].is_string()), (Some("CONFIRMED"), true), "{shown}");
    let stranger = system.keys.client("someone-else", Duration::from_secs(10));
    assert_eq!(stranger.get(&url).send().await.expect("answers").status(), 404, "another customer's order");
    let anonymous = e2e::http_client(Duration::from_secs(10));
    assert_eq!(anonymous.get(&url).send().await.expect("answers").status(), 401, "no token");
    let malformed = format!("{}/notifications?order_id=42", notifications.service.url());
    assert_eq!(system.http.get(&malformed).send().await.expect("answers").status(), 400, "not a UUID");
    system.stop().await;
}

/// One order placed under load: its id, the answer's status and how long the answer took.
struct Placed {
    id: String,
    seconds: f64,
}

/// Places `rate` orders a second for `seconds`, each waiting up to 5 s for its outcome, and
/// cancels one in 25 (never a poster) once answered.
async fn load(system: &Processes, phase: &str, seconds: u64, rate: u64) -> Vec<Placed> {
    let mut requests = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / rate));
    for i in 0..seconds * rate {
        tick.tick().await;
        let (http, url) = (system.http.clone(), system.order.url());
        let sku = if i % 10 == 9 { "POSTER-01" } else { "MUG-01" };
        let key = format!("{phase}-{i}");
        requests.spawn(async move {
            let started = Instant::now();
            let response = http
                .post(format!("{url}/orders"))
                .header("Idempotency-Key", key)
                .header("Prefer", "wait=5")
                .json(&json!({"lines": [{"sku": sku, "quantity": 1}]}))
                .send()
                .await
                .expect("order service answers");
            let seconds = started.elapsed().as_secs_f64();
            assert!(response.status().is_success(), "order refused: {}", response.status());
            let order: serde_json::Value = response.json().await.expect("json");
            let id = order["id"].as_str().expect("id").to_owned();
            if i % 25 == 23 {
                let cancelled = http.post(format!("{url}/orders/{id}/cancel")).send().await.expect("answers");
                let status = cancelled.status();
                assert!(
                    status.is_success(),
                    "cancel of {order} refused: {status} {}",
                    cancelled.text().await.unwrap_or_default()
                );
            }
            Placed { id, seconds }
        });
    }
    requests.join_all().await
}

fn percentile(placed: &[Placed], p: f64) -> f64 {
    let mut seconds: Vec<f64> = placed.iter().map(|o| o.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    seconds[((seconds.len() - 1) as f64 * p).round() as usize] * 1000.0
}

#[tokio::test]
async fn sixty_seconds_without_notifications_leave_orders_unaffected_and_it_catches_up_exactly_once() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let mut notifications = Notifications::prepare(&system).await;
    notifications.service.start(&[]);
    system.wait_ready(&notifications.service).await;

    let up = load(&system, "up", 20, 10).await;
    assert!(notifications.service.terminate(Duration::from_secs(30)).await, "notifications stopped cleanly");
    let down = load(&system, "down", 60, 10).await;
    let restarted = Instant::now();
    notifications.service.start(&[]);
    let back = load(&system, "back", 10, 10).await;
    let report = system.settle(Duration::from_secs(60)).await;

    // Every order is told its outcome: one message per outcome it went through.
    let orders: Vec<&Placed> = up.iter().chain(&down).chain(&back).collect();
    let final_kind: HashMap<String, String> = {
        let mut kinds = HashMap::new();
        for order in &orders {
            let body: serde_json::Value = system
                .http
                .get(format!("{}/orders/{}", system.order.url(), order.id))
                .send()
                .await
                .expect("answers")
                .json()
                .await
                .expect("json");
            kinds.insert(order.id.clone(), body["status"].as_str().expect("status").to_owned());
        }
        kinds
    };
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    let owed = loop {
        let owed = notifications.owed().await;
        let told: HashSet<(String, &str)> = owed.iter().map(|o| (o.order_id.to_string(), o.kind.as_str())).collect();
        let missing = final_kind.iter().filter(|(id, kind)| !told.contains(&((*id).clone(), kind.as_str()))).count();
        let unsent = owed.iter().filter(|o| !o.sent).count();
        if missing == 0 && unsent == 0 {
            break owed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{missing} outcomes not owed, {unsent} messages not sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let caught_up = restarted.elapsed();

    let mails = notifications.mail.messages();
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for mail in &mails {
        *copies.entry(mail.message_id.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "messages received more than once: {duplicated:?}");
    for row in &owed {
        assert_eq!(copies.get(row.message_id.as_str()), Some(&1), "{row:?} was received once");
    }
    assert_eq!(mails.len(), owed.len(), "nothing received that was not owed");

    let (up_p50, up_p99) = (percentile(&up, 0.5), percentile(&up, 0.99));
    let (down_p50, down_p99) = (percentile(&down, 0.5), percentile(&down, 0.99));
    println!(
        "orders: {} ({:?}); messages: {} sent once each; caught up {:.1} s after the restart\n\
         POST /orders (wait=5) with notifications up: p50 {up_p50:.1} ms, p99 {up_p99:.1} ms; \
         down: p50 {down_p50:.1} ms, p99 {down_p99:.1} ms (ratio p50 {:.2})",
        orders.len(),
        report.orders_by_status,
        mails.len(),
        caught_up.as_secs_f64(),
        down_p50 / up_p50
    );
    // Independence, not a benchmark: the order path never waits for notifications, so its
    // outage cannot slow orders down; the bound only catches a path that does wait.
    assert!(down_p50 <= 2.0 * up_p50 + 50.0, "orders slowed while notifications were down");
    system.stop().await;
}

#[tokio::test]
async fn a_shipped_order_is_told_with_a_message_of_its_own() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let mut notifications = Notifications::prepare(&system).await;
    notifications.service.start(&[]);
    let id = system.place("ship-me", "LAMP-01", 1).await;
    notifications.all_sent(1, CATCH_UP).await;

    let operator = system.keys.operator_token("packer-1");
    let ship = format!("{}/orders/{id}/ship", system.order.url());
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let answer = system.http.post(&ship).bearer_auth(&operator).header("Idempotency-Key", "s1").send().await;
        if answer.is_ok_and(|a| a.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "the order never shipped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let owed = notifications.all_sent(2, CATCH_UP).await;
    let kinds: HashSet<&str> = owed.iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(kinds, HashSet::from(["CONFIRMED", "SHIPPED"]), "{owed:?}");
    let mails = notifications.mail.messages();
    assert!(mails.iter().any(|m| m.subject == format!("Your order {id} has shipped")), "{mails:?}");
    assert_eq!(mails.len(), 2, "{mails:?}");
    system.settle(CATCH_UP).await;
    system.stop().await;
}
