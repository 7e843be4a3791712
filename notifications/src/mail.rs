//! Sending what is owed. Each message is sent in a transaction of its own that locks its
//! row: sent, then recorded as sent, then committed. A crash after the server accepted the
//! message and before the commit leaves the row owed, so the message goes again after the
//! restart, with the same `Message-ID` (decision 0014). No other message is repeated: the
//! window is one message wide.
//!
//! One room: the recipients, the message, the SMTP exchange and the sender loop all turn on
//! one owed row; a third of the file is tests.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::AsyncConnection as _;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use platform::db::PgPool;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::configuration::MailSettings;
use crate::store::{self, Due, Kind};

/// Where a customer's messages go.
pub struct Recipients {
    template: String,
}

impl Recipients {
    pub fn new(template: &str) -> Self {
        Self { template: template.to_owned() }
    }

    /// The mailbox of `customer`, or why there is none: always the template's, `{customer}`
    /// standing for the id with `@` written `=` (so `bob@example.org` is
    /// `bob=example.org@customers.shop.example`). A customer id comes from a token's subject,
    /// which whoever holds a signing key chooses: taken as an address, it would send a
    /// customer's order to any mailbox on the internet. The template keeps every message in
    /// the shop's own domain, whose mail server (or a customer directory) knows the customer.
    pub fn of(&self, customer: &str) -> Result<Mailbox, String> {
        let address = self.template.replace("{customer}", &customer.replace('@', "="));
        address.parse().map_err(|e| format!("no valid address for customer {customer:?} ({address}): {e}"))
    }
}

/// What one SMTP exchange came to, when it was not a success.
#[derive(Debug)]
pub struct Undelivered {
    pub reason: String,
    /// The server (or the address) refused the message for good: trying again is pointless.
    pub permanent: bool,
}

/// Composes and sends messages through one SMTP server.
pub struct Mailer {
    /// Pooled connections, registered with the runtime that opened them: only the sender
    /// (the main runtime) may use it, never a request handler (actix's worker runtimes).
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: (String, u16),
    from: Mailbox,
    recipients: Recipients,
}

impl Mailer {
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.server_url)
            .map_err(|e| {
                let url = platform::config::redact_url(&settings.server_url);
                anyhow::anyhow!("NOTIFICATIONS__MAIL__SERVER_URL {url:?}: {e}")
            })?
            .timeout(Some(Duration::from_millis(settings.timeout_ms)))
            .build();
        let from = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("NOTIFICATIONS__MAIL__FROM {:?} is not an address: {e}", settings.from))?;
        if !settings.recipient.contains("{customer}") {
            anyhow::bail!("NOTIFICATIONS__MAIL__RECIPIENT must contain {{customer}}: {:?}", settings.recipient);
        }
        let server = server_address(&settings.server_url).ok_or_else(|| {
            let url = platform::config::redact_url(&settings.server_url);
            anyhow::anyhow!("NOTIFICATIONS__MAIL__SERVER_URL {url:?} names no host")
        })?;
        Ok(Self { transport, server, from, recipients: Recipients::new(&settings.recipient) })
    }

    /// Sends `due`; returns the address it went to.
    #[tracing::instrument(name = "mail.send", skip_all, fields(order_id = %due.order_id))]
    pub async fn send(&self, due: &Due) -> Result<String, Undelivered> {
        let refused = |reason: String| Undelivered { reason, permanent: true };
        let to = self.recipients.of(&due.customer_id).map_err(refused)?;
        let address = to.email.to_string();
        let message = compose(due, self.from.clone(), to).map_err(|e| refused(e.to_string()))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(address),
            Err(error) => Err(Undelivered { reason: error.to_string(), permanent: error.is_permanent() }),
        }
    }

    /// Whether the server accepts a connection (for `/health`), on a connection of its own.
    pub async fn reachable(&self) -> std::io::Result<()> {
        let (host, port) = &self.server;
        tokio::net::TcpStream::connect((host.as_str(), *port)).await.map(drop)
    }
}

/// Host and port of an `smtp://` or `smtps://` URL (ports 25 and 465 when none is given).
fn server_address(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default = if scheme == "smtps" { 465 } else { 25 };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (host_port, default),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// The message for one outcome: plain text, with the row's stable `Message-ID`.
pub fn compose(due: &Due, from: Mailbox, to: Mailbox) -> Result<Message, lettre::error::Error> {
    let order = due.order_id;
    let (subject, body) = match Kind::parse(&due.kind) {
        Some(Kind::Confirmed) => (
            format!("Your order {order} is confirmed"),
            format!("Good news: every item of order {order} is reserved for you.\n"),
        ),
        Some(Kind::Rejected) => (
            format!("Your order {order} could not be accepted"),
            format!(
                "We are sorry: order {order} could not be accepted and nothing was charged.\nWhy: {}\n",
                due.detail.as_deref().unwrap_or("not stated")
            ),
        ),
        Some(Kind::Shipped) => (
            format!("Your order {order} has shipped"),
            format!("Order {order} has left our warehouse and is on its way to you.\n"),
        ),
        Some(Kind::Cancelled) | None => (
            format!("Your order {order} is cancelled"),
            format!("Order {order} is cancelled, as you asked; anything reserved for it is released.\n"),
        ),
    };
    Message::builder()
        .message_id(Some(due.message_id.clone()))
        .from(from)
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
}

/// The sender's counts, on `/metrics`.
#[derive(Clone, Default)]
pub struct MailMetrics {
    pub sent: Counter,
    pub attempts_failed: Counter,
    pub given_up: Counter,
    pub backlog: Gauge,
}

impl MailMetrics {
    pub fn register(&self, metrics: &platform::metrics::Metrics) {
        metrics.register("notifications_sent", "Messages the SMTP server accepted", self.sent.clone());
        metrics.register(
            "notifications_attempts_failed",
            "SMTP attempts that failed (retried or given up)",
            self.attempts_failed.clone(),
        );
        metrics.register("notifications_failed", "Messages given up", self.given_up.clone());
        metrics.register("notifications_backlog", "Messages owed and not sent yet", self.backlog.clone());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("database: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] diesel_async::pooled_connection::deadpool::PoolError),
    #[error(transparent)]
    Injected(#[from] platform::crash::InjectedFault),
}

/// Sends what is owed, `settings.senders` messages at a time, until shutdown.
pub struct Sender {
    pub pool: PgPool,
    pub mailer: Arc<Mailer>,
    pub settings: MailSettings,
    /// Woken when an event owed a message.
    pub owed: Arc<Notify>,
    pub metrics: MailMetrics,
}

impl Sender {
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let sender = Arc::new(self);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..sender.settings.senders.max(1) {
            let (sender, shutdown) = (Arc::clone(&sender), shutdown.clone());
            workers.spawn(async move { sender.work(&shutdown).await });
        }
        let (gauge, token) = (Arc::clone(&sender), shutdown.clone());
        workers.spawn(async move { gauge.measure_backlog(&token).await });
        while let Some(joined) = workers.join_next().await {
            joined?;
        }
        Ok(())
    }

    async fn work(&self, shutdown: &CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_ms);
        while !shutdown.is_cancelled() {
            match self.send_one().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "cannot send owed messages now; trying again"),
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = self.owed.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Sends the oldest due message, if there is one; returns whether there was.
    pub async fn send_one(&self) -> Result<bool, SendError> {
        let mut conn = self.pool.get().await?;
        conn.transaction::<_, SendError, _>(async |conn| {
            let Some(due) = store::claim_due(conn).await? else { return Ok(false) };
            match self.mailer.send(&due).await {
                Ok(recipient) => {
                    platform::crash::point(crate::AFTER_SEND_BEFORE_RECORD)?;
                    store::mark_sent(conn, due.id, &recipient).await?;
                    self.metrics.sent.inc();
                    tracing::info!(order_id = %due.order_id, kind = due.kind, message_id = due.message_id, "message sent");
                }
                Err(undelivered) => {
                    self.metrics.attempts_failed.inc();
                    let attempts = due.attempts + 1;
                    let give_up = undelivered.permanent || attempts >= self.settings.max_attempts;
                    let retry_at = (!give_up).then(|| Utc::now() + retry_after(attempts));
                    if give_up {
                        self.metrics.given_up.inc();
                        tracing::error!(order_id = %due.order_id, attempts, reason = undelivered.reason, "message given up");
                    } else {
                        tracing::warn!(order_id = %due.order_id, attempts, reason = undelivered.reason, "message not sent; will retry");
                    }
                    store::mark_failed(conn, due.id, &undelivered.reason, retry_at).await?;
                }
            }
            Ok(true)
        })
        .await
    }

    async fn measure_backlog(&self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Ok(mut conn) = self.pool.get().await
                && let Ok(count) = store::backlog(&mut conn).await
            {
                self.metrics.backlog.set(count);
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }
}

/// How long after its `attempts`-th failure a message is tried again: 1 s, doubling, at
/// most 5 min.
pub fn retry_after(attempts: i32) -> chrono::TimeDelta {
    let seconds = 1i64 << attempts.clamp(1, 10).saturating_sub(1);
    chrono::TimeDelta::seconds(seconds.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(kind: Kind) -> Due {
        Due {
            id: uuid::Uuid::nil(),
            order_id: uuid::Uuid::nil(),
            kind: kind.as_str().to_owned(),
            detail: Some("MUG-01: asked for 9, only 2 left".into()),
            message_id: store::message_id(uuid::Uuid::nil()),
            attempts: 0,
            customer_id: "alice".into(),
        }
    }

    #[test]
    fn a_message_carries_its_rows_message_id_and_the_rejection_reason() {
        let to = Recipients::new("{customer}@customers.test").of("alice").expect("address");
        let from: Mailbox = "Shop <orders@shop.test>".parse().expect("from");
        let message = compose(&due(Kind::Rejected), from, to).expect("composes");
        let text = String::from_utf8(message.formatted()).expect("utf-8");
        assert!(
            text.contains("Message-ID: <00000000-0000-0000-0000-000000000000@notifications.order-system>"),
            "{text}"
        );
        assert!(text.contains("To: alice@customers.test"), "{text}");
        assert!(text.contains("only 2 left"), "{text}");
    }

    #[test]
    fn every_message_goes_to_the_templates_domain_and_an_id_that_makes_no_address_is_refused() {
        let recipients = Recipients::new("{customer}@customers.test");
        let to = |customer| recipients.of(customer).map(|m| m.email.to_string());
        assert_eq!(to("alice"), Ok("alice@customers.test".to_owned()));
        assert_eq!(to("bob@example.org"), Ok("bob=example.org@customers.test".to_owned()), "never example.org itself");
        assert!(to("not an address").is_err());
    }

    #[test]
    fn the_health_probe_finds_host_and_port_in_the_server_url() {
        assert_eq!(server_address("smtp://127.0.0.1:2525"), Some(("127.0.0.1".into(), 2525)));
        assert_eq!(server_address("smtp://u:p@mail.example:587?tls=required"), Some(("mail.example".into(), 587)));
        assert_eq!(server_address("smtps://mail.example"), Some(("mail.example".into(), 465)));
        assert_eq!(server_address("smtp://[::1]:2525"), Some(("::1".into(), 2525)));
        assert_eq!(server_address("mail.example"), None);
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        let waits: Vec<i64> = [1, 2, 3, 9, 10, 40].map(|a| retry_after(a).num_seconds()).to_vec();
        assert_eq!(waits, [1, 2, 4, 256, 300, 300]);
    }
}
