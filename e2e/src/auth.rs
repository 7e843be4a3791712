//! Customers for the tests: a key pair of the test's own, the public half in a file the
//! order service reads (`auth.public_key_file`), and tokens minted with the private half.

use std::path::PathBuf;
use std::time::Duration;

use platform::auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, Signer};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

/// The customer the tests' default clients act as.
pub const TEST_CUSTOMER: &str = "test-customer";

pub struct TestKeys {
    signer: Signer,
    /// The public key, for the order service. Removed with the keys.
    pub public_key_file: PathBuf,
    /// The private key, for a process that mints tokens itself (the load generator).
    pub private_key_file: PathBuf,
}

impl TestKeys {
    pub fn new(name: &str) -> Self {
        let (private, public) = platform::auth::generate_key_pair().expect("key pair");
        let dir = std::env::temp_dir().join("order-system-tests").join("keys");
        std::fs::create_dir_all(&dir).expect("key dir");
        let public_key_file = dir.join(format!("{name}.pub.pem"));
        let private_key_file = dir.join(format!("{name}.key.pem"));
        std::fs::write(&public_key_file, public).expect("public key written");
        std::fs::write(&private_key_file, &private).expect("private key written");
        let signer = Signer::from_pem(&private, DEFAULT_ISSUER, DEFAULT_AUDIENCE).expect("signer");
        Self { signer, public_key_file, private_key_file }
    }

    /// A token for `customer`, valid for an hour.
    pub fn token(&self, customer: &str) -> String {
        self.signer.mint(customer, Duration::from_secs(3600))
    }

    /// A fulfilment operator's token (scope `orders:ship`), valid for an hour.
    pub fn operator_token(&self, operator: &str) -> String {
        self.signer.mint_with_scope(operator, Some(platform::auth::SHIP_SCOPE), Duration::from_secs(3600))
    }

    /// A client that sends `customer`'s token with every request (a request may still set
    /// its own Authorization header).
    pub fn client(&self, customer: &str, timeout: Duration) -> reqwest::Client {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {}", self.token(customer))).expect("header value");
        headers.insert(AUTHORIZATION, value);
        crate::client_builder(timeout).default_headers(headers).build().expect("http client")
    }
}

impl Drop for TestKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.public_key_file);
        let _ = std::fs::remove_file(&self.private_key_file);
    }
}
