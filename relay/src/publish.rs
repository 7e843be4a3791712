//! Publishing outbox rows: read the oldest rows in id order, send them with the idempotent
//! producer, and delete exactly the rows that may go. Ids of one order follow commit order
//! (see `messaging::outbox`), so publishing in id order never reorders an order's events.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use messaging::outbox::OutboxRow;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schema::tables::messaging::outbox;

/// The oldest `limit` rows, in the order they must be published.
pub async fn fetch_batch(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<OutboxRow>> {
    outbox::table.order(outbox::id.asc()).limit(limit).select(OutboxRow::as_select()).load(conn).await
}

/// Publishes `rows` and waits for every acknowledgement. Returns the ids that may be
/// deleted (see [`deletable`]).
pub async fn publish(producer: &FutureProducer, rows: &[OutboxRow]) -> Vec<i64> {
    let deliveries = rows.iter().map(|row| {
        let payload = row.envelope.to_string();
        let record = FutureRecord::to(&row.topic).key(&row.message_key).payload(&payload).headers(headers(row));
        let sent = producer.send_result(record).map_err(|(error, _)| error);
        async move {
            match sent {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(error),
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(error) => Err(error),
            }
        }
    });
    let results = futures::future::join_all(deliveries).await;
    for (row, result) in rows.iter().zip(&results) {
        if let Err(error) = result {
            tracing::warn!(event_id = %row.event_id, topic = %row.topic, %error, "event not acknowledged");
        }
    }
    let acknowledged: Vec<bool> = results.iter().map(Result::is_ok).collect();
    deletable(rows, &acknowledged)
}

/// The rows that may be deleted after a publication: every acknowledged row, except, for an
/// order with an unacknowledged row, the rows after its first failure. Those are published
/// again after it, so the order's events still arrive in order.
pub fn deletable(rows: &[OutboxRow], acknowledged: &[bool]) -> Vec<i64> {
    let mut first_failure: HashMap<&str, i64> = HashMap::new();
    for (row, _) in rows.iter().zip(acknowledged).filter(|(_, ok)| !**ok) {
        first_failure.entry(row.message_key.as_str()).or_insert(row.id);
    }
    rows.iter()
        .zip(acknowledged)
        .filter(|(row, ok)| **ok && first_failure.get(row.message_key.as_str()).is_none_or(|&failed| row.id < failed))
        .map(|(row, _)| row.id)
        .collect()
}

/// Deletes exactly the given rows.
pub async fn delete(conn: &mut AsyncPgConnection, ids: &[i64]) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::delete(outbox::table.filter(outbox::id.eq_any(ids))).execute(conn).await
}

/// `event_id`, `event_type`, `correlation_id` and `traceparent` travel as headers too, so a
/// message can be routed and traced without parsing its body.
fn headers(row: &OutboxRow) -> OwnedHeaders {
    let event_id = row.event_id.to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header { key: "event_id", value: Some(event_id.as_str()) })
        .insert(Header { key: "event_type", value: Some(row.event_type.as_str()) })
        .insert(Header { key: "correlation_id", value: Some(row.correlation_id.as_str()) });
    if let Some(traceparent) = &row.traceparent {
        headers = headers.insert(Header { key: "traceparent", value: Some(traceparent.as_str()) });
    }
    headers
}

#[cfg(test)]
mod tests {
    use messaging::outbox::OutboxRow;

    use super::deletable;

    fn row(id: i64, order: &str) -> OutboxRow {
        OutboxRow {
            id,
            event_id: uuid::Uuid::now_v7(),
            topic: "orders.events".into(),
            message_key: order.into(),
            event_type: "OrderPlaced".into(),
            correlation_id: "c".into(),
            traceparent: None,
            envelope: serde_json::json!({}),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn every_acknowledged_row_goes_when_nothing_failed() {
        let rows = [row(1, "a"), row(2, "b"), row(3, "a")];
        assert_eq!(deletable(&rows, &[true, true, true]), [1, 2, 3]);
    }

    #[test]
    fn an_orders_rows_after_its_first_failure_stay_even_if_acknowledged() {
        let rows = [row(1, "a"), row(2, "a"), row(3, "b"), row(4, "a"), row(5, "b")];
        // Order a: 1 acknowledged, 2 failed, 4 acknowledged → only 1 goes; order b untouched.
        assert_eq!(deletable(&rows, &[true, false, true, true, true]), [1, 3, 5]);
    }

    #[test]
    fn a_failed_row_is_never_deleted() {
        let rows = [row(1, "a"), row(2, "b")];
        assert_eq!(deletable(&rows, &[false, false]), Vec::<i64>::new());
    }
}
