//! How a [`crate::TestSystem`] starts: relays per outbox, the wait budget, the gremlin, the
//! stock levels' retention, the admin token, admission limits and development tokens.

/// How the system starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Relay instances running for each outbox (0 lets a test drive the order outbox itself).
    pub order_relays: usize,
    pub inventory_relays: usize,
    pub wait_budget_ms: u64,
    pub gremlin: inventory::gremlin::Pattern,
    /// How long inventory keeps old stock levels, and how often it forgets older ones.
    pub levels: inventory::stock::retention::LevelRetention,
    pub admin_token: Option<String>,
    pub admission: order::admission::AdmissionSettings,
    /// Both services' inbox settings; `None`: the local profile's.
    pub inbox: Option<messaging::settings::InboxSettings>,
    /// The consumers' statement timeout; `None`: the default.
    pub consumer_statement_timeout_ms: Option<u64>,
    /// The order and inventory databases' URLs (made and migrated by the caller, e.g. on a
    /// [`crate::replicated::ReplicatedPostgres`]); `None`: two fresh ones on the test server.
    pub database_urls: Option<[String; 2]>,
    /// Synchronous standbys the services and relays wait for before they act on a commit
    /// (decision 0030): the databases' `sync_standbys` and the relays'. 0: none.
    pub sync_standbys: u32,
    /// The development token endpoint (`POST /auth/token`), signing with the test's key.
    pub dev_tokens: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            order_relays: 1,
            inventory_relays: 1,
            wait_budget_ms: 2_000,
            gremlin: inventory::gremlin::Pattern::default(),
            levels: inventory::stock::retention::LevelRetention::default(),
            admin_token: None,
            admission: order::admission::AdmissionSettings {
                // Tests place many orders for one customer quickly.
                per_customer_per_second: 10_000.0,
                per_customer_burst: 10_000.0,
                ..Default::default()
            },
            inbox: None,
            consumer_statement_timeout_ms: None,
            dev_tokens: false,
            database_urls: None,
            sync_standbys: 0,
        }
    }
}
