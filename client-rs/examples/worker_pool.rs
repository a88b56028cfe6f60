//! A worker pool on a queue group: four workers share `jobs.*`, each job done once.
//!
//!     cargo run -p mphub-client --example worker_pool [ADDR]
//!
//! Start more copies (or Python workers subscribing to ("jobs.*", "workers")) and the broker
//! spreads the jobs over all of them.

use std::time::Duration;

use mphub_client::{Client, ConnectOptions};

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
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut jobs = client.subscribe_group("jobs.*", "workers").await?;
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0u32;
            while let Ok(Some(job)) =
                tokio::time::timeout(Duration::from_secs(1), jobs.next()).await
            {
                let n: u64 = job.decode()?;
                client.publish("results.square", &(n, n * n)).await?;
                done += 1;
            }
            println!("worker {w} did {done} jobs");
            Ok::<_, mphub_client::Error>(())
        }));
    }
    for n in 0..100u64 {
        client.publish("jobs.square", &n).await?;
    }
    client.flush().await?;
    for w in workers {
        w.await??;
    }
    Ok(())
}
