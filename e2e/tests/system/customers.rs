//! Who may do what (decision 0013): a customer sees and touches only their own orders, their
//! idempotency keys are their own, and a request without a valid token is a 401 that says why.

use base64::Engine as _;
use e2e::{Options, TestSystem};
use serde_json::{Value, json};

fn order_of(sku: &str) -> Value {
    json!({"lines": [{"sku": sku, "quantity": 1}]})
}

#[tokio::test]
async fn a_customer_cannot_list_read_or_cancel_another_customers_order() {
    let system = TestSystem::start().await;
    let alice = system.keys.client("alice", std::time::Duration::from_secs(10));
    let bob = system.keys.client("bob", std::time::Duration::from_secs(10));
    let placed = system.post_order_as("alice", "a-1", &order_of("MUG-01")).await;
    assert!(placed.status().is_success(), "{}", placed.status());
    let id = placed.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();
    assert_eq!(system.settled_as("alice", &id).await["status"], "CONFIRMED");
    let url = format!("{}/orders/{id}", system.order_url);

    let read = bob.get(&url).send().await.expect("answers");
    assert_eq!(read.status(), 404, "another customer's order is not found, not forbidden");
    let body: Value = read.json().await.expect("json");
    assert_eq!(body["error"], "not_found");
    assert!(!body.to_string().contains("alice"), "nothing about the owner: {body}");

    let cancel = bob.post(format!("{url}/cancel")).send().await.expect("answers");
    assert_eq!(cancel.status(), 404);

    let listed: Value =
        bob.get(format!("{}/orders", system.order_url)).send().await.expect("answers").json().await.expect("json");
    assert_eq!(listed, json!([]), "bob has no orders");

    // Alice still has hers, untouched, and sees only hers.
    let mine: Value = alice.get(&url).send().await.expect("answers").json().await.expect("json");
    assert_eq!((mine["status"].as_str(), mine["customer_id"].as_str()), (Some("CONFIRMED"), Some("alice")));
    system.post_order_as("bob", "b-1", &order_of("CABLE-01")).await;
    let listed: Value =
        alice.get(format!("{}/orders", system.order_url)).send().await.expect("answers").json().await.expect("json");
    let ids: Vec<&str> = listed.as_array().expect("array").iter().filter_map(|o| o["id"].as_str()).collect();
    assert_eq!(ids, [id.as_str()]);
    system.assert_books_balance().await;
    system.stop().await;
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_customer() {
    let system = TestSystem::start().await;
    let first = system.post_order_as("alice", "same-key", &order_of("MUG-01")).await;
    let second = system.post_order_as("bob", "same-key", &order_of("CABLE-01")).await;
    assert!(first.status().is_success() && second.status().is_success(), "{} {}", first.status(), second.status());
    let alices: Value = first.json().await.expect("json");
    let bobs: Value = second.json().await.expect("json");
    assert_ne!(alices["id"], bobs["id"], "two customers, two orders");
    assert_eq!((bobs["customer_id"].as_str(), bobs["lines"][0]["sku"].as_str()), (Some("bob"), Some("CABLE-01")));

    // Bob reusing his key for something else is told about his order, never Alice's.
    let reused = system.post_order_as("bob", "same-key", &order_of("LAMP-01")).await;
    assert_eq!(reused.status(), 409);
    let message = reused.json::<Value>().await.expect("json")["message"].as_str().expect("message").to_owned();
    assert!(message.contains(bobs["id"].as_str().expect("id")), "{message}");
    assert!(!message.contains(alices["id"].as_str().expect("id")), "{message}");

    // A retry by Alice is still a replay of her order.
    let retry = system.post_order_as("alice", "same-key", &order_of("MUG-01")).await;
    assert_eq!(retry.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    assert_eq!(retry.json::<Value>().await.expect("json")["id"], alices["id"]);
    assert_eq!(system.books().await.orders(), 2);
    system.stop().await;
}

#[tokio::test]
async fn the_body_cannot_speak_for_another_customer() {
    let system = TestSystem::start().await;
    let body = json!({"customer_id": "alice", "lines": [{"sku": "MUG-01", "quantity": 1}]});
    let response = system.post_order_as("mallory", "m-1", &body).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(body["fields"]["customer_id"].as_str().is_some_and(|m| m.contains("another customer")), "{body}");
    assert_eq!(system.books().await.orders(), 0);
    system.stop().await;
}

/// Claims as an attacker would write them, signed (or not) with whatever they hold.
fn claims(subject: &str, expires_in: i64, audience: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": subject, "iss": platform::auth::DEFAULT_ISSUER, "aud": audience, "exp": now + expires_in, "iat": now})
}

fn sign(private_pem: &str, claims: &Value) -> String {
    platform::jwt_crypto::install();
    let key = jsonwebtoken::EncodingKey::from_ed_pem(private_pem.as_bytes()).expect("key");
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA), claims, &key).expect("token")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn a_missing_expired_forged_unsigned_or_foreign_token_is_a_401_that_says_why() {
    let system = TestSystem::start().await;
    let id = system.place("MUG-01", 1).await;
    system.settled(&id).await;
    let private = std::fs::read_to_string(&system.keys.private_key_file).expect("private key");
    let (other_private, _) = platform::auth::generate_key_pair().expect("keys");
    // Alice's real token with Bob's claims put in: the signature no longer matches.
    let valid = system.keys.token("alice");
    let parts: Vec<&str> = valid.split('.').collect();
    let as_bob = b64(claims("bob", 600, platform::auth::DEFAULT_AUDIENCE).to_string().as_bytes());
    let hs256 = {
        // Keyed with the service's public key: the classic algorithm confusion.
        let public = std::fs::read(&system.keys.public_key_file).expect("public key");
        use hmac::Mac as _;
        let claims = claims("alice", 600, platform::auth::DEFAULT_AUDIENCE);
        let signed = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&public).expect("hmac key");
        mac.update(signed.as_bytes());
        format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no Authorization header", None, ""),
        ("another scheme", Some(format!("Basic {}", b64(b"alice:secret"))), ""),
        ("not a JWT", Some("Bearer hello".into()), "well-formed"),
        (
            "expired 10 minutes ago",
            Some(format!("Bearer {}", sign(&private, &claims("alice", -600, "order-api")))),
            "expired",
        ),
        ("payload swapped (forged)", Some(format!("Bearer {}.{as_bob}.{}", parts[0], parts[2])), "signature"),
        ("alg none", Some(format!("Bearer {}.{as_bob}.", b64(br#"{"alg":"none","typ":"JWT"}"#))), ""),
        ("HS256 with the public key", Some(format!("Bearer {hs256}")), "algorithm"),
        (
            "signed by another key",
            Some(format!("Bearer {}", sign(&other_private, &claims("alice", 600, "order-api")))),
            "signature",
        ),
        (
            "for another audience",
            Some(format!("Bearer {}", sign(&private, &claims("alice", 600, "billing")))),
            "audience",
        ),
        (
            "subject not a customer id",
            Some(format!("Bearer {}", sign(&private, &claims("a b\u{0}", 600, "order-api")))),
            "subject",
        ),
    ];
    let anonymous = e2e::http_client(std::time::Duration::from_secs(10));
    for (what, authorization, says) in cases {
        for (method, path) in [
            ("GET", "/orders".to_owned()),
            ("GET", format!("/orders/{id}")),
            ("POST", format!("/orders/{id}/cancel")),
            ("POST", "/orders".to_owned()),
        ] {
            let mut request = anonymous
                .request(method.parse().expect("method"), format!("{}{path}", system.order_url))
                .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                .json(&order_of("MUG-01"));
            if let Some(value) = &authorization {
                request = request.header("Authorization", value);
            }
            let response = request.send().await.expect("answers");
            assert_eq!(response.status(), 401, "{what}: {method} {path}");
            let challenge =
                response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            assert!(challenge.starts_with("Bearer realm=\"orders\""), "{what}: {challenge:?}");
            if authorization.as_deref().is_some_and(|a| a.starts_with("Bearer")) {
                assert!(challenge.contains("error=\"invalid_token\""), "{what}: {challenge}");
            }
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"], "unauthenticated", "{what}");
            assert!(body["message"].as_str().is_some_and(|m| m.contains(says)), "{what}: {body}");
        }
    }
    // Two valid tokens of two customers: refused, not the first one taken.
    let twice = anonymous
        .get(format!("{}/orders", system.order_url))
        .header("Authorization", format!("Bearer {}", system.keys.token("alice")))
        .header("Authorization", format!("Bearer {}", system.keys.token("bob")))
        .send()
        .await
        .expect("answers");
    assert_eq!(twice.status(), 401, "two Authorization headers");
    let body: Value = twice.json().await.expect("json");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("more than one Authorization")), "{body}");
    // Nothing was placed or cancelled by any of them.
    assert_eq!(system.books().await.orders(), 1);
    assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    system.stop().await;
}

#[tokio::test]
async fn development_tokens_are_off_unless_enabled() {
    let off = TestSystem::start().await;
    let asked = off.http.post(format!("{}/auth/token", off.order_url)).json(&json!({"customer": "eve"})).send().await;
    assert_eq!(asked.expect("answers").status(), 404);
    off.stop().await;

    let on = TestSystem::start_with(Options { dev_tokens: true, ..Options::default() }).await;
    let anonymous = e2e::http_client(std::time::Duration::from_secs(10));
    let url = format!("{}/auth/token", on.order_url);
    let bad = anonymous.post(&url).json(&json!({"customer": "not ok"})).send().await.expect("answers");
    assert_eq!(bad.status(), 400);
    let minted: Value = anonymous
        .post(&url)
        .json(&json!({"customer": "carol"}))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    let token = minted["token"].as_str().expect("token");
    let listed = anonymous.get(format!("{}/orders", on.order_url)).bearer_auth(token).send().await.expect("answers");
    assert_eq!(listed.status(), 200, "a development token is a real token");
    on.stop().await;
}
