//! A Jaeger of the test's own, on free ports, started by `scripts/jaeger` as the local stack
//! starts it: the collector the processes export their spans to, and the query API the
//! tests read traces from.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use crate::free_port;

pub struct Jaeger {
    otlp_port: u16,
    query_port: u16,
    child: Child,
    pub log: PathBuf,
}

impl Jaeger {
    /// Starts Jaeger and waits until its query API answers.
    pub async fn start(log: PathBuf) -> Self {
        let launcher = crate::repo_file("scripts/jaeger");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
        let (otlp_port, query_port) = (free_port(), free_port());
        let child = Command::new(launcher)
            .args(["run", "--otlp-port", &otlp_port.to_string(), "--query-port", &query_port.to_string()])
            .args(["--query-grpc-port", &free_port().to_string(), "--health-port", &free_port().to_string()])
            .args(["--metrics-port", &free_port().to_string(), "--max-traces", "10000"])
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("scripts/jaeger starts");
        let mut jaeger = Self { otlp_port, query_port, child, log };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        while jaeger.services().await.is_none() {
            assert!(!matches!(jaeger.child.try_wait(), Ok(Some(_))), "jaeger exited; see {}", jaeger.log.display());
            assert!(tokio::time::Instant::now() < deadline, "jaeger did not answer; see {}", jaeger.log.display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        jaeger
    }

    /// What the processes export to (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_port)
    }

    /// The query API's base address (what the order page reads, `ORDER__PEERS__TRACES`).
    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.query_port)
    }

    async fn get(&self, path_and_query: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}{path_and_query}", self.query_port);
        let response = reqwest::get(url).await.ok()?;
        response.status().is_success().then_some(())?;
        response.json().await.ok()
    }

    /// The services that have sent spans.
    pub async fn services(&self) -> Option<Vec<String>> {
        let body = self.get("/api/services").await?;
        Some(
            body["data"]
                .as_array()
                .map(|names| names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
        )
    }

    /// The traces in which a span of `service` has the tag `key` = `value`, as Jaeger's
    /// query API gives them (`data`: traces with `spans` and `processes`).
    pub async fn traces_tagged(&self, service: &str, key: &str, value: &str) -> Vec<Value> {
        let tags = serde_json::json!({ key: value }).to_string();
        let query = format!("/api/traces?service={service}&tags={}&lookback=1h&limit=20", urlencode(&tags));
        self.get(&query).await.and_then(|body| body["data"].as_array().cloned()).unwrap_or_default()
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
