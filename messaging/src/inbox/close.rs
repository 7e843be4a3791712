//! How a consumer stops: its final offset commit, its leave from the group (decision 0027) and
//! the close of its client, none of which may keep the process from exiting.

use std::sync::Arc;
use std::time::Duration;

use platform::kafka::GroupConsumer;
use rdkafka::consumer::{CommitMode, Consumer as _};
use tokio::sync::oneshot;

/// How long a stopping consumer waits for its final commit, its leave and its close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Commits the stored offsets and, if `leave`, hands the partitions back to the group (see
/// [`leave_group`]), then closes the client. All of it waits for the broker, and a broker that
/// accepts connections but does not answer (a hung node) would keep the process from ever
/// exiting: the blocking calls run on a plain thread, and the whole is given a few seconds.
pub(super) async fn close(consumer: Arc<GroupConsumer>, leave: bool) {
    let closing = async move {
        let committing = Arc::clone(&consumer);
        on_a_thread(move || {
            if let Err(error) = committing.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored since the last commit, or the broker is gone: the events
                // will be redelivered and recognised as duplicates.
                tracing::info!(%error, "final offset commit did not happen");
            }
        })
        .await;
        if leave {
            leave_group(&consumer).await;
        }
        on_a_thread(move || drop(consumer)).await;
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::warn!(
            timeout_s = CLOSE_TIMEOUT.as_secs(),
            "the broker did not let the consumer close in time; stopping anyway (uncommitted events are redelivered)"
        );
    }
}

/// How long the group's leave request is given to go out once the partitions are revoked.
const LEAVE_SENT: Duration = Duration::from_millis(200);

/// Leaves the consumer group, so that the group gives this instance's partitions to the others
/// at once instead of keeping them for it until its session expires (decision 0027). A static
/// member (Kafka's `group.instance.id`) does not leave when it closes; unsubscribing first
/// makes it leave like any other. The revocation is a rebalance event served by polling the
/// client, and librdkafka sends the leave request once it has been served.
async fn leave_group(consumer: &Arc<GroupConsumer>) {
    let unsubscribing = Arc::clone(consumer);
    on_a_thread(move || unsubscribing.unsubscribe()).await;
    while !consumer.context().assigned().is_empty() {
        // Messages fetched before the revocation may still come: they are not handled, and
        // the partition's next owner gets them from the committed offset.
        let _ = tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await;
    }
    tokio::time::sleep(LEAVE_SENT).await;
    tracing::info!("left the consumer group; its partitions go to the other instances");
}

/// Runs a call that may wait on the broker on a plain thread (never a runtime worker), and
/// waits for it without blocking.
async fn on_a_thread(call: impl FnOnce() + Send + 'static) {
    let (done, finished) = oneshot::channel();
    std::thread::spawn(move || {
        call();
        let _ = done.send(());
    });
    let _ = finished.await;
}
