//! The Kafka client an inbox consumer uses now. librdkafka can declare a client dead (a
//! *fatal* error: it never consumes again); the consumer then replaces it with a new client in
//! the running process (decision 0022). Everything else that reaches the client — `/health`,
//! the operator's controls — goes through this cell, so it follows the replacement.

use std::sync::{Arc, PoisonError, RwLock};

use platform::kafka::GroupConsumer;

pub struct CurrentConsumer {
    client: RwLock<Arc<GroupConsumer>>,
}

impl CurrentConsumer {
    pub(crate) fn new(client: GroupConsumer) -> Self {
        Self { client: RwLock::new(Arc::new(client)) }
    }

    /// The client in use now (hold it briefly: a replaced client closes once dropped).
    pub(crate) fn get(&self) -> Arc<GroupConsumer> {
        Arc::clone(&self.client.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `client` in place of the one in use, and returns that one.
    pub(crate) fn replace(&self, client: GroupConsumer) -> Arc<GroupConsumer> {
        std::mem::replace(&mut *self.client.write().unwrap_or_else(PoisonError::into_inner), Arc::new(client))
    }
}
