//! `RELAY__RELAY__*`: how a relay behaves.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct RelaySettings {
    /// How long an idle relay sleeps at most without a notification (the safety net for one
    /// that never came).
    pub poll_interval_ms: u64,
    /// Whether to sleep on LISTEN, waking writers up to notify (`crate::wake`); off polls
    /// every `poll_interval_ms` instead and measures pure polling (see the benchmarks).
    pub listen: bool,
    /// How long a relay with nothing to read stays awake, reading every 2 ms, before
    /// it sleeps on LISTEN (`crate::wake`). Writers notify only a sleeping relay, and every
    /// notifying commit waits for every other one's WAL flush: under steady traffic a relay
    /// that lingers never sleeps, and no writer pays for a wake-up.
    pub linger_ms: u64,
    /// Rows read and sent at a time (shared among the lanes a read covers). A read has a cost
    /// of its own, whatever it returns (the lanes' index scans, the snapshot and the ticks):
    /// draining a backlog, 1,000 a read went 1.23x as fast as 500 (decision 0034).
    pub batch_size: i64,
    /// Batches in flight at once: the next is read and sent while the broker acknowledges
    /// the previous ones (`crate::pipeline`). 1 waits for each batch before reading the next.
    pub pipeline_depth: usize,
    /// How often a relay looks at the other instances and takes free lanes, and the lanes of
    /// an instance whose session is gone (a dead instance's lanes are taken over this fast).
    pub standby_retry_ms: u64,
    /// How long a lane stays an instance's without a renewal (`crate::lanes`): a relay that
    /// hangs or is paused loses its lanes to the others after this long. Renewed every
    /// quarter of it.
    pub lease_ms: u64,
    /// How often at most the positions that moved are written: a crash publishes again what
    /// was acknowledged since the last write (consumers skip the copies). Every write leaves
    /// a version of each lane's row that a long transaction keeps, and that every later write
    /// and claim reads again until it ends (decision 0026, figure 10): once a second keeps a
    /// 10-minute `pg_dump` at 600 versions a lane, where 200 ms made 3,000.
    pub position_every_ms: u64,
    /// How often the backlog is measured and the log's finished partitions given back
    /// (`crate::reclaim`); a partition is also looked at as soon as the lanes have passed it.
    pub housekeeping_every_ms: u64,
    /// Synchronous standbys that must have flushed a row's commit before the row is published
    /// (decision 0030, rule 2): a failover then never takes back a published event. 0
    /// publishes what the primary committed, for a database without standbys.
    pub sync_standbys: u32,
    /// How long a read's rows wait for those standbys before the relay gives its session up
    /// and starts again (publishing held meanwhile; `relay_standby_holds_total` counts it).
    pub sync_standby_wait_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1_000,
            listen: true,
            linger_ms: 20,
            batch_size: 1_000,
            pipeline_depth: 4,
            standby_retry_ms: 1_000,
            lease_ms: 10_000,
            position_every_ms: 1_000,
            housekeeping_every_ms: 1_000,
            sync_standbys: 0,
            sync_standby_wait_ms: 2_000,
        }
    }
}
