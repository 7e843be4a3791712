//! Lists and redrives dead letters.
//!
//! ```text
//! dlq list orders.events                      # what is on orders.events.dlq, and why
//! dlq redrive orders.events --all             # publish every dead letter back
//! dlq redrive orders.events --at 2/17 --payload-file fixed.json
//! ```
//!
//! Redriving publishes the event to its original topic with its original key and headers,
//! so the consumer handles it like any other event; the inbox applies an event id once, so a
//! redrive repeated by mistake changes nothing.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use messaging::dead_letter::{self, DeadLetter};
use platform::config::KafkaSettings;

#[derive(Parser)]
#[command(version, about = "List and redrive dead-lettered events")]
struct Args {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092", global = true)]
    brokers: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Shows the dead letters of a topic: where each is, where it came from, and why.
    List {
        /// The original topic (e.g. orders.events) or its dead-letter topic.
        topic: String,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publishes dead letters back to their original topic.
    Redrive {
        topic: String,
        /// Every dead letter on the topic.
        #[arg(long, conflicts_with = "at")]
        all: bool,
        /// One dead letter, as PARTITION/OFFSET on the dead-letter topic (from `list`).
        #[arg(long, value_name = "PARTITION/OFFSET")]
        at: Vec<String>,
        /// Publish this file's content instead of the stored payload (a fixed event; keep
        /// its event_id so the inbox still recognises it). Only with a single --at.
        #[arg(long)]
        payload_file: Option<std::path::PathBuf>,
    },
}

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dlq: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let settings = KafkaSettings::for_tool(&args.brokers);
    match args.command {
        Command::List { topic, json } => {
            let letters = read(&settings, &topic).await?;
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter)?);
                }
            } else {
                print_table(&dlq_topic(&topic), &letters);
            }
        }
        Command::Redrive { topic, all, at, payload_file } => {
            if !all && at.is_empty() {
                bail!("say which dead letters to redrive: --all, or --at PARTITION/OFFSET (see `dlq list {topic}`)");
            }
            if payload_file.is_some() && (all || at.len() != 1) {
                bail!("--payload-file replaces one event's payload: use it with exactly one --at");
            }
            let payload = match &payload_file {
                Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
                None => None,
            };
            if let Some(payload) = &payload {
                schema::RawEnvelope::from_slice(payload)
                    .context("the payload file is not a readable event envelope")?;
            }
            let wanted: Vec<(i32, i64)> = at.iter().map(|p| parse_position(p)).collect::<anyhow::Result<_>>()?;
            let letters = read(&settings, &topic).await?;
            let chosen: Vec<&DeadLetter> = if all {
                letters.iter().collect()
            } else {
                wanted.iter().map(|&position| find(&letters, position)).collect::<anyhow::Result<_>>()?
            };
            let producer = platform::kafka::producer(&settings).context("creating a producer")?;
            for letter in chosen {
                let (partition, offset) = dead_letter::redrive(&producer, letter, payload.as_deref(), TIMEOUT)
                    .await
                    .with_context(|| format!("redriving {}", letter.position()))?;
                println!(
                    "redrove {} ({}) to {}/{partition}/{offset}",
                    letter.position(),
                    letter.event_id.as_deref().unwrap_or("unreadable event"),
                    letter.original_topic
                );
            }
        }
    }
    Ok(())
}

fn dlq_topic(topic: &str) -> String {
    if topic.ends_with(dead_letter::SUFFIX) { topic.to_owned() } else { dead_letter::topic_for(topic) }
}

async fn read(settings: &KafkaSettings, topic: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let topic = dlq_topic(topic);
    let settings = settings.clone();
    let reading = topic.clone();
    match tokio::task::spawn_blocking(move || dead_letter::read_all(&settings, &reading, TIMEOUT)).await? {
        Err(rdkafka::error::KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {
            bail!("there is no topic {topic} on the broker (kafka-init creates one per topic)")
        }
        result => result.with_context(|| format!("reading {topic}")),
    }
}

fn parse_position(position: &str) -> anyhow::Result<(i32, i64)> {
    position
        .split_once('/')
        .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)))
        .with_context(|| format!("{position:?} is not PARTITION/OFFSET, e.g. 2/17"))
}

fn find(letters: &[DeadLetter], (partition, offset): (i32, i64)) -> anyhow::Result<&DeadLetter> {
    letters
        .iter()
        .find(|l| l.dlq_partition == partition && l.dlq_offset == offset)
        .with_context(|| format!("no dead letter at partition {partition}, offset {offset}"))
}

fn print_table(topic: &str, letters: &[DeadLetter]) {
    if letters.is_empty() {
        println!("{topic}: no dead letters");
        return;
    }
    println!("{topic}: {} dead letter(s)", letters.len());
    println!("{:<10} {:<25} {:<16} {:<36} {:<24} error", "at", "failed at", "type", "event id", "came from");
    for letter in letters {
        let from = format!(
            "{}/{}/{}",
            letter.original_topic,
            letter.original_partition.map_or("?".to_owned(), |p| p.to_string()),
            letter.original_offset.map_or("?".to_owned(), |o| o.to_string())
        );
        println!(
            "{:<10} {:<25} {:<16} {:<36} {:<24} {}",
            format!("{}/{}", letter.dlq_partition, letter.dlq_offset),
            letter.failed_at.get(..19).unwrap_or(&letter.failed_at),
            letter.event_type.as_deref().unwrap_or("-"),
            letter.event_id.as_deref().unwrap_or("-"),
            from,
            letter.error
        );
    }
}
