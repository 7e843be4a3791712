use clap::Parser;
use inventory::configuration::Settings;
use inventory::startup::{Application, MIGRATIONS};

/// The inventory service.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve the HTTP API and consume order events (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init();
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    let settings = Settings::load()?;
    platform::crash::arm_from_env()?;
    match command {
        Command::Migrate => {
            let applied = platform::db::run_migrations(&settings.database.url, MIGRATIONS).await?;
            tracing::info!(?applied, "migrations applied");
        }
        Command::Serve => {
            let shutdown = platform::shutdown::on_signal();
            Application::build(settings, shutdown).await?.run_until_stopped().await?;
        }
    }
    Ok(())
}
