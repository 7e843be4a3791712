//! An order's traces as waterfalls, for the page (decision 0029): its placement and, once
//! asked, its shipment, read from the trace collector's query API (Jaeger's `/api/traces`,
//! `ORDER__PEERS__TRACES`) and flattened into bars a page can draw: each span's service, name,
//! offset from the trace's start, duration and depth, parents before children.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use schema::OrderId;
use serde::Serialize;
use serde_json::Value;

use crate::auth::Customer;
use crate::console::Peers;
use crate::error::ApiError;
use crate::repository;
use crate::state::AppState;

/// At most this many traces of one order are drawn, and this many spans of each.
const MAX_TRACES: usize = 10;
const MAX_SPANS: usize = 2_000;

#[derive(Debug, Serialize, PartialEq)]
pub struct Waterfall {
    pub trace_id: String,
    /// The first span's start, microseconds since the Unix epoch.
    pub started_at_us: i64,
    pub duration_us: i64,
    /// In tree order: each span after its parent, siblings by start.
    pub spans: Vec<Bar>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Bar {
    pub span_id: String,
    /// `None` for the trace's root, or for a span whose parent never reached the collector.
    pub parent_id: Option<String>,
    pub service: String,
    pub name: String,
    pub offset_us: i64,
    pub duration_us: i64,
    pub depth: usize,
    pub error: bool,
}

/// `GET /orders/{id}/trace`: the caller's order's traces, newest first.
#[get("/{id}/trace")]
pub async fn order_trace(
    customer: Customer,
    id: web::Path<uuid::Uuid>,
    state: web::Data<AppState>,
    peers: web::Data<Peers>,
) -> Result<HttpResponse, ApiError> {
    {
        let mut conn = state.pool.get().await?;
        repository::find_for(&mut conn, OrderId(*id), customer.id()).await?.ok_or(ApiError::NotFound)?;
    }
    let Some(base) = &peers.settings.traces else {
        return Ok(platform::http::error_response(
            StatusCode::NOT_FOUND,
            "no_trace_collector",
            "this deployment collects no traces (ORDER__PEERS__TRACES names the collector's query API)",
        ));
    };
    let tags = serde_json::json!({ "order_id": id.to_string() }).to_string();
    let request = peers.http.get(format!("{base}/api/traces")).query(&[
        ("service", "order"),
        ("tags", tags.as_str()),
        ("lookback", "6h"),
        ("limit", &MAX_TRACES.to_string()),
    ]);
    let found = async { request.send().await?.error_for_status()?.json::<Value>().await };
    match found.await {
        Ok(body) => {
            let mut waterfalls: Vec<Waterfall> =
                body["data"].as_array().into_iter().flatten().take(MAX_TRACES).filter_map(waterfall).collect();
            waterfalls.sort_by_key(|w| std::cmp::Reverse(w.started_at_us));
            Ok(HttpResponse::Ok().json(serde_json::json!({ "traces": waterfalls })))
        }
        Err(_) => Ok(platform::http::error_response(
            StatusCode::BAD_GATEWAY,
            "trace_collector_unreachable",
            format!("the trace collector does not answer at {base}"),
        )),
    }
}

/// One trace of Jaeger's query API as bars.
pub fn waterfall(trace: &Value) -> Option<Waterfall> {
    let services: HashMap<&str, &str> = trace["processes"]
        .as_object()?
        .iter()
        .filter_map(|(id, process)| Some((id.as_str(), process["serviceName"].as_str()?)))
        .collect();
    let spans: Vec<&Value> = trace["spans"].as_array()?.iter().take(MAX_SPANS).collect();
    let start = spans.iter().filter_map(|s| s["startTime"].as_i64()).min()?;
    let end = spans.iter().filter_map(|s| Some(s["startTime"].as_i64()? + s["duration"].as_i64()?)).max()?;
    let ids: std::collections::HashSet<&str> = spans.iter().filter_map(|s| s["spanID"].as_str()).collect();
    let parent_of = |span: &Value| {
        span["references"].as_array().into_iter().flatten().find_map(|r| {
            let parent = r["spanID"].as_str()?;
            (r["refType"] == "CHILD_OF" && ids.contains(parent)).then(|| parent.to_owned())
        })
    };
    let mut children: HashMap<Option<String>, Vec<&Value>> = HashMap::new();
    for span in &spans {
        children.entry(parent_of(span)).or_default().push(span);
    }
    for siblings in children.values_mut() {
        siblings.sort_by_key(|s| s["startTime"].as_i64().unwrap_or_default());
    }
    let mut bars = Vec::with_capacity(spans.len());
    let mut stack: Vec<(Option<String>, &Value, usize)> =
        children.get(&None).into_iter().flatten().rev().map(|s| (None, *s, 0)).collect();
    while let Some((parent_id, span, depth)) = stack.pop() {
        let span_id = span["spanID"].as_str().unwrap_or_default().to_owned();
        let error = span["tags"].as_array().into_iter().flatten().any(|tag| {
            (tag["key"] == "error" && tag["value"] == true)
                || (tag["key"] == "otel.status_code" && tag["value"] == "ERROR")
        });
        for child in children.get(&Some(span_id.clone())).into_iter().flatten().rev() {
            stack.push((Some(span_id.clone()), child, depth + 1));
        }
        bars.push(Bar {
            parent_id,
            service: span["processID"].as_str().and_then(|p| services.get(p)).unwrap_or(&"?").to_string(),
            name: span["operationName"].as_str().unwrap_or_default().to_owned(),
            offset_us: span["startTime"].as_i64().unwrap_or(start) - start,
            duration_us: span["duration"].as_i64().unwrap_or_default(),
            depth,
            error,
            span_id,
        });
    }
    Some(Waterfall {
        trace_id: trace["traceID"].as_str().unwrap_or_default().to_owned(),
        started_at_us: start,
        duration_us: end - start,
        spans: bars,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn spans_come_in_tree_order_with_offsets_depths_and_services() {
        let trace = json!({
            "traceID": "t",
            "processes": { "p1": { "serviceName": "order" }, "p2": { "serviceName": "relay" } },
            "spans": [
                { "spanID": "c", "operationName": "relay.publish", "processID": "p2", "startTime": 1_500, "duration": 100,
                  "references": [{ "refType": "CHILD_OF", "spanID": "b" }],
                  "tags": [{ "key": "otel.status_code", "value": "ERROR" }] },
                { "spanID": "a", "operationName": "POST /orders", "processID": "p1", "startTime": 1_000, "duration": 900, "references": [] },
                { "spanID": "d", "operationName": "order.wait", "processID": "p1", "startTime": 1_300, "duration": 600,
                  "references": [{ "refType": "CHILD_OF", "spanID": "a" }] },
                { "spanID": "b", "operationName": "order.accept", "processID": "p1", "startTime": 1_100, "duration": 100,
                  "references": [{ "refType": "CHILD_OF", "spanID": "a" }] },
            ],
        });
        let drawn = waterfall(&trace).expect("a waterfall");
        let order: Vec<(&str, usize, i64, &str)> =
            drawn.spans.iter().map(|b| (b.name.as_str(), b.depth, b.offset_us, b.service.as_str())).collect();
        assert_eq!(
            order,
            [
                ("POST /orders", 0, 0, "order"),
                ("order.accept", 1, 100, "order"),
                ("relay.publish", 2, 500, "relay"),
                ("order.wait", 1, 300, "order"),
            ]
        );
        assert_eq!((drawn.started_at_us, drawn.duration_us), (1_000, 900));
        assert!(drawn.spans[2].error && !drawn.spans[0].error);
        assert_eq!(drawn.spans[1].parent_id.as_deref(), Some("a"));
    }

    #[test]
    fn a_span_whose_parent_is_missing_is_drawn_at_the_top() {
        let trace = json!({
            "traceID": "t", "processes": { "p1": { "serviceName": "inventory" } },
            "spans": [{ "spanID": "x", "operationName": "kafka", "processID": "p1", "startTime": 5, "duration": 1,
                        "references": [{ "refType": "CHILD_OF", "spanID": "gone" }] }],
        });
        let drawn = waterfall(&trace).expect("a waterfall");
        assert_eq!((drawn.spans[0].depth, drawn.spans[0].parent_id.clone()), (0, None));
    }
}
