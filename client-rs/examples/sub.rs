//! Print what arrives on a pattern: `cargo run -p mphub-client --example sub [ADDR] [PATTERN]`.

use mphub_client::{Client, ConnectOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:6000".into());
    let pattern = args.next().unwrap_or_else(|| ">".into());
    let mut opts = ConnectOptions::new();
    if let Ok(key) = std::env::var("MPHUB_AUTHKEY") {
        opts = opts.authkey(key);
    }
    let client = Client::connect(&addr, opts).await?;
    let mut sub = client.subscribe(&pattern).await?;
    println!("listening on {pattern:?} at {addr}");
    while let Some(msg) = sub.next().await {
        // Any payload decodes into a dynamic Value; a known shape into a serde type.
        println!("{} {:?}", msg.topic(), msg.value()?);
    }
    Ok(())
}
