//! The relay's process: `relay serve` (the default); see `relay::process`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::service::main::<relay::process::RelayProcess>().await
}
