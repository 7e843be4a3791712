//! The inventory service's process: `inventory serve` (the default) or `inventory migrate`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    messaging::service::main::<inventory::startup::InventoryService>().await
}
