//! One process a test starts, kills and restarts ([`Service`]), and a broker of the test's
//! own ([`Broker`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::free_port;

/// One supervised-by-the-test process.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    pub(super) env: HashMap<String, String>,
    pub(super) child: Option<Child>,
    pub(super) log: PathBuf,
}

impl Service {
    /// Process `name` of system.toml with environment `env`, set to listen on a free port and
    /// to log into `logs/<name>.log`. Not started.
    pub(crate) fn on_free_port(name: &'static str, mut env: HashMap<String, String>, logs: &std::path::Path) -> Self {
        let port = crate::free_port();
        env.insert(format!("{}__HTTP__PORT", platform::system::process(name).prefix), port.to_string());
        Self { name, port, env, child: None, log: logs.join(format!("{name}.log")) }
    }

    /// Starts the process with its environment plus `extra`.
    pub fn start(&mut self, extra: &[(&str, &str)]) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let binary = binary(self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let mut command = Command::new(&binary);
        command.envs(&self.env).env_remove("CRASH_POINTS").stdout(log.try_clone().expect("log")).stderr(log);
        for (key, value) in extra {
            command.env(key, value);
        }
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display())));
    }

    /// Sets one variable of the environment the process starts with from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.insert(key.to_owned(), value.to_owned());
    }

    /// SIGKILL: no cleanup, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process hangs where it is; its connections stay open, its timers stand
    /// still.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: a paused process goes on where it stopped.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGHUP: reload what the process reloads (the keys for customers' tokens).
    pub fn hang_up(&self) {
        self.signal("-HUP");
    }

    fn signal(&self, which: &str) {
        let child = self.child.as_ref().unwrap_or_else(|| panic!("{} is not running", self.name));
        let status = Command::new("kill").args([which, &child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {which} {}", self.name);
    }

    /// SIGTERM, then waits for a clean exit (up to `within`); returns whether it exited in time.
    pub async fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Waits until the process exits by itself (a crash point aborted it).
    pub async fn exited(&mut self, within: Duration) -> bool {
        self.exit_status(within).await.is_some()
    }

    /// How the process ended by itself within `within`, if it did (a process that was not
    /// running counts as a clean exit).
    pub async fn exit_status(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            let status = match self.child.as_mut() {
                None => Some(ExitStatus::default()),
                Some(child) => child.try_wait().ok().flatten(),
            };
            if status.is_some() {
                self.child = None;
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The file the process writes its (JSON) log lines to.
    pub fn log_file(&self) -> &std::path::Path {
        &self.log
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Another instance of the same service: same settings, database and consumer group, a
    /// port and log of its own. Not started.
    pub fn replica(&self, log_name: &str) -> Service {
        let port = free_port();
        let mut env = self.env.clone();
        for (key, value) in env.iter_mut() {
            if key.ends_with("__HTTP__PORT") {
                *value = port.to_string();
            }
        }
        let log = self.log.with_file_name(format!("{log_name}.log"));
        Service { name: self.name, port, env, child: None, log }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where `cargo build --bins` put the service binaries: next to the test's `deps` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --bins` first (scripts/test does)", path.display());
    path
}

/// A single-node Kafka of the test's own, on free ports, that the test may kill and restart
/// (its data is kept across restarts, as a real broker's would be). Started by `scripts/kafka`,
/// the same launcher the local stack uses.
pub struct Broker {
    pub address: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub fn new(dir: PathBuf) -> Self {
        // The controller listens on port + 1.
        let port = crate::free_ports(2);
        Self { address: format!("127.0.0.1:{port}"), port, dir, child: None }
    }

    /// Starts the broker and waits until it answers a metadata request.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let launcher = crate::repo_file("scripts/kafka");
        std::fs::create_dir_all(&self.dir).expect("broker dir");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("broker.log")).expect("log");
        let mut command = Command::new(launcher);
        command.args(["run", "--dir", &self.dir.to_string_lossy(), "--port", &self.port.to_string(), "--heap", "256m"]);
        if let Some(credentials) = crate::kafka_credentials() {
            command.arg("--credentials").arg(credentials);
        }
        let child = command.stdout(log.try_clone().expect("log")).stderr(log).spawn().expect("scripts/kafka starts");
        self.child = Some(child);
        let settings = platform::config::KafkaSettings { brokers: self.address.clone(), ..crate::kafka_settings() };
        let probe = platform::kafka::BrokerProbe::new(&settings, None).expect("probe");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while probe.check(Duration::from_secs(1)).await.is_err() {
            let exited = self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
            assert!(!exited, "the test broker exited; see {}", self.dir.join("broker.log").display());
            assert!(tokio::time::Instant::now() < deadline, "the test broker did not answer at {}", self.address);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL: the broker stops mid-flight; its data stays for the next start.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    /// Kills the broker; its folder goes too, unless the test is failing: then its log is
    /// what tells whether a client that never got through had a broker to get through to.
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("the test broker's log is kept: {}", self.dir.join("broker.log").display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
