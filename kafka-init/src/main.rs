//! Creates the topics the system needs, idempotently: a topic that already exists is left as
//! it is. Partitions and retention are explicit so that the local stack, compose and
//! production agree.

use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Partitions per topic: the most consumers of one group that can share the work.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    #[arg(long, env = "KAFKA_REPLICATION", default_value_t = 1)]
    replication: i32,
    /// How long events stay on a topic. Inbox rows must be kept longer than this.
    #[arg(long, env = "KAFKA_RETENTION_HOURS", default_value_t = 168)]
    retention_hours: u64,
    /// Topic names (default: orders.events and inventory.events). Each also gets its
    /// dead-letter topic, `<name>.dlq`.
    #[arg(long = "topic")]
    topics: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init();
    let args = Args::parse();
    let settings = platform::config::KafkaSettings { brokers: args.brokers.clone(), ..Default::default() };
    let shutdown = platform::shutdown::on_signal();
    if platform::kafka::wait_until_reachable(&settings, &shutdown).await.is_none() {
        bail!("interrupted before the broker answered");
    }
    let topics = if args.topics.is_empty() {
        vec![schema::topics::ORDERS.to_owned(), schema::topics::INVENTORY.to_owned()]
    } else {
        args.topics
    };
    let topics: Vec<String> =
        topics.into_iter().flat_map(|topic| [schema::topics::dead_letter(&topic), topic]).collect();
    let retention_ms = (args.retention_hours * 3_600_000).to_string();
    let admin = platform::kafka::admin(&settings)?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|name| {
            NewTopic::new(name, args.partitions, TopicReplication::Fixed(args.replication))
                .set("retention.ms", &retention_ms)
                .set("cleanup.policy", "delete")
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let mut failed = false;
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(name) => println!("created topic {name}"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => println!("topic {name} already exists"),
            Err((name, code)) => {
                eprintln!("cannot create topic {name}: {code}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("some topics could not be created");
    }
    Ok(())
}
