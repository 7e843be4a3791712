//! The relay's own latency: commits outbox rows one per transaction at a steady rate into a
//! database whose relay runs, to a topic of its own that takes the broker's append time
//! (`message.timestamp.type=LogAppendTime`), then reads the topic back and prints, as JSON,
//! the time from each row's commit to its append on the broker.
//!
//! ```text
//! relay-latency --database-url postgres://…/orders --topic bench.latency --rate 1000 --seconds 60
//! ```
//!
//! A row's commit time is the database's clock when its insert ran, just before the commit
//! (`clock_timestamp()`, written into the envelope); the append time is the broker's, on the
//! same machine. So a figure includes the commit itself and is never less than the truth.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use platform::config::KafkaSettings;
use rdkafka::Message as _;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer as _;

#[derive(Parser)]
#[command(about = "Measure the relay's latency from commit to the broker's append")]
struct Args {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The outbox database a relay publishes.
    #[arg(long)]
    database_url: String,
    /// Created with the broker's append time if missing.
    #[arg(long)]
    topic: String,
    /// Rows per second, one per transaction.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Distinct message keys (orders).
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// The table the rows go into: `outbox` for a database from before the outbox log.
    #[arg(long, default_value = "outbox_log", value_parser = ["outbox_log", "outbox"])]
    table: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = KafkaSettings::for_tool(&args.brokers);
    create_topic(&settings, &args.topic).await?;

    // Read the topic from its start (a new group starts from the earliest offset) while the
    // rows are written.
    let consumer = platform::kafka::consumer(&settings, &format!("relay-latency-{}", std::process::id()))?;
    consumer.subscribe(&[&args.topic])?;
    let expected = args.rate * args.seconds;
    let reading = tokio::spawn(async move {
        let mut latencies = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.seconds + 120);
        while (latencies.len() as u64) < expected {
            let Ok(received) = tokio::time::timeout_at(deadline, consumer.recv()).await else { break };
            let Ok(message) = received else { continue };
            let appended_ms = message.timestamp().to_millis().unwrap_or(0);
            let Ok(body) = serde_json::from_slice::<serde_json::Value>(message.payload().unwrap_or_default()) else {
                continue;
            };
            let (Some(n), Some(written_us)) = (body["n"].as_u64(), body["written_us"].as_i64()) else { continue };
            latencies.entry(n).or_insert((appended_ms * 1000 - written_us) as f64 / 1000.0);
        }
        latencies
    });

    let mut conn = AsyncPgConnection::establish(&args.database_url).await.context("outbox database")?;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..expected {
        ticker.tick().await;
        diesel::sql_query(format!(
            "INSERT INTO {} (event_id, topic, message_key, event_type, correlation_id, envelope)
             VALUES (gen_random_uuid(), $1, $2, 'Latency', 'relay-latency',
                     json_build_object('n', $3::bigint,
                                       'written_us', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint))",
            args.table
        ))
        .bind::<Text, _>(&args.topic)
        .bind::<Text, _>(format!("order-{}", n % args.keys))
        .bind::<BigInt, _>(n as i64)
        .execute(&mut conn)
        .await?;
    }
    let wrote_for = started.elapsed().as_secs_f64();
    let latencies = reading.await?;
    let mut sorted: Vec<f64> = latencies.values().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    let over = |ms: f64| sorted.iter().filter(|&&l| l > ms).count();
    // When the slow ones were written: seconds into the run, each once.
    let mut slow_at: Vec<u64> = latencies.iter().filter(|(_, l)| **l > 20.0).map(|(n, _)| n / args.rate).collect();
    slow_at.sort_unstable();
    slow_at.dedup();
    println!(
        "{}",
        serde_json::json!({
            "written": expected,
            "received": sorted.len(),
            "write_rate": expected as f64 / wrote_for,
            "p50_ms": at(0.5),
            "p90_ms": at(0.9),
            "p99_ms": at(0.99),
            "p999_ms": at(0.999),
            "max_ms": sorted.last(),
            "over_10_ms": over(10.0),
            "over_20_ms": over(20.0),
            "seconds_with_one_over_20_ms": slow_at,
        })
    );
    Ok(())
}

async fn create_topic(settings: &KafkaSettings, topic: &str) -> anyhow::Result<()> {
    let admin = platform::kafka::admin(settings)?;
    let new = NewTopic::new(topic, 6, TopicReplication::Fixed(1)).set("message.timestamp.type", "LogAppendTime");
    for result in admin.create_topics(&[new], &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}
