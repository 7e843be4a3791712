//! The system's one description, `system.toml` at the repository's root: every process of
//! ours with its name, the prefix of its environment variables, its port, its database and its
//! consumer group. The file is compiled in, so a binary carries the description it was built
//! with; scripts and the deployment checks read the same file.

use std::sync::OnceLock;

use serde::Deserialize;

const SYSTEM: &str = include_str!("../../system.toml");

/// One process of the system, as `system.toml` describes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Its name: the binary, the logs, the Kafka principal (`order`).
    pub name: String,
    /// The prefix of its environment variables (`ORDER` for `ORDER__HTTP__PORT`).
    pub prefix: String,
    /// Its HTTP port unless configured.
    pub port: u16,
    /// Its database's name, for a process that has one.
    pub database: Option<String>,
    /// Its Kafka consumer group unless configured, for a process that consumes.
    pub consumer_group: Option<String>,
    /// The processes whose outbox it publishes (the relay).
    #[serde(default)]
    pub outboxes: Vec<String>,
    /// What it offers, for the line `scripts/up` prints.
    pub offers: String,
}

impl Process {
    /// Its address on this machine at its default port.
    pub fn local_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its database's name; a process without one is a mistake in `system.toml` or in the
    /// caller, found by the tests.
    pub fn database(&self) -> &str {
        self.database.as_deref().unwrap_or_else(|| panic!("system.toml gives {} no database", self.name))
    }

    pub fn consumer_group(&self) -> &str {
        self.consumer_group.as_deref().unwrap_or_else(|| panic!("system.toml gives {} no consumer_group", self.name))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct System {
    process: Vec<Process>,
}

/// Every process, in the order `system.toml` lists them (the order the stack starts them).
pub fn processes() -> &'static [Process] {
    static PROCESSES: OnceLock<Vec<Process>> = OnceLock::new();
    PROCESSES.get_or_init(|| parse(SYSTEM).unwrap_or_else(|error| panic!("system.toml: {error}")))
}

/// The process named `name`. Names are the code's own constants, so a missing one is a bug,
/// and the tests find it.
pub fn process(name: &str) -> &'static Process {
    processes()
        .iter()
        .find(|process| process.name == name)
        .unwrap_or_else(|| panic!("system.toml has no process named {name:?}"))
}

fn parse(text: &str) -> Result<Vec<Process>, String> {
    let system: System = toml::from_str(text).map_err(|error| error.to_string())?;
    let mut seen = std::collections::HashSet::new();
    for process in &system.process {
        for (what, value) in
            [("name", process.name.clone()), ("prefix", process.prefix.clone()), ("port", process.port.to_string())]
        {
            if !seen.insert((what, value.clone())) {
                return Err(format!("two processes share the {what} {value}"));
            }
        }
        if process.prefix != process.name.to_uppercase() {
            return Err(format!("{}'s prefix should be {}", process.name, process.name.to_uppercase()));
        }
        for outbox in &process.outboxes {
            let owner = system.process.iter().find(|p| &p.name == outbox);
            if owner.and_then(|p| p.database.as_ref()).is_none() {
                return Err(format!("{} publishes the outbox of {outbox}, which has no database", process.name));
            }
        }
    }
    Ok(system.process)
}

#[cfg(test)]
mod tests {
    use super::{parse, process, processes};

    #[test]
    fn the_description_reads_and_names_every_process() {
        let names: Vec<_> = processes().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["relay", "inventory", "notifications", "order"]);
        assert_eq!(process("order").database(), "orders");
        assert_eq!(process("relay").outboxes, ["order", "inventory"]);
    }

    #[test]
    fn a_description_with_a_clash_or_a_dangling_outbox_is_refused() {
        let one = |name: &str, port: u16| {
            format!(
                "[[process]]\nname = \"{name}\"\nprefix = \"{}\"\nport = {port}\noffers = \"\"\n",
                name.to_uppercase()
            )
        };
        assert!(parse(&(one("a", 1) + &one("b", 2))).is_ok());
        assert!(parse(&(one("a", 1) + &one("b", 1))).unwrap_err().contains("port 1"));
        assert!(parse(&one("a", 1).replace("prefix = \"A\"", "prefix = \"B\"")).is_err());
        assert!(parse(&(one("a", 1) + "outboxes = [\"b\"]\n" + &one("b", 2))).unwrap_err().contains("no database"));
        assert!(parse(&(one("a", 1) + "colour = \"red\"\n")).is_err());
    }
}
