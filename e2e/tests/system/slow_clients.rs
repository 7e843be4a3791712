//! Slow and hostile clients: a request counts against admission only once its body has
//! arrived, and a body has a deadline, so clients trickling bytes cannot starve others.

use std::time::{Duration, Instant};

use e2e::{Options, TestSystem};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Starts a `POST /orders` whose 200-byte body arrives one byte every 2 s; returns what the
/// server finally answered (the status line) and when.
async fn trickle(address: String) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(&address).await.expect("connects");
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Idempotency-Key: {}\r\nContent-Length: 200\r\n\r\n",
        uuid::Uuid::new_v4()
    );
    stream.write_all(head.as_bytes()).await.expect("headers sent");
    let mut answer = vec![0u8; 512];
    loop {
        tokio::select! {
            read = stream.read(&mut answer) => {
                let read = read.unwrap_or(0);
                let text = String::from_utf8_lossy(&answer[..read]).into_owned();
                return (text.lines().next().unwrap_or_default().to_owned(), started.elapsed());
            }
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                if stream.write_all(b" ").await.is_err() {
                    return (String::from("closed"), started.elapsed());
                }
            }
        }
    }
}

#[tokio::test]
async fn trickling_uploads_beyond_the_in_flight_cap_do_not_starve_other_clients() {
    let admission = order::admission::AdmissionSettings { max_in_flight: 4, ..Options::default().admission };
    let system = TestSystem::start_with(Options { admission, ..Options::default() }).await;
    let address = system.order_url.trim_start_matches("http://").to_owned();
    let tricklers: Vec<_> = (0..12).map(|_| tokio::spawn(trickle(address.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Three times the cap is trickling; another client's orders still go through at once.
    for _ in 0..10 {
        let started = Instant::now();
        let id = system.place("MUG-01", 1).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "an order took {took:?} while slow clients trickled");
        assert_eq!(system.settled(&id).await["status"], "CONFIRMED");
    }
    for trickler in tricklers {
        let (status, after) = trickler.await.expect("trickler");
        assert!(status.starts_with("HTTP/1.1 408"), "a trickled body is cut off: {status}");
        assert!(after < Duration::from_secs(8), "within the body deadline (5 s): {after:?}");
    }
    system.assert_books_balance().await;
    system.stop().await;
}
