//! The notifications service's process: `notifications serve` (the default) or
//! `notifications migrate`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    messaging::service::main::<notifications::startup::NotificationsService>().await
}
