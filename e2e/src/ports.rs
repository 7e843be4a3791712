//! Ports for the processes a test starts (services, relays, brokers, Postgres, Prometheus).
//!
//! A test asks for a port, then a child process binds it a moment later. Two things can take
//! the port in between, and both happened in CI:
//! - **an outgoing connection.** Asking the kernel for "any free port" (binding port 0) hands
//!   out a port from the ephemeral range, the same range every outgoing connection's source
//!   port comes from, and a busy test run opens thousands of them (Kafka clients, pools).
//!   So the ports handed out here lie below that range (Linux: 32768–60999 by default).
//! - **another test.** nextest runs each test in its own process, so a port free for one is
//!   free for all. Each port handed out is reserved by creating a file named after it under
//!   the shared test folder; a reservation older than [`RESERVATION_LIFETIME`] (longer than any
//!   test) is stale and may be taken over.

use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The ports handed out: clear of the ephemeral range and of the local stack's well-known
/// ports (5433, 8080–8083, 9090–9092, 16686, 19092).
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// How long a reservation holds. Tests finish well within it; a run that crashed leaves
/// files behind that expire.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(2 * 3600);

/// A TCP port nobody listens on now, reserved for this test.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive free ports (a broker and its controller), all reserved.
pub fn free_ports(count: u16) -> u16 {
    let dir = reservations();
    for _ in 0..10_000 {
        let first = RANGE.start + (random() % u64::from(RANGE.end - RANGE.start - count)) as u16;
        let ports = first..first + count;
        let reserved = ports.clone().all(|port| reserve(&dir, port));
        if reserved && ports.clone().all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return first;
        }
        // Reservations that did not become a handed-out run stay: cheap, and they expire.
    }
    panic!("no {count} free consecutive ports in {RANGE:?} after 10,000 tries");
}

fn reservations() -> PathBuf {
    let dir = std::env::temp_dir().join("order-system-tests").join("ports");
    std::fs::create_dir_all(&dir).expect("port reservations folder");
    dir
}

/// Takes `port` unless another test holds a live reservation on it.
fn reserve(dir: &std::path::Path, port: u16) -> bool {
    let path = dir.join(port.to_string());
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(_) => true,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let age = std::fs::metadata(&path)
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok());
            // Stale: take it over by renewing the file's time (two tests doing so at once is
            // as unlikely as the run that left it was long ago).
            match age {
                Some(age) if age > RESERVATION_LIFETIME => std::fs::write(&path, b"").is_ok(),
                _ => false,
            }
        }
        Err(error) => panic!("cannot reserve port {port} in {}: {error}", dir.display()),
    }
}

/// A random number: the standard library's per-process random hasher keys, mixed with the
/// clock, so that parallel test processes start their search in different places.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}
