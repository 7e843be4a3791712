//! A Postgres primary with one synchronous standby, made for one test from this machine's
//! Postgres binaries (the ones `scripts/test` installs): what a failover manager runs, without
//! the manager. A test stops and starts the standby to play a standby that is down, and
//! commits with `synchronous_commit = local` to play a commit whose wait for the standby was
//! cut short (decision 0030), and fails over (`fail_over`) to play the loss of the primary's
//! host. Both servers are stopped and their files removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The standby's name in `synchronous_standby_names` and its `application_name`.
const STANDBY_NAME: &str = "standby1";

pub struct ReplicatedPostgres {
    root: PathBuf,
    bin: PathBuf,
    pub primary_port: u16,
    pub standby_port: u16,
}

impl ReplicatedPostgres {
    /// Makes and starts both: the primary waits for the standby on every ordinary commit.
    pub fn start(name: &str) -> Self {
        let bin = postgres_bin_dir()
            .expect("Postgres server binaries under /usr/lib/postgresql (scripts/test installs them)");
        let root = std::env::temp_dir().join("order-system-tests").join(format!("{name}-replicated"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("test folder");
        own(&root);
        let this = Self { root, bin, primary_port: crate::free_port(), standby_port: crate::free_port() };
        this.run("initdb", &["-D", &this.primary().to_string_lossy(), "-U", "postgres", "--auth=trust"]);
        let settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c lc_messages=C",
            this.primary_port,
            this.root.display()
        );

        this.pg_ctl(&this.primary(), &settings, "start");
        let source = format!("host=127.0.0.1 port={} user=postgres application_name={STANDBY_NAME}", this.primary_port);
        this.run("pg_basebackup", &["-d", &source, "-D", &this.standby().to_string_lossy(), "-R", "-X", "stream"]);
        this.start_standby();
        this.set_synchronous(true);
        this
    }

    /// Makes the primary's commits wait for the standby (`on`), or not, as a failover manager
    /// does while the standby is down. Set with ALTER SYSTEM, after the standby was copied, so
    /// that a promoted standby does not wait for a standby of its own.
    pub fn set_synchronous(&self, on: bool) {
        let names = if on { STANDBY_NAME } else { "" };
        let port = self.primary_port.to_string();
        let alter = format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'");
        let args = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-qc", &alter, "-c", "SELECT pg_reload_conf()"];
        self.run("psql", &args);
    }

    /// A test's name (`t` and 12 hex digits, the prefix of its databases and topics) and its
    /// primary and standby, made off the async runtime (the binaries block).
    pub async fn for_test() -> (String, Self) {
        let name = crate::unique_name("t");
        let made = name.clone();
        let postgres = tokio::task::spawn_blocking(move || Self::start(&made)).await.expect("replicated postgres");
        (name, postgres)
    }

    /// The primary, as a server URL without a database.
    pub fn primary_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.primary_port)
    }

    /// Creates database `name` on the primary and returns its URL. It goes with the servers:
    /// no guard drops it (a drop would wait for a standby that a test may have stopped).
    pub fn create_database(&self, name: &str) -> String {
        let port = self.primary_port.to_string();
        self.run("createdb", &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name]);
        format!("{}/{name}", self.primary_url())
    }

    /// The URL of database `name` on whichever of the two takes writes: both hosts, tried in
    /// order, the way the services follow a primary across a failover.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{name}?target_session_attrs=read-write",
            self.primary_port, self.standby_port
        )
    }

    /// What a failover manager does when the primary's host is lost: the primary stops
    /// without a shutdown checkpoint (a crash), then the standby is promoted and takes writes.
    pub fn fail_over(&self) {
        self.pg_ctl(&self.primary(), "", "stop -m immediate");
        self.pg_ctl(&self.standby(), "", "promote");
    }

    pub fn stop_standby(&self) {
        self.pg_ctl(&self.standby(), "", "stop -m fast");
    }

    /// Starts the standby; it catches up from the primary on its own.
    pub fn start_standby(&self) {
        let settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c lc_messages=C",
            self.standby_port,
            self.root.display()
        );
        self.pg_ctl(&self.standby(), &settings, "start");
    }

    fn primary(&self) -> PathBuf {
        self.root.join("primary")
    }

    fn standby(&self) -> PathBuf {
        self.root.join("standby")
    }

    fn pg_ctl(&self, data: &Path, options: &str, action: &str) {
        let log = data.with_extension("log");
        let mut args = vec!["-D".to_owned(), data.to_string_lossy().into_owned(), "-w".into()];
        args.extend(["-l".into(), log.to_string_lossy().into_owned()]);
        if !options.is_empty() {
            args.extend(["-o".into(), options.to_owned()]);
        }
        args.extend(action.split(' ').map(str::to_owned));
        self.run("pg_ctl", &args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// Runs one of the server binaries and fails the test if it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let output = server_binary(&self.bin, program).args(args).output().expect("a Postgres binary runs");
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ReplicatedPostgres {
    fn drop(&mut self) {
        for data in [self.standby(), self.primary()] {
            if data.join("postmaster.pid").exists() {
                let stop = ["-D", &data.to_string_lossy(), "-m", "immediate", "stop"].map(str::to_owned);
                let _ = server_binary(&self.bin, "pg_ctl").args(stop).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// One of the server binaries in `bin`, run as the postgres user when the tests run as root
/// (initdb refuses root).
fn server_binary(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

/// The newest Postgres server binaries Debian installed.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|bin| bin.parent().and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok()));
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

/// Hands `dir` to the postgres user when the tests run as root.
fn own(dir: &Path) {
    if is_root() {
        let status = Command::new("chown").args(["postgres"]).arg(dir).status().expect("chown");
        assert!(status.success(), "chown postgres {}", dir.display());
    }
}
