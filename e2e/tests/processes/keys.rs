//! The keys for customers' tokens rotate without a restart: the order service reads its key
//! file again on SIGHUP, trusts the new key and refuses the old one at once.

use std::time::Duration;

use e2e::processes::Processes;
use platform::auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, Signer};

#[tokio::test(flavor = "multi_thread")]
async fn after_sighup_the_new_key_is_trusted_and_the_old_one_refused_by_the_same_process() {
    let mut system = Processes::prepare(None).await;
    system.start_all().await;
    let url = format!("{}/orders", system.order.url());
    let status = |token: String| {
        let url = url.clone();
        async move {
            let client = e2e::http_client(Duration::from_secs(10));
            client.get(&url).bearer_auth(token).send().await.expect("answers").status().as_u16()
        }
    };
    let old = system.keys.token("alice");
    assert_eq!(status(old.clone()).await, 200, "the first key's token, remembered from now on");

    // The issuer rotates: a new key pair, and the service's file holds the new public key only.
    let (private, public) = platform::auth::generate_key_pair().expect("key pair");
    let signer = Signer::from_pem(&private, DEFAULT_ISSUER, DEFAULT_AUDIENCE).expect("signer");
    let new = signer.mint("alice", Duration::from_secs(600));
    assert_eq!(status(new.clone()).await, 401, "not trusted before the reload");
    std::fs::write(&system.keys.public_key_file, public).expect("rotated");
    system.order.hang_up();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while status(new.clone()).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the new key was not trusted within 3 s of SIGHUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(old).await, 401, "the old key's token is refused at once, though it was remembered");
    assert!(!system.order.exited(Duration::ZERO).await, "the same process, never restarted");
    let log = std::fs::read_to_string(system.order.log_file()).expect("log");
    assert!(log.contains("keys for customers' tokens reloaded"), "the reload is logged");
}
