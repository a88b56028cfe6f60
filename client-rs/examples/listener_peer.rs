//! Talk to a plain Python `multiprocessing.connection.Listener` (no broker):
//!
//!     python3 client-rs/examples/listener.py &
//!     cargo run -p mphub-client --example listener_peer [ADDR]
//!
//! Works with CPython 3.11 (HMAC-MD5 handshake) and 3.12+ (`{sha256}`) alike.

use mphub_client::serde_pickle::Value;
use mphub_client::Connection;
use serde::Serialize;

#[derive(Serialize)]
struct Job<'a> {
    name: &'a str,
    sizes: Vec<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6000".into());
    let mut conn = Connection::connect(&addr, Some(b"secret")).await?;
    conn.send(&Job {
        name: "resize",
        sizes: vec![64, 128],
    })
    .await?;
    let reply: Value = conn.recv_value().await?; // ('echo', {'name': 'resize', 'sizes': [64, 128]})
    println!("{reply:?}");
    conn.send(&"close").await?;
    Ok(())
}
