//! `check-invariants`: runs the checker (see the library) against the two databases, prints
//! the report, and exits 1 on any violation.

use clap::Parser;

/// Checks that the books of the order system balance. Exits 1 on any violation.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[arg(long, env = "ORDER_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/orders")]
    order_db: String,
    #[arg(long, env = "INVENTORY_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/inventory")]
    inventory_db: String,
    /// Orders younger than this may still be in flight.
    #[arg(long, default_value_t = 30.0)]
    grace_secs: f64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = checker::check(&args.order_db, &args.inventory_db, args.grace_secs).await?;
    let text = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { checker::render(&report) };
    // A reader that stops early (| head) is not an error of ours.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    if !report.is_clean() {
        std::process::exit(1);
    }
    Ok(())
}
