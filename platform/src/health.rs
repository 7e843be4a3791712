//! Readiness checks. A check runs a real query (or metadata request) against a dependency
//! within a short timeout and reports status, latency and, on failure, a plain message
//! naming the dependency and what is wrong.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use diesel_async::RunQueryDsl as _;
use serde::Serialize;
use serde_json::json;

use crate::db::PgPool;

/// How long a single dependency check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: &'static str,
    /// A required dependency that is down makes the service not ready (503); an optional
    /// one only degrades it (e.g. the broker, for the order service, which keeps accepting
    /// orders into its outbox).
    pub required: bool,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a database: the server (`host:port`) that answered, so that after a failover
    /// `/health` says which node is the primary this instance writes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

impl Check {
    /// A check that failed before it could run, e.g. a service still waiting for its database.
    pub fn down(name: &str, problem: String) -> Self {
        Self {
            name: name.to_owned(),
            status: "down",
            required: true,
            latency_ms: 0,
            message: Some(problem),
            server: None,
        }
    }

    pub fn up(name: &str) -> Self {
        Self { name: name.to_owned(), status: "up", required: true, latency_ms: 0, message: None, server: None }
    }

    pub fn is_up(&self) -> bool {
        self.status == "up"
    }

    /// The same check, not required for readiness.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }
}

/// How long a dependency's check is reused: `/health` is open to anyone, and a flood of it
/// costs each dependency one probe per second instead of a connection or a metadata request
/// per call.
pub const REUSE_FOR: Duration = Duration::from_secs(1);

/// The latest result of each named check, reused for [`REUSE_FOR`]. Callers arriving while a
/// probe runs wait for it (at most [`CHECK_TIMEOUT`]) instead of starting their own. The names
/// are the service's own checks, never a client's input.
#[derive(Debug, Default)]
pub struct RecentChecks(tokio::sync::Mutex<HashMap<String, (Instant, Check)>>);

impl RecentChecks {
    pub async fn get_or_probe<F: Future<Output = Check>>(&self, name: &str, probe: impl FnOnce() -> F) -> Check {
        let mut recent = self.0.lock().await;
        if let Some((at, check)) = recent.get(name)
            && at.elapsed() < REUSE_FOR
        {
            return check.clone();
        }
        let check = probe().await;
        recent.insert(name.to_owned(), (Instant::now(), check.clone()));
        check
    }
}

/// Runs `probe` with [`CHECK_TIMEOUT`]; `Err` text becomes the message after `name: `.
pub async fn check<F>(name: &str, probe: F) -> Check
where
    F: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let result = tokio::time::timeout(CHECK_TIMEOUT, probe).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let message = match result {
        Ok(Ok(())) => None,
        Ok(Err(problem)) => Some(format!("{name}: {problem}")),
        Err(_) => Some(format!("{name}: no answer within {}s", CHECK_TIMEOUT.as_secs())),
    };
    let status = if message.is_none() { "up" } else { "down" };
    Check { name: name.to_owned(), status, required: true, latency_ms, message, server: None }
}

#[derive(diesel::QueryableByName)]
struct Server {
    #[diesel(sql_type = diesel::sql_types::Text)]
    server: String,
}

/// The server a connection reached, as `host:port` (`local socket` over a Unix socket).
const SERVER: &str =
    "SELECT COALESCE(host(inet_server_addr()), 'local socket') || ':' || current_setting('port') AS server";

/// Checks that `pool`'s database answers `probe_sql` (a query against one of the service's
/// own tables, so a missing migration shows up as a failure).
pub async fn database(name: &str, pool: &PgPool, probe_sql: &'static str) -> Check {
    let server = std::sync::Mutex::new(None);
    let mut checked = check(name, async {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        diesel::sql_query(probe_sql).execute(&mut conn).await.map_err(|e| e.to_string())?;
        let answered = diesel::sql_query(SERVER).get_result::<Server>(&mut conn).await.map_err(|e| e.to_string())?;
        *server.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(answered.server);
        Ok(())
    })
    .await;
    checked.server = server.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    checked
}

/// [`database`], once the service is ready; before that, why it is not.
pub async fn database_when_ready(
    name: &str,
    readiness: &crate::readiness::Readiness,
    pool: &PgPool,
    probe_sql: &'static str,
) -> Check {
    match readiness.problem() {
        Some(problem) => Check::down(name, problem),
        None => readiness.checked(name, || database(name, pool, probe_sql)).await,
    }
}

/// Checks that a broker answers a metadata request (reused for [`REUSE_FOR`]).
pub async fn broker(probe: &crate::kafka::BrokerProbe) -> Check {
    probe.recent.get_or_probe("kafka", || check("kafka", probe.check(CHECK_TIMEOUT))).await
}

/// 200 when every required check is up (status `up`, or `degraded` if an optional one is
/// down), 503 otherwise, with one entry per dependency.
pub fn response(checks: &[Check]) -> HttpResponse {
    response_with(checks, serde_json::Map::new())
}

/// [`response`] with extra top-level fields (e.g. the relay's outboxes).
pub fn response_with(checks: &[Check], mut body: serde_json::Map<String, serde_json::Value>) -> HttpResponse {
    let ready = is_ready(checks);
    add_checks(&mut body, checks);
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

/// The body [`response`] sends: overall status and one entry per check.
pub fn body(checks: &[Check]) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    add_checks(&mut body, checks);
    body.into()
}

fn is_ready(checks: &[Check]) -> bool {
    checks.iter().filter(|c| c.required).all(Check::is_up)
}

fn add_checks(body: &mut serde_json::Map<String, serde_json::Value>, checks: &[Check]) {
    let status = match (is_ready(checks), checks.iter().all(Check::is_up)) {
        (true, true) => "up",
        (true, false) => "degraded",
        (false, _) => "down",
    };
    let entries: serde_json::Map<String, serde_json::Value> =
        checks.iter().map(|c| (c.name.clone(), serde_json::to_value(c).unwrap_or_default())).collect();
    body.insert("status".into(), status.into());
    body.insert("checks".into(), entries.into());
}

/// What `/health` says about a service's consumer: its group and the partitions the group
/// gave this instance (`topic/partition`). Informational: an instance with no partitions (more
/// instances than partitions) is a ready standby.
pub fn consumer(group: &str, context: &crate::kafka::GroupContext) -> serde_json::Value {
    let partitions: Vec<String> =
        context.assigned().iter().map(|(topic, partition)| format!("{topic}/{partition}")).collect();
    json!({ "group": group, "partitions": partitions, "paused": context.paused() })
}

/// The process's own background tasks (consumer, listeners, relays): down, with what died,
/// once one of them ended before shutdown; the process is then on its way out.
pub fn background(readiness: &crate::readiness::Readiness) -> Check {
    match readiness.failure() {
        Some(failure) => Check::down("background tasks", failure),
        None => Check::up("background tasks"),
    }
}

/// The body of `/health/live`.
pub fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "up" }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{Check, REUSE_FOR, RecentChecks};

    #[tokio::test]
    async fn a_flood_of_checks_probes_the_dependency_once_a_second() {
        let recent = Arc::new(RecentChecks::default());
        let probes = Arc::new(AtomicUsize::new(0));
        let flood = |recent: Arc<RecentChecks>, probes: Arc<AtomicUsize>| async move {
            let calls = (0..200).map(|_| {
                let (recent, probes) = (Arc::clone(&recent), Arc::clone(&probes));
                tokio::spawn(async move {
                    recent
                        .get_or_probe("database", || async {
                            probes.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            Check::up("database")
                        })
                        .await
                })
            });
            for call in calls.collect::<Vec<_>>() {
                assert!(call.await.expect("joined").is_up());
            }
        };
        flood(Arc::clone(&recent), Arc::clone(&probes)).await;
        assert_eq!(probes.load(Ordering::SeqCst), 1, "200 concurrent checks, one probe");
        tokio::time::sleep(REUSE_FOR).await;
        flood(Arc::clone(&recent), Arc::clone(&probes)).await;
        assert_eq!(probes.load(Ordering::SeqCst), 2, "a second later, one more");
    }
}
