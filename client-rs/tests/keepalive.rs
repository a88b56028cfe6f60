//! Keepalive against a broker that is alive to the kernel and deaf to everyone: a broker process
//! stopped with SIGSTOP keeps its sockets open (the kernel still accepts and ACKs), so without
//! pings a subscriber would wait forever. The broker runs in a child process (this test binary,
//! run again as `child_broker`) so that it can be stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mphub_broker::{Config, ListenAddr};
use mphub_client::{Client, ConnectOptions};

const CHILD: &str = "MPHUB_CHILD_BROKER";

/// Not a test of its own: with `MPHUB_CHILD_BROKER=ADDR` set, serves a broker on ADDR until
/// killed, printing `LISTENING host:port` once it listens. Without it, does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_broker() {
    let Ok(listen) = std::env::var(CHILD) else {
        return;
    };
    let config = Config::with_listeners(vec![ListenAddr::parse(&listen).unwrap()], Some(KEY));
    let broker = mphub_broker::start(config).await.unwrap();
    println!("LISTENING {}", addr(&broker));
    std::future::pending::<()>().await;
}

/// The child broker process; killed when dropped (SIGKILL works on a stopped process too).
struct ChildBroker {
    child: Child,
    addr: String,
}

impl ChildBroker {
    fn start(listen: &str) -> ChildBroker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_broker", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, listen)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        // Wrapped at once, so that a panic below still kills and reaps it.
        let mut broker = ChildBroker {
            child,
            addr: String::new(),
        };
        for line in out.lines() {
            // libtest prints "test child_broker ... " before it on the same line.
            let line = line.unwrap();
            if let Some((_, addr)) = line.split_once("LISTENING ") {
                broker.addr = addr.trim().to_owned();
                return broker;
            }
        }
        panic!("the child broker ended before it listened");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `cond`, checking every 10 ms, for at most `limit`; returns how long it took.
async fn until(limit: Duration, cond: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_notices_a_stopped_broker_by_its_pings_and_resumes_when_it_wakes() {
    let broker = ChildBroker::start("127.0.0.1:0");
    let every = Duration::from_millis(300);
    let opts = ConnectOptions::new()
        .authkey(KEY)
        .name("keepalive-test")
        .ping_interval(every)
        .max_outstanding_pings(2)
        .connect_timeout(Duration::from_secs(1))
        .reconnect_wait(Duration::from_millis(50), Duration::from_millis(200))
        .max_reconnect_attempts(None);
    let sub = Client::connect(&broker.addr, opts).await.unwrap();
    let mut msgs = sub.subscribe("k.>").await.unwrap();
    let publisher = Client::connect(&broker.addr, ConnectOptions::new().authkey(KEY))
        .await
        .unwrap();
    publisher.publish("k.before", &1).await.unwrap();
    publisher.flush().await.unwrap();
    assert_eq!(recv(&mut msgs).await.topic(), "k.before");

    broker.signal("-STOP");
    // Silent since the last message at most: ping, ping, dead, 3 intervals (plus a little for
    // timers on a busy machine).
    let noticed = until(Duration::from_secs(10), || !sub.is_connected()).await;
    assert!(noticed <= every * 3 + Duration::from_secs(1), "{noticed:?}");

    broker.signal("-CONT");
    until(Duration::from_secs(30), || sub.is_connected()).await;
    sub.flush().await.unwrap(); // the restored subscription is in place
    publisher.flush().await.unwrap(); // the publisher's own connection is back too
    publisher.publish("k.after", &2).await.unwrap();
    publisher.flush().await.unwrap();
    let m = recv(&mut msgs).await;
    assert_eq!((m.topic(), m.decode::<i64>().unwrap()), ("k.after", 2));
}

#[tokio::test]
async fn a_connection_name_must_be_printable_and_is_checked_before_dialling() {
    let opts = ConnectOptions::new().authkey(KEY).name("bad\nname");
    let err = Client::connect("127.0.0.1:1", opts).await.unwrap_err();
    assert!(matches!(err, mphub_client::Error::Name(..)), "{err}");
}
