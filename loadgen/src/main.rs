//! The load generator.
//!
//! One room, over 300 lines: the client's one loop (place, retry, follow, ship) and its
//! command line; the report and the statistics are apart (`report`, `stats`).
//!
//! Open loop (`--rate`: orders per second, whatever the replies do) or closed loop
//! (`--concurrency`: that many clients, each waiting for its reply), for a `--duration` or a
//! `--count`. Every order has a fresh Idempotency-Key and is retried with
//! the same key on transport errors and 5xx (bounded, with backoff), as a careful client
//! would. Afterwards each order is followed with GET until it is final; its accepted → final
//! time comes from the order's own status history (server clocks, no polling error).
//! Orders are spread over `--customers` customers, each with a token minted with
//! `--signing-key` (the local stack's is `.local/auth/signing.pem`).
//!
//! With `--ship-share S`, a fulfilment operator ships that share of the orders once they are
//! confirmed (the same order numbers every run), with its own key and the same retries, and
//! such an order is final once SHIPPED.

mod report;
mod stats;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use serde_json::{Value, json};

use crate::report::{render, summarise, write_csv};
use crate::stats::Summary;

#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// The order service; by default the local stack's (system.toml).
    #[arg(long, default_value_t = platform::system::process("order").local_url())]
    url: String,
    /// Open loop: orders per second.
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Closed loop: concurrent clients.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Stop after this many seconds...
    #[arg(long)]
    duration: Option<f64>,
    /// ...or after this many orders.
    #[arg(long)]
    count: Option<usize>,
    #[arg(long, value_delimiter = ',', default_value = "KEYBOARD-01,MOUSE-01,MUG-01,LAMP-01,CABLE-01")]
    skus: Vec<String>,
    #[arg(long, default_value_t = 1)]
    max_quantity: i64,
    /// Distinct customer ids to spread orders over (the service rate-limits per customer).
    #[arg(long, default_value_t = 1000)]
    customers: usize,
    /// The private key that signs the customers' tokens (PEM, Ed25519).
    #[arg(long, env = "ORDER_SYSTEM_SIGNING_KEY")]
    signing_key: PathBuf,
    #[arg(long, default_value = platform::auth::DEFAULT_ISSUER)]
    issuer: String,
    #[arg(long, default_value = platform::auth::DEFAULT_AUDIENCE)]
    audience: String,
    /// `Prefer: wait=N` on every POST; omit to use the service's budget.
    #[arg(long)]
    wait: Option<f64>,
    /// Attempts per order on transport errors and 5xx.
    #[arg(long, default_value_t = 8)]
    attempts: u32,
    /// Follow every order until it is final (at most this many seconds after the run).
    #[arg(long, default_value_t = 120.0)]
    follow_secs: f64,
    /// Write one CSV row per order here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the summary as JSON here.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Seconds between progress lines (0: none).
    #[arg(long, default_value_t = 5.0)]
    progress: f64,
    /// Share of the orders (0 to 1) a fulfilment operator ships once they are confirmed.
    #[arg(long, default_value_t = 0.0)]
    ship_share: f64,
}

/// What happened to one order.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Record {
    /// Which customer placed it (an index into the tokens).
    #[serde(skip)]
    customer: usize,
    key: String,
    sku: String,
    quantity: i64,
    order_id: String,
    reply_status: u16,
    reply_ms: f64,
    /// When the first attempt was sent, in seconds since the Unix epoch: a drill lines the
    /// replies up with the faults it made.
    sent_at: f64,
    attempts: u32,
    final_status: String,
    accepted_to_final_ms: Option<f64>,
    /// The answer to the ship request (0: none sent, or no answer).
    ship_status: u16,
    /// The ship request was accepted: the order is final once SHIPPED.
    shipping: bool,
    error: String,
}

impl Record {
    /// Nothing more will happen to the order that this run waits for.
    fn is_final(&self) -> bool {
        match self.final_status.as_str() {
            "REJECTED" | "CANCELLED" | "SHIPPED" => true,
            "CONFIRMED" => !self.shipping,
            _ => false,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    anyhow::ensure!(args.duration.is_some() || args.count.is_some(), "give --duration or --count");
    anyhow::ensure!(!args.skus.is_empty(), "give at least one sku");
    anyhow::ensure!((0.0..=1.0).contains(&args.ship_share), "--ship-share is a share: 0 to 1");
    args.customers = args.customers.max(1);
    let tokens = Tokens::mint(&args)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(256).build()?;
    let records = Arc::new(Mutex::new(Vec::<Record>::new()));
    let started = Instant::now();
    stop_on_signal();

    let progress = spawn_progress(Arc::clone(&records), started, args.progress);
    match (args.rate, args.concurrency) {
        (Some(rate), _) => open_loop(&args, &http, &tokens, &records, rate).await,
        (None, concurrency) => closed_loop(&args, &http, &tokens, &records, concurrency.unwrap_or(8)).await,
    }
    let elapsed = started.elapsed();
    progress.abort();

    let mut records = std::mem::take(&mut *records.lock().unwrap_or_else(PoisonError::into_inner));
    follow(&args, &http, &tokens, &mut records).await;
    let summary = summarise(&records, elapsed);
    println!("{}", render(&summary));
    if let Some(path) = &args.csv {
        write_csv(path, &records)?;
    }
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}

/// One token per customer, minted once: customer `i` is `load-i`; and the fulfilment
/// operator's, `load-packer`.
#[derive(Clone)]
struct Tokens {
    customers: Arc<Vec<String>>,
    operator: Arc<String>,
}

impl Tokens {
    fn mint(args: &Args) -> anyhow::Result<Self> {
        let signer = platform::auth::Signer::from_file(&args.signing_key, &args.issuer, &args.audience)?;
        // Valid for the whole run and its follow-up, however long.
        let ttl = Duration::from_secs(7 * 24 * 3600);
        let customers = (0..args.customers).map(|i| signer.mint(&format!("load-{i}"), ttl)).collect();
        let operator = signer.mint_with_scope("load-packer", Some(platform::auth::SHIP_SCOPE), ttl);
        Ok(Self { customers: Arc::new(customers), operator: Arc::new(operator) })
    }

    fn of(&self, customer: usize) -> &str {
        &self.customers[customer % self.customers.len()]
    }
}

/// Whether order number `n` is one the operator ships: a fixed, well-spread share.
fn ships(n: usize, share: f64) -> bool {
    // Knuth's multiplicative hash spreads consecutive numbers over [0, 1).
    let spread = (n as u64).wrapping_mul(2_654_435_761) % 1_000_000;
    (spread as f64) < share * 1_000_000.0
}

/// Set by SIGTERM or SIGINT: stop placing orders, follow up and report as usual.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn done(args: &Args, started: Instant, placed: usize) -> bool {
    STOP.load(std::sync::atomic::Ordering::Relaxed)
        || args.count.is_some_and(|c| placed >= c)
        || args.duration.is_some_and(|d| started.elapsed().as_secs_f64() >= d)
}

fn stop_on_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        if let Ok(mut stream) = signal(kind) {
            tokio::spawn(async move {
                stream.recv().await;
                eprintln!("stopping: no new orders; following up on the ones placed");
                STOP.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        }
    }
}

async fn open_loop(args: &Args, http: &reqwest::Client, tokens: &Tokens, records: &Arc<Mutex<Vec<Record>>>, rate: f64) {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut placed = 0;
    while !done(args, started, placed) {
        ticker.tick().await;
        let (args, http, tokens, records) = (args.clone(), http.clone(), tokens.clone(), Arc::clone(records));
        tasks.spawn(async move {
            let mut record = place(&args, &http, &tokens, placed).await;
            if ships(placed, args.ship_share) {
                ship_once_confirmed(&args, &http, &tokens, &mut record).await;
            }
            records.lock().unwrap_or_else(PoisonError::into_inner).push(record);
        });
        placed += 1;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn closed_loop(
    args: &Args,
    http: &reqwest::Client,
    tokens: &Tokens,
    records: &Arc<Mutex<Vec<Record>>>,
    concurrency: usize,
) {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..concurrency).map(|_| {
        let (args, http, tokens, records, next) =
            (args.clone(), http.clone(), tokens.clone(), Arc::clone(records), Arc::clone(&next));
        tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if done(&args, started, n) {
                    break;
                }
                let mut record = place(&args, &http, &tokens, n).await;
                if ships(n, args.ship_share) {
                    ship_once_confirmed(&args, &http, &tokens, &mut record).await;
                }
                records.lock().unwrap_or_else(PoisonError::into_inner).push(record);
            }
        })
    });
    futures::future::join_all(workers).await;
}

/// Places order number `n`, retrying with the same key on transport errors and 5xx.
async fn place(args: &Args, http: &reqwest::Client, tokens: &Tokens, n: usize) -> Record {
    let sku = args.skus[n % args.skus.len()].clone();
    let quantity = 1 + (n as i64 % args.max_quantity.max(1));
    let key = uuid::Uuid::new_v4().to_string();
    let customer = n % args.customers;
    let body = json!({"lines": [{"sku": sku, "quantity": quantity}]});
    let mut record = Record { customer, key: key.clone(), sku, quantity, ..Record::default() };
    let started = Instant::now();
    record.sent_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |since| since.as_secs_f64());
    let sent = send_with_retries(args.attempts, || {
        let request = http
            .post(format!("{}/orders", args.url))
            .bearer_auth(tokens.of(customer))
            .header("Idempotency-Key", &key)
            .json(&body);
        match args.wait {
            Some(wait) => request.header("Prefer", format!("wait={wait}")),
            None => request,
        }
    })
    .await;
    record.attempts = sent.attempts;
    record.reply_status = sent.status;
    record.error = sent.error.unwrap_or_default();
    if let Some(reply) = sent.reply {
        record.order_id = reply["id"].as_str().unwrap_or_default().to_owned();
        record.final_status = reply["status"].as_str().unwrap_or_default().to_owned();
        if record.reply_status >= 400 {
            record.error = reply["message"].as_str().unwrap_or_default().to_owned();
        }
    }
    record.reply_ms = started.elapsed().as_secs_f64() * 1e3;
    record
}

/// What sending one request, with retries, came to.
struct Sent {
    /// How many times it was sent.
    attempts: u32,
    /// The status of the last answer (0: none came).
    status: u16,
    /// The body of the answer that ended the retries; `None` if the last attempt failed in
    /// transport.
    reply: Option<Value>,
    /// The last transport error, if any.
    error: Option<String>,
}

/// Sends what `request` builds until the answer is neither a 5xx nor a 429, at most `attempts`
/// times, waiting 50 ms (doubling, at most 2 s) in between: a careful client's retry, the same
/// request with the same Idempotency-Key.
async fn send_with_retries(attempts: u32, request: impl Fn() -> reqwest::RequestBuilder) -> Sent {
    let mut sent = Sent { attempts: 0, status: 0, reply: None, error: None };
    let mut backoff = Duration::from_millis(50);
    for attempt in 1..=attempts {
        sent.attempts = attempt;
        match request().send().await {
            Ok(response) => {
                sent.status = response.status().as_u16();
                let retry = response.status().is_server_error() || response.status() == 429;
                let reply: Value = response.json().await.unwrap_or(Value::Null);
                if !retry || attempt == attempts {
                    sent.reply = Some(reply);
                    return sent;
                }
            }
            Err(error) => sent.error = Some(error.to_string()),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    sent
}

/// As the fulfilment operator: waits (long-polling, at most 30 s) for the order to be
/// decided, and ships it if it was confirmed, retrying with the same key on transport errors
/// and 5xx. Sent with `Prefer: wait=0`: the follow-up sees it shipped.
async fn ship_once_confirmed(args: &Args, http: &reqwest::Client, tokens: &Tokens, record: &mut Record) {
    if record.order_id.is_empty() {
        return;
    }
    let url = format!("{}/orders/{}", args.url, record.order_id);
    for _ in 0..3 {
        if record.final_status != "PENDING" {
            break;
        }
        let read = http.get(&url).bearer_auth(tokens.of(record.customer)).header("Prefer", "wait=10");
        match read.send().await {
            Ok(response) => {
                if let Ok(order) = response.json::<Value>().await {
                    record.final_status = order["status"].as_str().unwrap_or_default().to_owned();
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    if record.final_status != "CONFIRMED" {
        return;
    }
    let key = format!("ship-{}", record.key);
    let sent = send_with_retries(args.attempts, || {
        http.post(format!("{url}/ship"))
            .bearer_auth(tokens.operator.as_str())
            .header("Idempotency-Key", &key)
            .header("Prefer", "wait=0")
    })
    .await;
    record.ship_status = sent.status;
    if let Some(error) = sent.error {
        record.error = format!("ship: {error}");
    }
    if let Some(reply) = sent.reply {
        record.shipping = (200..300).contains(&sent.status);
        if !record.shipping {
            record.error = format!("ship: {}", reply["message"].as_str().unwrap_or_default());
        }
    }
}

/// Reads every accepted order until it is final, and takes accepted → final from its history.
async fn follow(args: &Args, http: &reqwest::Client, tokens: &Tokens, records: &mut [Record]) {
    let deadline = Instant::now() + Duration::from_secs_f64(args.follow_secs);
    let lookups = records.iter_mut().filter(|r| !r.order_id.is_empty()).map(|record| async move {
        let mut pause = Duration::from_millis(50);
        loop {
            let read =
                http.get(format!("{}/orders/{}", args.url, record.order_id)).bearer_auth(tokens.of(record.customer));
            if let Ok(response) = read.send().await
                && let Ok(order) = response.json::<Value>().await
            {
                record.final_status = order["status"].as_str().unwrap_or_default().to_owned();
                if record.is_final() {
                    record.accepted_to_final_ms = accepted_to_final(&order);
                    return;
                }
            }
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    });
    futures::stream::iter(lookups).buffer_unordered(64).collect::<Vec<()>>().await;
}

use futures::StreamExt as _;

/// Milliseconds from the first history entry (accepted) to the order's outcome: its first
/// entry past PENDING and CANCELLING (a shipment is the operator's doing, not the system's
/// latency).
fn accepted_to_final(order: &Value) -> Option<f64> {
    let history = order["history"].as_array()?;
    let at = |entry: &Value| entry["at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let decided = history.iter().find(|entry| !matches!(entry["status"].as_str(), Some("PENDING" | "CANCELLING")))?;
    let (first, last) = (at(history.first()?)?, at(decided)?);
    Some((last - first).num_microseconds()? as f64 / 1e3)
}

fn spawn_progress(records: Arc<Mutex<Vec<Record>>>, started: Instant, every: f64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if every <= 0.0 {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_secs_f64(every)).await;
            let records = records.lock().unwrap_or_else(PoisonError::into_inner);
            let replies: Vec<Duration> = records.iter().map(|r| Duration::from_secs_f64(r.reply_ms / 1e3)).collect();
            let errors = records.iter().filter(|r| r.reply_status == 0 || r.reply_status >= 500).count();
            let s = Summary::of(&replies);
            eprintln!(
                "[{:>5.1}s] {} orders ({:.1}/s), {} errors, reply p50 {:.1} ms p99 {:.1} ms",
                started.elapsed().as_secs_f64(),
                records.len(),
                records.len() as f64 / started.elapsed().as_secs_f64(),
                errors,
                s.p50_ms,
                s.p99_ms
            );
        }
    })
}
