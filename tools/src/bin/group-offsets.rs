//! Moves a consumer group's committed offsets, while none of the group's members runs: to the
//! end of its topics (`--to-end`), the step of a restore that keeps the restored services from
//! applying what came after the moment they were restored to (docs/runbook.md, decision
//! 0016); or back to the first event at or after a time (`--to-time`), as a consumer that
//! crashed before committing would have left them.
//!
//! ```text
//! group-offsets --group inventory-service --topic orders.events --to-end
//! group-offsets --group inventory-service --topic orders.events --to-time 2026-12-05T10:00:00Z
//! ```
//!
//! Signs in as `KAFKA_USERNAME` with `KAFKA_PASSWORD`, like the other tools. The broker refuses
//! the commit while the group has live members: stop the services first.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use platform::config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Parser)]
#[command(version, about = "Move a consumer group's committed offsets to the end of its topics")]
struct Args {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    group: String,
    /// A topic the group reads (repeat for several).
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    /// To the end of each partition (the events up to it are skipped by the group).
    #[arg(long, required_unless_present = "to_time", conflicts_with = "to_time")]
    to_end: bool,
    /// To the first event stamped at or after this time (RFC 3339), or the end if none is.
    #[arg(long)]
    to_time: Option<chrono::DateTime<chrono::Utc>>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = KafkaSettings::for_tool(&args.brokers);
    let consumer: BaseConsumer = platform::kafka::client_config(&settings)
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the client")?;
    let mut ends = TopicPartitionList::new();
    for topic in &args.topics {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).with_context(|| format!("reading {topic}"))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else { bail!("no topic {topic}") };
        if let Some(error) = found.error() {
            bail!("{topic}: {:?}", rdkafka::types::RDKafkaErrorCode::from(error));
        }
        for partition in found.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition.id(), TIMEOUT)
                .with_context(|| format!("the end of {topic}/{}", partition.id()))?;
            let at = match args.to_time {
                None => high,
                Some(time) => {
                    let mut asked = TopicPartitionList::new();
                    asked.add_partition_offset(topic, partition.id(), Offset::Offset(time.timestamp_millis()))?;
                    let found =
                        consumer.offsets_for_times(asked, TIMEOUT).context("finding the offsets for the time")?;
                    match found.elements().first().map(|e| e.offset()) {
                        Some(Offset::Offset(offset)) => offset,
                        _ => high,
                    }
                }
            };
            ends.add_partition_offset(topic, partition.id(), Offset::Offset(at))?;
        }
    }
    let before = consumer.committed_offsets(ends.clone(), TIMEOUT).context("reading the committed offsets")?;
    consumer
        .commit(&ends, CommitMode::Sync)
        .with_context(|| format!("committing for group {} (is one of its members still running?)", args.group))?;
    for (was, now) in before.elements().iter().zip(ends.elements()) {
        println!("{} {}/{}: {:?} -> {:?}", args.group, now.topic(), now.partition(), was.offset(), now.offset());
    }
    Ok(())
}
