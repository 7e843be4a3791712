//! The notifications service as a process next to a [`Processes`] system, with a real SMTP
//! server that keeps what it receives ([`MailServer`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use notifications::tables::notifications as owed;

use super::{Processes, Service};
use crate::databases::TestDatabase;
use crate::free_port;

/// Debian's aiosmtpd (`python3-aiosmtpd`, which scripts/test installs), run with its Maildir
/// handler: every message it accepts is a file in `dir`.
pub struct MailServer {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub message_id: String,
    pub to: String,
    pub subject: String,
}

impl MailServer {
    pub async fn start(dir: PathBuf) -> Self {
        let port = free_port();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd runs (Debian's python3-aiosmtpd; scripts/test installs it)");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the SMTP server never listened on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Mail> {
        let mut mails = Vec::new();
        for folder in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(folder)) else { continue };
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).expect("a stored message");
                let headers = unfolded_headers(&text);
                let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
                mails.push(Mail { message_id: header("message-id"), to: header("to"), subject: header("subject") });
            }
        }
        mails
    }
}

/// The header block of a stored message, names lower-cased, folded lines joined.
fn unfolded_headers(text: &str) -> HashMap<String, String> {
    let mut headers: HashMap<String, String> = HashMap::new();
    let mut last = String::new();
    for line in text.lines().take_while(|l| !l.trim().is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some(value) = headers.get_mut(&last) {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            last = name.trim().to_ascii_lowercase();
            headers.insert(last.clone(), value.trim().to_owned());
        }
    }
    headers
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One row of the notifications database: a message owed, and whether it was sent.
#[derive(Debug, Clone, Queryable)]
pub struct Owed {
    pub order_id: uuid::Uuid,
    pub kind: String,
    pub message_id: String,
    pub sent: bool,
}

/// The notifications process of a test system, its database and its SMTP server.
pub struct Notifications {
    pub service: Service,
    pub mail: MailServer,
    pub db: String,
    _database: TestDatabase,
}

impl Notifications {
    /// Prepares the service for `system`'s topics and broker, with a database and consumer
    /// group of its own and a fresh SMTP server. Not started.
    pub async fn prepare(system: &Processes) -> Self {
        let database = TestDatabase::create(&crate::pg_server_url(), &format!("{}_notifications", system.name)).await;
        let mail = MailServer::start(system.logs.join("maildir")).await;
        let env = super::environment(
            "notifications",
            &system.brokers,
            &system.topics,
            vec![
                ("DATABASE__URL", database.url.clone()),
                ("CONSUMER_GROUP", format!("{}-notifications", system.name)),
                ("MAIL__SERVER_URL", mail.url()),
                ("AUTH__PUBLIC_KEY_FILE", system.keys.public_key_file.to_string_lossy().into_owned()),
            ],
        );
        let service = Service::on_free_port("notifications", env, &system.logs);
        Self { service, mail, db: database.url.clone(), _database: database }
    }

    /// Every message owed so far.
    pub async fn owed(&self) -> Vec<Owed> {
        let mut conn = crate::TestSystem::connect(&self.db).await;
        owed::table
            .select((owed::order_id, owed::kind, owed::message_id, owed::sent_at.is_not_null()))
            .load(&mut conn)
            .await
            .unwrap_or_default()
    }

    /// Waits until `count` messages are owed and every one is sent; returns them.
    pub async fn all_sent(&self, count: usize, within: Duration) -> Vec<Owed> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let rows = self.owed().await;
            if rows.len() >= count && rows.iter().all(|r| r.sent) {
                return rows;
            }
            let sent = rows.iter().filter(|r| r.sent).count();
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sent} of {} owed messages sent ({count} expected) after {within:?}; see {}",
                rows.len(),
                self.service.log.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
