//! Creates the topics the system needs, idempotently: a topic that already exists is left as
//! it is. Partitions and retention are explicit so that the local stack, compose and
//! production agree. With `--acls`, also grants each service's principal what it needs on
//! them (`acl`), as the broker's super user.

mod acl;

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
    /// Also grant the services' principals (relay, order, inventory, notifications, dlq)
    /// what each needs on the topics and groups named below, and nothing else.
    #[arg(long)]
    acls: bool,
    #[arg(long, default_value = schema::topics::ORDERS)]
    orders_topic: String,
    #[arg(long, default_value = schema::topics::INVENTORY)]
    inventory_topic: String,
    #[arg(long, default_value = "order-service")]
    order_group: String,
    #[arg(long, default_value = "inventory-service")]
    inventory_group: String,
    #[arg(long, default_value = "notifications-service")]
    notifications_group: String,
    /// Partitions per topic: the most consumers of one group that can share the work.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    /// Copies of each partition, on as many brokers (waited for).
    #[arg(long, env = "KAFKA_REPLICATION", default_value_t = 1)]
    replication: i32,
    /// Copies that must have a write before it is acknowledged to a producer with acks=all
    /// (default: one fewer than the replicas, at least one; 2 of 3 survives one broker down).
    #[arg(long, env = "KAFKA_MIN_INSYNC_REPLICAS")]
    min_insync_replicas: Option<i32>,
    /// How long events stay on a topic. Inbox rows must be kept longer than this.
    #[arg(long, env = "KAFKA_RETENTION_HOURS", default_value_t = 168)]
    retention_hours: u64,
    /// Topic names (default: the orders and inventory topics above). Each also gets its
    /// dead-letter topic, `<name>.dlq`.
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Print the topics and their settings as JSON and exit, without a broker: what the
    /// deployment checks compare `deploy/`'s KafkaTopics with.
    #[arg(long)]
    describe: bool,
}

impl Args {
    /// Every topic to create: the named ones (or the orders and inventory topics), each with
    /// its dead-letter topic.
    fn all_topics(&self) -> Vec<String> {
        let named = if self.topics.is_empty() {
            vec![self.orders_topic.clone(), self.inventory_topic.clone()]
        } else {
            self.topics.clone()
        };
        named.into_iter().flat_map(|topic| [schema::topics::dead_letter(&topic), topic]).collect()
    }

    fn retention_ms(&self) -> u64 {
        self.retention_hours * 3_600_000
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.describe {
        let description = serde_json::json!({
            "topics": args.all_topics(),
            "partitions": args.partitions,
            "retention_ms": args.retention_ms(),
        });
        println!("{description}");
        return Ok(());
    }
    platform::telemetry::init("kafka-init").map_err(anyhow::Error::msg)?;
    // Signed in as KAFKA_USERNAME / KAFKA_PASSWORD: a super user's, for `--acls`.
    let settings = platform::config::KafkaSettings::for_tool(&args.brokers);
    let shutdown = platform::shutdown::on_signal();
    if platform::kafka::wait_until_reachable(&settings, &shutdown).await.is_none() {
        bail!("interrupted before the broker answered");
    }
    if wait_for_brokers(&settings, args.replication, &shutdown).await.is_none() {
        bail!("interrupted before {} brokers had joined the cluster", args.replication);
    }
    let min_insync = args.min_insync_replicas.unwrap_or((args.replication - 1).max(1)).to_string();
    let topics = args.all_topics();
    let retention_ms = args.retention_ms().to_string();
    let admin = platform::kafka::admin(&settings)?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|name| {
            NewTopic::new(name, args.partitions, TopicReplication::Fixed(args.replication))
                .set("retention.ms", &retention_ms)
                .set("cleanup.policy", "delete")
                .set("min.insync.replicas", &min_insync)
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
    if args.acls {
        let names = acl::Names {
            orders: args.orders_topic,
            inventory: args.inventory_topic,
            order_group: args.order_group,
            inventory_group: args.inventory_group,
            notifications_group: args.notifications_group,
        };
        let grants = acl::grants(&names);
        let count = grants.len();
        tokio::task::spawn_blocking(move || acl::create(&admin, &grants, Duration::from_secs(30))).await??;
        println!("granted {count} ACLs to the services' principals");
    }
    Ok(())
}

/// Waits until the cluster has at least `count` brokers: a topic with that many replicas
/// cannot be created before (nodes of a cluster that was just started join one by one).
async fn wait_for_brokers(
    settings: &platform::config::KafkaSettings,
    count: i32,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<()> {
    let probe = platform::kafka::BrokerProbe::new(settings, None).ok()?;
    platform::retry::until_ready("the cluster's brokers", shutdown, || async {
        let brokers = probe.brokers(Duration::from_secs(2)).await?;
        if brokers as i32 >= count { Ok(()) } else { Err(format!("{brokers} of {count} brokers have joined")) }
    })
    .await
}
