//! Settings of the notifications service: defaults, then `$CONFIG_FILE`, then
//! `NOTIFICATIONS__*` variables (e.g. `NOTIFICATIONS__MAIL__SERVER_URL`).

use serde::Deserialize;

/// The notifications service's whole settings. What every consuming service has is
/// `messaging::service::ServiceSettings` (its group reads both topics, and is its own so that
/// it never takes events from the order or inventory services).
pub type Settings = messaging::service::Settings<crate::startup::NotificationsService>;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct NotificationsSettings {
    #[serde(default)]
    pub mail: MailSettings,
    /// The customers' token keys (`NOTIFICATIONS__AUTH__PUBLIC_KEY_FILE`): a customer sees
    /// the messages about their own orders only.
    #[serde(default)]
    pub auth: platform::auth::AuthSettings,
}

/// `NOTIFICATIONS__MAIL__*`: where and how messages go.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    /// The SMTP server: `smtp://host:25` (plain: a relay on a private network, the local
    /// stack), `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465`; credentials
    /// as `smtp://user:password@host…`.
    #[serde(default = "default_server_url")]
    pub server_url: String,
    /// The `From` of every message.
    #[serde(default = "default_from")]
    pub from: String,
    /// A customer's address, `{customer}` standing for the customer id (`@` in it written `=`;
    /// never the id itself as an address: [`crate::mail::Recipients`]). Orders carry a
    /// customer id, not an address: a shop with a customer directory looks addresses up
    /// there instead ([`crate::mail::Recipients`]).
    #[serde(default = "default_recipient")]
    pub recipient: String,
    /// How many messages are sent at the same time.
    #[serde(default = "default_senders")]
    pub senders: usize,
    /// How long one SMTP exchange may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How often the queue is looked at when nothing woke the sender (a message waiting
    /// for its retry time, or one written by another instance).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Attempts before a message that keeps failing is given up (and counted in
    /// `notifications_failed_total`); the waits between them double from 1 s to 5 min.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    /// An outcome decided longer ago than this is not mailed: a service deployed for the
    /// first time reads the topics from their oldest event (7 days are kept) and must not
    /// mail a week of history. Longer than any outage it should catch up after.
    #[serde(default = "default_stale_after_hours")]
    pub stale_after_hours: u32,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            server_url: default_server_url(),
            from: default_from(),
            recipient: default_recipient(),
            senders: default_senders(),
            timeout_ms: default_timeout_ms(),
            poll_ms: default_poll_ms(),
            max_attempts: default_max_attempts(),
            stale_after_hours: default_stale_after_hours(),
        }
    }
}

fn default_server_url() -> String {
    "smtp://127.0.0.1:2525".into()
}

fn default_from() -> String {
    "Order System <orders@shop.example>".into()
}

fn default_recipient() -> String {
    "{customer}@customers.shop.example".into()
}

fn default_senders() -> usize {
    4
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_poll_ms() -> u64 {
    1_000
}

fn default_max_attempts() -> i32 {
    12
}

fn default_stale_after_hours() -> u32 {
    24
}
