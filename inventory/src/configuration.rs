//! Settings of the inventory service: defaults, then `$CONFIG_FILE`, then `INVENTORY__*`
//! variables (e.g. `INVENTORY__DATABASE__URL`, `INVENTORY__HTTP__PORT`). What every consuming
//! service has is `messaging::service::ServiceSettings`; inventory's own settings are here.

use serde::Deserialize;

/// The inventory service's whole settings.
pub type Settings = messaging::service::Settings<crate::startup::InventoryService>;

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct InventorySettings {
    /// The gremlin's pattern at start (`INVENTORY__GREMLIN__ENABLED=true`, `..__ONE_IN=4`,
    /// `..__DELAY_MS=5000`); changeable at run time through `/admin/gremlin`.
    #[serde(default)]
    pub gremlin: crate::gremlin::Pattern,
    /// How long old stock levels are kept (`INVENTORY__LEVELS__KEEP_HOURS`, 7 days) and how
    /// often older ones are deleted (`stock::retention`).
    #[serde(default)]
    pub levels: crate::stock::retention::LevelRetention,
}
