//! What a run reports: the summary (printed, and written as JSON for scripts) and the
//! per-order CSV of every order and what happened to it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::Record;
use crate::stats::Summary;

#[derive(Debug, Serialize)]
pub struct RunSummary {
    requests: usize,
    seconds: f64,
    rps: f64,
    by_reply_status: std::collections::BTreeMap<String, usize>,
    by_final_status: std::collections::BTreeMap<String, usize>,
    /// Answers to the fulfilment operator's ship requests, by status code.
    by_ship_status: std::collections::BTreeMap<String, usize>,
    transport_errors: usize,
    retried: usize,
    reply: Summary,
    accepted_to_final: Summary,
}

pub fn summarise(records: &[Record], elapsed: Duration) -> RunSummary {
    let mut by_reply_status = std::collections::BTreeMap::new();
    let mut by_final_status = std::collections::BTreeMap::new();
    let mut by_ship_status = std::collections::BTreeMap::new();
    for r in records {
        if r.ship_status != 0 {
            *by_ship_status.entry(r.ship_status.to_string()).or_insert(0) += 1;
        }
        let status = if r.reply_status == 0 { "error".to_owned() } else { r.reply_status.to_string() };
        *by_reply_status.entry(status).or_insert(0) += 1;
        let final_status = if r.final_status.is_empty() { "none".to_owned() } else { r.final_status.clone() };
        *by_final_status.entry(final_status).or_insert(0) += 1;
    }
    let replies: Vec<Duration> = records.iter().map(|r| Duration::from_secs_f64(r.reply_ms / 1e3)).collect();
    let finals: Vec<Duration> = records
        .iter()
        .filter_map(|r| r.accepted_to_final_ms)
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1e3))
        .collect();
    RunSummary {
        requests: records.len(),
        seconds: elapsed.as_secs_f64(),
        rps: records.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        by_reply_status,
        by_final_status,
        by_ship_status,
        transport_errors: records.iter().filter(|r| r.reply_status == 0).count(),
        retried: records.iter().filter(|r| r.attempts > 1).count(),
        reply: Summary::of(&replies),
        accepted_to_final: Summary::of(&finals),
    }
}

pub fn render(s: &RunSummary) -> String {
    format!(
        "requests {} in {:.1} s ({:.1}/s); replies {:?}; final {:?}; ship replies {:?}; transport errors {}; retried {}\n\
         reply:              {}\naccepted -> final:  {}",
        s.requests,
        s.seconds,
        s.rps,
        s.by_reply_status,
        s.by_final_status,
        s.by_ship_status,
        s.transport_errors,
        s.retried,
        s.reply,
        s.accepted_to_final
    )
}

pub fn write_csv(path: &PathBuf, records: &[Record]) -> anyhow::Result<()> {
    let mut out = String::from(
        "order_id,key,sku,quantity,reply_status,reply_ms,attempts,final_status,accepted_to_final_ms,ship_status,error,sent_at\n",
    );
    for r in records {
        let error = r.error.replace(['"', '\n'], "'");
        out.push_str(&format!(
            "{},{},{},{},{},{:.3},{},{},{},{},\"{}\",{:.3}\n",
            r.order_id,
            r.key,
            r.sku,
            r.quantity,
            r.reply_status,
            r.reply_ms,
            r.attempts,
            r.final_status,
            r.accepted_to_final_ms.map(|ms| format!("{ms:.3}")).unwrap_or_default(),
            r.ship_status,
            error,
            r.sent_at
        ));
    }
    std::fs::write(path, out)?;
    Ok(())
}
