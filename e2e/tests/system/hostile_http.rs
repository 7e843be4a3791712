//! Hostile HTTP, tried as an attacker would: every input gets a 4xx (never a 5xx), and every
//! answer the services write themselves is a JSON error with a stable code. Prints the table
//! `docs/security.md` quotes.

use std::time::Duration;

use e2e::TestSystem;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Sends raw bytes and returns the status line's code and the body (best effort).
async fn raw(address: &str, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn no_hostile_input_gets_a_5xx_and_what_the_services_answer_is_json() {
    let system = TestSystem::start().await;
    let order = system.order_url.trim_start_matches("http://").to_owned();
    let inventory = system.inventory_url.trim_start_matches("http://").to_owned();
    let id = system.place("MUG-01", 1).await;
    // A signed-in customer's requests: what reaches the handlers, past authentication.
    let token = system.keys.token(e2e::TEST_CUSTOMER);
    let post_bytes = |body: &[u8]| {
        let mut request = format!(
            "POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {}\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            uuid::Uuid::new_v4(),
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        request
    };
    let post = |body: &str| post_bytes(body.as_bytes());
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
            .into_bytes()
    };
    let nul_customer = "{\"customer_id\": \"a\\u0000b\", \"lines\": [{\"sku\": \"MUG-01\", \"quantity\": 1}]}";
    let duplicate =
        "{\"customer_id\": \"a\", \"customer_id\": \"b\", \"lines\": [{\"sku\": \"MUG-01\", \"quantity\": 1}]}";
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let long_path = format!("/orders/{}", "a".repeat(20_000));
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
        (0..200).map(|i| format!("X-H{i}: {}\r\n", "v".repeat(100))).collect::<String>()
    );
    // (what, service, request, its status, whether the body must be our JSON error)
    let cases: Vec<(&str, &str, Vec<u8>, u16, bool)> = vec![
        ("unknown route", &order, get("/no/such/thing"), 404, true),
        ("unknown route on inventory", &inventory, get("/admin/nothing"), 404, true),
        ("malformed order id", &order, get("/orders/not-a-uuid"), 400, true),
        ("NUL in customer_id", &order, post(nul_customer), 400, true),
        ("duplicate keys", &order, post(duplicate), 400, true),
        ("10,000-deep JSON", &order, post(&deep), 400, true),
        ("invalid UTF-8 body", &order, post_bytes(b"{\"customer_id\": \"\xff\xfe\", \"lines\": []}"), 400, true),
        ("body over 64 KiB (declared)", &order, b"POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n".to_vec(), 400, true),
        ("path traversal", &order, get("/orders/..%2f..%2fetc%2fpasswd"), 400, true),
        ("20 KB path", &order, get(&long_path), 0, false),
        ("200 large headers", &order, many_headers.into_bytes(), 0, false),
        ("not HTTP", &order, b"\x16\x03\x01 hello\r\n\r\n".to_vec(), 0, false),
        ("admin without a token", &inventory, get("/admin/gremlin"), 404, true),
        ("negative quantity", &order, post("{\"lines\": [{\"sku\": \"MUG-01\", \"quantity\": -1}]}"), 400, true),
    ];
    println!("\n| input | service | status | JSON error |\n|---|---|---|---|");
    for (what, address, request, expected, json) in cases {
        let (status, body) = raw(address, &request).await;
        let code =
            serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|b| b["error"].as_str().map(str::to_owned));
        let service = if *address == order { "order" } else { "inventory" };
        println!("| {what} | {service} | {status} | {} |", code.as_deref().unwrap_or("-"));
        assert!(status < 500, "{what}: {status} {body}");
        if expected != 0 {
            assert_eq!(status, expected, "{what}: {body}");
        } else {
            assert!((400..500).contains(&status) || status == 0, "{what}: {status}");
        }
        if json {
            assert!(code.is_some(), "{what}: the body is a JSON error: {body:?}");
        }
    }

    // HEAD is answered for every GET route, without a body.
    for url in [
        format!("{}/orders/{id}", system.order_url),
        format!("{}/health", system.order_url),
        format!("{}/stock", system.inventory_url),
    ] {
        let response = system.http.head(&url).send().await.expect("answers");
        assert_eq!(response.status(), 200, "HEAD {url}");
        assert!(response.bytes().await.expect("body").is_empty(), "HEAD {url} has no body");
    }
    assert_eq!(system.books().await.orders(), 1, "nothing hostile was written");
    system.stop().await;
}
