//! A real Prometheus server for a test (Debian's `prometheus`), scraping the test's services
//! every second and evaluating the compose stack's rules (`compose/prometheus/alerts.yml`),
//! so that a test can watch an alert fire and resolve in Prometheus's own API.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

pub struct TestPrometheus {
    pub url: String,
    dir: PathBuf,
    child: tokio::process::Child,
    http: reqwest::Client,
}

impl TestPrometheus {
    /// Starts Prometheus scraping `targets` (job name, port on 127.0.0.1) and waits until it is
    /// ready.
    pub async fn start(name: &str, targets: &[(&str, u16)]) -> Self {
        let rules = crate::repo_file("compose/prometheus/alerts.yml");
        let rules = rules.canonicalize().expect("compose/prometheus/alerts.yml");
        let dir = std::env::temp_dir().join("order-system-tests").join(format!("{name}-prometheus"));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let jobs: String = targets
            .iter()
            .map(|(job, port)| {
                format!("  - job_name: {job}\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n")
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{jobs}",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config written");
        let port = crate::free_port();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
            .stderr(std::fs::File::create(dir.join("prometheus.err.log")).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus runs (Debian package `prometheus`; scripts/test installs it)");
        let prometheus = Self {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            child,
            http: crate::http_client(Duration::from_secs(5)),
        };
        crate::eventually_async("prometheus ready", || async {
            prometheus.http.get(format!("{}/-/ready", prometheus.url)).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        prometheus
    }

    /// The value of an instant query that returns one number, if it does now.
    pub async fn value(&self, query: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query", self.url);
        let body: Value = self.http.get(url).query(&[("query", query)]).send().await.ok()?.json().await.ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// The state (`pending` or `firing`) of alert `name`, or `None` while it is inactive.
    pub async fn alert(&self, name: &str) -> Option<String> {
        let body: Value = self.http.get(format!("{}/api/v1/alerts", self.url)).send().await.ok()?.json().await.ok()?;
        body["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|alert| alert["labels"]["alertname"] == name)
            .and_then(|alert| alert["state"].as_str().map(str::to_owned))
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
