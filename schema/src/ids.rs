//! Typed identifiers and validated values. A `Sku` or a `Quantity` that exists is valid:
//! the only ways to build one check it, including deserialisation.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identifies an order everywhere: the aggregate id of its events and their Kafka key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl OrderId {
    /// A new time-ordered id (UUID v7), so recent orders sort last in an index.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies one event; consumers deduplicate on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a value was refused, in words a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// A stock-keeping unit: 2 to 32 characters, upper-case letters, digits and dashes,
/// starting with a letter or a digit (e.g. `MUG-01`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let well_formed = (2..=Self::MAX_LEN).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_uppercase() || c.is_ascii_digit())
            && raw.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        if well_formed {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue(format!(
                "must be 2 to {} characters of A-Z, 0-9 and '-', starting with a letter or digit (got {raw:?})",
                Self::MAX_LEN
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Sku> for String {
    fn from(value: Sku) -> Self {
        value.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many units of one SKU a line asks for: 1 to [`Quantity::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i32")]
pub struct Quantity(i32);

impl Quantity {
    /// Large enough for any real basket, small enough that a typo (or an attack) is caught.
    pub const MAX: i64 = 10_000;

    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        if (1..=Self::MAX).contains(&raw) {
            // In range 1..=10_000, so it fits in an i32.
            Ok(Self(raw as i32))
        } else {
            Err(InvalidValue(format!("must be between 1 and {} (got {raw})", Self::MAX)))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = InvalidValue;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Quantity> for i32 {
    fn from(value: Quantity) -> Self {
        value.0
    }
}

// The published JSON Schema states the same rules as `parse`, so a producer in another
// language can validate before sending.
impl JsonSchema for Sku {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sku".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Z0-9][A-Z0-9-]{1,31}$",
        })
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer",
            "minimum": 1,
            "maximum": Quantity::MAX,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sku_accepts_upper_case_digits_and_dashes() {
        assert!(Sku::parse("MUG-01").is_ok());
        assert!(Sku::parse("9X").is_ok());
    }

    #[test]
    fn a_sku_refuses_lower_case_spaces_leading_dash_and_extremes() {
        for bad in ["mug-01", "MUG 01", "-MUG", "M", "", &"A".repeat(33), "MUG_01", "MÜG"] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_quantity_is_between_one_and_the_maximum() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-3).is_err());
        assert!(Quantity::parse(Quantity::MAX + 1).is_err());
        assert_eq!(Quantity::parse(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::parse(Quantity::MAX).map(Quantity::get), Ok(10_000));
    }

    #[test]
    fn deserialising_checks_the_same_rules() {
        assert!(serde_json::from_str::<Sku>("\"bad sku\"").is_err());
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert!(serde_json::from_str::<Quantity>("5").is_ok());
    }
}
