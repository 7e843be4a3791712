//! The order service's process: `order serve` (the default) or `order migrate`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    messaging::service::main::<order::startup::OrderService>().await
}
