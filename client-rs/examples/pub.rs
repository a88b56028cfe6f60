//! Publish a few readings: `cargo run -p mphub-client --example pub [ADDR]`
//! (authkey from `MPHUB_AUTHKEY`, if the broker has one).

use mphub_client::{Client, ConnectOptions};
use serde::Serialize;

#[derive(Serialize)]
struct Reading {
    sensor: String,
    v: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6000".into());
    let mut opts = ConnectOptions::new();
    if let Ok(key) = std::env::var("MPHUB_AUTHKEY") {
        opts = opts.authkey(key);
    }
    let client = Client::connect(&addr, opts).await?;
    for i in 0..10 {
        let r = Reading {
            sensor: "t-1".into(),
            v: 20.0 + f64::from(i) / 10.0,
        };
        client.publish("sensors.temp", &r).await?; // Python sees {'sensor': 't-1', 'v': 20.0}
    }
    client.flush().await?; // the broker has routed all ten
    println!("published 10 readings to sensors.temp");
    Ok(())
}
