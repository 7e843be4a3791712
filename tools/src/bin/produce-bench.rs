//! The broker's own produce ceiling, for comparison with the relay's drain rate: sends N
//! messages of a given size with the producer settings the relay uses (`platform::kafka::
//! producer` from the same `KafkaSettings`), all in flight at once, and prints messages/s.
//! `--headers` adds the four headers the relay sets on every event, so that the messages are
//! the relay's in size and shape.
//!
//! ```text
//! produce-bench --brokers 127.0.0.1:9092 --topic bench.ceiling --count 100000 --size 600
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt as _;
use platform::config::KafkaSettings;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[derive(Parser)]
#[command(about = "Measure how fast the broker takes messages from one producer")]
struct Args {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Bytes per message (a typical OrderPlaced envelope is about 600).
    #[arg(long, default_value_t = 600)]
    size: usize,
    /// Messages awaited at once (the relay sends batches of 500 and awaits each batch).
    #[arg(long, default_value_t = 10_000)]
    in_flight: usize,
    /// Send the headers the relay sends with every event (event_id, event_type,
    /// correlation_id, traceparent).
    #[arg(long)]
    headers: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = KafkaSettings::for_tool(&args.brokers);
    let producer = platform::kafka::producer(&settings)?;
    let payload = "x".repeat(args.size);
    let started = Instant::now();
    let (producer, payload, topic) = (&producer, payload.as_str(), args.topic.as_str());
    let with_headers = args.headers;
    let sends = futures::stream::iter(0..args.count).map(|n| async move {
        let key = format!("order-{}", n % 100_000);
        let mut record = FutureRecord::to(topic).key(&key).payload(payload);
        if with_headers {
            // As long as the relay's (a UUID), one per message.
            let event_id = format!("{n:08x}-0000-7000-8000-{n:012x}");
            record = record.headers(
                OwnedHeaders::new()
                    .insert(Header { key: "event_id", value: Some(event_id.as_str()) })
                    .insert(Header { key: "event_type", value: Some("OrderPlaced") })
                    .insert(Header { key: "correlation_id", value: Some("bench") })
                    .insert(Header { key: "traceparent", value: Some(TRACEPARENT) }),
            );
        }
        producer.send(record, Duration::from_secs(30)).await
    });
    let results: Vec<_> = sends.buffer_unordered(args.in_flight).collect().await;
    let elapsed = started.elapsed().as_secs_f64();
    let failed = results.iter().filter(|r| r.is_err()).count();
    println!(
        "{{\"messages\": {}, \"failed\": {failed}, \"seconds\": {elapsed:.3}, \"per_second\": {:.0}}}",
        args.count,
        (args.count - failed) as f64 / elapsed
    );
    Ok(())
}
