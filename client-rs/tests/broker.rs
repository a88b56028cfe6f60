//! client-rs against the real broker, run in-process on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use mphub_client::serde_pickle::Value;
use mphub_client::{Client, ConnectOptions, Error};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct Job {
    id: u32,
    name: String,
}

async fn client(b: &mphub_broker::Broker) -> Client {
    Client::connect(&addr(b), ConnectOptions::new().authkey(KEY))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_what_matches_its_pattern_decoded() {
    let b = broker().await;
    let (pub_, rx) = (client(&b).await, client(&b).await);
    let mut deep = rx.subscribe("jobs.>").await.unwrap();
    let mut one = rx.subscribe("jobs.*").await.unwrap();
    let job = Job {
        id: 7,
        name: "resize".into(),
    };
    pub_.publish("jobs.img", &job).await.unwrap();
    pub_.publish("jobs.img.big", &job).await.unwrap();
    pub_.flush().await.unwrap();
    let m = recv(&mut one).await;
    assert_eq!(
        (m.topic(), m.decode::<Job>().unwrap()),
        ("jobs.img", job.clone())
    );
    assert_eq!(recv(&mut deep).await.topic(), "jobs.img");
    assert_eq!(recv(&mut deep).await.topic(), "jobs.img.big");
    rx.flush().await.unwrap();
    assert_eq!(one.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_gets_each_message_once() {
    let b = broker().await;
    let members = [client(&b).await, client(&b).await, client(&b).await];
    let mut subs = Vec::new();
    for m in &members {
        subs.push(m.subscribe_group("work.*", "workers").await.unwrap());
    }
    let p = client(&b).await;
    for i in 0..3000u32 {
        p.publish("work.x", &i).await.unwrap();
    }
    p.flush().await.unwrap();
    for m in &members {
        m.flush().await.unwrap();
    }
    let mut seen = Vec::new();
    for s in &mut subs {
        let mut mine = 0;
        while s.pending() > 0 {
            seen.push(recv(s).await.decode::<u32>().unwrap());
            mine += 1;
        }
        assert!(mine > 0);
    }
    seen.sort_unstable();
    assert!(
        seen == (0..3000).collect::<Vec<_>>(),
        "{} messages, not each of 3000 once",
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_on_one_client_share_the_messages() {
    let b = broker().await;
    let c = client(&b).await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(c.subscribe_group("jobs.*", "workers").await.unwrap());
    }
    for i in 0..300u32 {
        c.publish("jobs.x", &i).await.unwrap();
    }
    c.flush().await.unwrap();
    let mut all = Vec::new();
    for s in &mut subs {
        assert_eq!(s.pending(), 100);
        for _ in 0..100 {
            all.push(recv(s).await.decode::<u32>().unwrap());
        }
    }
    all.sort_unstable();
    assert!(all == (0..300).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_publishing_on_one_client_each_keep_their_order() {
    let b = broker().await;
    let rx = client(&b).await;
    let mut sub = rx.subscribe("many.*").await.unwrap();
    let p = client(&b).await;
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..1000u32 {
                p.publish(&format!("many.t{t}"), &(t, i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    p.flush().await.unwrap();
    let mut next = [0u32; 8];
    for _ in 0..8000 {
        let (t, i): (u32, u32) = recv(&mut sub).await.decode().unwrap();
        assert_eq!(i, next[t as usize]);
        next[t as usize] += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_gets_the_responders_reply() {
    let b = broker().await;
    let responder = client(&b).await;
    let mut reqs = responder.subscribe_group("svc.echo", "echo").await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = reqs.next().await {
            let v = m.value().unwrap();
            let Value::Dict(d) = v else { continue };
            let get = |k: &str| d.get(&mphub_client::serde_pickle::HashableValue::String(k.into()));
            let (Some(Value::String(reply_to)), Some(body)) = (get("reply_to"), get("body")) else {
                continue;
            };
            let pickle = mphub_client::serde_pickle::value_to_vec(
                &Value::Tuple(vec![Value::String("echo".into()), body.clone()]),
                Default::default(),
            )
            .unwrap();
            responder.publish_pickled(reply_to, pickle).await.unwrap();
        }
    });
    let c = client(&b).await;
    let reply: (String, Vec<i64>) = c
        .request("svc.echo", &vec![1, 2], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply, ("echo".into(), vec![1, 2]));
    let err = c
        .request::<_, Value>("svc.nobody", &1, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_subscription_counts_what_it_drops() {
    let b = broker().await;
    let c = Client::connect(
        &addr(&b),
        ConnectOptions::new().authkey(KEY).max_pending(10),
    )
    .await
    .unwrap();
    let mut sub = c.subscribe("burst").await.unwrap();
    for i in 0..100 {
        c.publish("burst", &i).await.unwrap();
    }
    c.flush().await.unwrap();
    assert_eq!(sub.dropped(), 90);
    for i in 0..10 {
        assert_eq!(recv(&mut sub).await.decode::<i32>().unwrap(), i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_and_restores_subscriptions_after_a_broker_restart() {
    let b = broker().await;
    let at = addr(&b);
    let c = Client::connect(
        &at,
        ConnectOptions::new()
            .authkey(KEY)
            .reconnect_wait(Duration::from_millis(10), Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let mut sub = c.subscribe("r.*").await.unwrap();
    b.shutdown().await;
    let b2 = broker_with(config(&at)).await;
    // Once a flush returns, the client is on the new broker: what was written into the dead
    // socket before the client noticed it is lost (at most once), what comes now is not.
    c.flush().await.unwrap();
    c.publish("r.after", &"restored").await.unwrap();
    c.flush().await.unwrap();
    assert!(c.is_connected());
    assert_eq!(recv(&mut sub).await.decode::<String>().unwrap(), "restored");
    // Another client on the new broker reaches the restored subscription too.
    client(&b2).await.publish("r.other", &1).await.unwrap();
    assert_eq!(recv(&mut sub).await.topic(), "r.other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed() {
    let b = broker().await;
    let err = Client::connect(&addr(&b), ConnectOptions::new().authkey(b"wrong"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    let err = Client::connect("nohost", ConnectOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Address(..)), "{err}");

    let c = client(&b).await;
    assert!(matches!(
        c.publish("a.*", &1).await,
        Err(Error::Topic { .. })
    ));
    assert!(matches!(
        c.subscribe("a.>.b").await,
        Err(Error::Topic { .. })
    ));

    let mut cfg = config("127.0.0.1:0");
    cfg.settings.max_subscriptions = mphub_broker::config::Count::new(1).unwrap();
    let limited = broker_with(cfg).await;
    let c2 = client(&limited).await;
    let _one = c2.subscribe("one").await.unwrap();
    let err = c2.subscribe("two").await.unwrap_err();
    assert!(
        matches!(&err, Error::Broker(r) if r.contains("subscription")),
        "{err}"
    );
    c2.publish("one", &"still fine").await.unwrap();
    c2.flush().await.unwrap();

    let mut sub = c.subscribe("x").await.unwrap();
    c.close().await.unwrap();
    assert!(matches!(c.publish("x", &1).await, Err(Error::Closed)));
    assert!(sub.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_and_abstract_addresses_work() {
    let dir = std::env::temp_dir().join(format!("mphub-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hub.sock");
    let name = format!("mphub-client-test-{}", std::process::id());
    for a in [format!("unix:{}", path.display()), format!("unix:@{name}")] {
        let b = broker_with(config(&a)).await;
        let c = Client::connect(&a, ConnectOptions::new().authkey(KEY))
            .await
            .unwrap();
        let mut s = c.subscribe("u").await.unwrap();
        c.publish("u", &a).await.unwrap();
        assert_eq!(recv(&mut s).await.decode::<String>().unwrap(), a);
        b.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_payload_can_be_republished_unchanged_in_value() {
    let b = broker().await;
    let c = client(&b).await;
    let mut a = c.subscribe("in").await.unwrap();
    let mut out = c.subscribe("out").await.unwrap();
    c.publish(
        "in",
        &Job {
            id: 1,
            name: "x".into(),
        },
    )
    .await
    .unwrap();
    let m = recv(&mut a).await;
    c.publish_pickled("out", m.payload_bytes().unwrap())
        .await
        .unwrap();
    let again = recv(&mut out).await;
    assert_eq!(again.value().unwrap(), m.value().unwrap());
    let ids: HashSet<u32> = [again.decode::<Job>().unwrap().id].into();
    assert!(ids.contains(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_sent_from_rust_are_served_by_the_broker() {
    use mphub_client::{GaugeMode, MetricKind, MetricOp};
    let b = broker().await;
    let c = client(&b).await;
    let l = |v: &str| vec![("queue".into(), v.to_string().into())];
    c.send_metrics(&[
        MetricOp::Declare {
            name: "rs_jobs_total".into(),
            kind: MetricKind::Counter,
            help: "Jobs".into(),
            labels: vec!["queue".into()],
            buckets: None,
            mode: None,
        },
        MetricOp::Declare {
            name: "rs_inflight".into(),
            kind: MetricKind::Gauge,
            help: "In flight".into(),
            labels: vec![],
            buckets: None,
            mode: Some(GaugeMode::LiveSum),
        },
        MetricOp::Declare {
            name: "rs_latest".into(),
            kind: MetricKind::Gauge,
            help: "Latest".into(),
            labels: vec![],
            buckets: None,
            mode: Some(GaugeMode::LiveMostRecent),
        },
        MetricOp::Set {
            name: "rs_latest".into(),
            labels: vec![],
            value: 9.0,
        },
        MetricOp::Declare {
            name: "rs_seconds".into(),
            kind: MetricKind::Histogram,
            help: "Latency".into(),
            labels: vec![],
            buckets: Some(vec![0.5, 1.0]),
            mode: None,
        },
        MetricOp::Inc {
            name: "rs_jobs_total".into(),
            labels: l("a"),
            amount: 3.0,
        },
        MetricOp::Set {
            name: "rs_inflight".into(),
            labels: vec![],
            value: 2.0,
        },
        MetricOp::Dec {
            name: "rs_inflight".into(),
            labels: vec![],
            amount: 0.5,
        },
        MetricOp::Observe {
            name: "rs_seconds".into(),
            labels: vec![],
            value: 0.7,
        },
    ])
    .await
    .unwrap();
    c.flush().await.unwrap();
    let text = b.render_metrics();
    for line in [
        "rs_jobs_total{queue=\"a\"} 3",
        "rs_inflight 1.5",
        "rs_latest 9",
        "rs_seconds_bucket{le=\"1\"} 1",
        "rs_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}");
    }
}

/// `GET path` on the broker's HTTP listener, the body as text.
async fn http_get(b: &mphub_broker::Broker, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(b.metrics_addr().expect("metrics on"))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_names_its_connection_by_default_and_when_told() {
    let mut config = config("127.0.0.1:0");
    config.settings.metrics = mphub_broker::config::MetricsAddr::At("127.0.0.1:0".parse().unwrap());
    let b = broker_with(config).await;
    let named = Client::connect(
        &addr(&b),
        ConnectOptions::new().authkey(KEY).name("rs-worker"),
    )
    .await
    .unwrap();
    let default = client(&b).await;
    named.flush().await.unwrap();
    default.flush().await.unwrap();
    let listing = http_get(&b, "/connections").await;
    assert!(listing.contains("\"name\":\"rs-worker\""), "{listing}");
    // The default: the program's name and pid, as client-py's.
    let pid = format!("[{}]\"", std::process::id());
    assert!(listing.contains(&pid), "{listing}");
}
